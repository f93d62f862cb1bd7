"""The papers' efficiency tables as data, each row with its source.

Figures the papers publish for *our* models live in each model's spec
(``ModelSpec.figures``); the tables here hold the other rows (competitors, ablations, the
TransForensics branch table) and point at our models by registry name, so a number is
written down once. ``table_rows`` merges the two: a row that names a model takes its
figures from the spec record whose source starts with the table's ``spec_source``.

Transcribed from shared/papers/README.md (itself from the papers' text):
QMA-Net Table 10 (512 x 512), M2SFormer Table 6 (256 x 256), M2SFormer Tables 3, 4, 7
(ablations, 256 x 256) and TransForensics Table 5 (512 x 512, Tesla V100).
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Row:
    """One row of a published table. ``model`` names our registered model when we build it
    (its figures then come from the spec); ``encoder`` is the timm/MiT name of an ablation's
    backbone when we can build it."""

    label: str
    params_m: float | None = None
    gflops: float | None = None  # the paper's "FLOPs" column (GMACs by the field's convention)
    model: str | None = None
    encoder: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    source: str
    input_size: int
    rows: tuple[Row, ...]
    spec_source: str = ""  # prefix of the ModelSpec figure source for rows with a model


QMANET_TABLE10 = Table(
    "qmanet_t10", "QMA-Net Table 10: params and FLOPs", "QMA-Net paper, Table 10 (001_bd9dd0a124116c4e.txt)", 512,
    (Row("ManTra-Net", 3.9, 274.0), Row("MVSS-Net", 150.5, 171.0), Row("PSCC-Net", 3.7, 376.8),
     Row("CAT-Net", 116.7, 137.2), Row("TruFor", 68.7, 236.5), Row("SAM", 309.0, 1499.0),
     Row("IMDPrompt", 347.6, 1533.0), Row("QMA-Net", model="qmanet")),
    spec_source="QMA-Net paper, Table 10",
)

M2SFORMER_TABLE6 = Table(
    "m2sformer_t6", "M2SFormer Table 6: params and FLOPs", "M2SFormer paper, Table 6 (002_249c290fb1aa7741.txt)", 256,
    (Row("UNet", 29.9, 104.3), Row("SegNet", 15.7, 44.3), Row("MantraNet", 3.63, 135.7), Row("RRUNet", 5.1, 45.1),
     Row("MT-SENet", 10.1, 34.2), Row("TransForensic", model="transforensics"), Row("MVSSNet", 136.2, 31.6),
     Row("FBINet", 104.4, 86.5), Row("SegNeXt", 28.4, 19.1), Row("CFLNet", 49.2, 52.2), Row("EITLNet", 50.1, 35.0),
     Row("PIMNet", 73.3, 17.9), Row("M2SFormer", model="m2sformer")),
    spec_source="M2SFormer paper, Table 6",
)

# Table 7: the whole model with its encoder swapped. P2T-Small has no public timm/transformers
# implementation here, so it is listed without an encoder we can build.
M2SFORMER_BACKBONES = Table(
    "m2sformer_t7", "M2SFormer Table 7: encoder ablation", "M2SFormer paper, Table 7 (002_249c290fb1aa7741.txt)", 256,
    (Row("ResNet-50", 25.7, 14.9, encoder="resnet50"), Row("Res2Net-50", 25.9, 15.9, encoder="res2net50_26w_4s"),
     Row("ResNeSt-50", 27.6, 18.0, encoder="resnest50d"), Row("MiT-B2", 26.2, 12.3, encoder="mit_b2"),
     Row("P2T-Small", 25.6, 13.5, note="no implementation available to build"),
     Row("PVT-v2-B2", 27.4, 14.2, encoder="pvt_v2_b2")),
)

M2SFORMER_BLOCKS = Table(
    "m2sformer_t3_t4", "M2SFormer Tables 3-4: M2S block and DGA ablations",
    "M2SFormer paper, Tables 3 and 4 (002_249c290fb1aa7741.txt)", 256,
    (Row("single-spectral M2S variants (Table 3)", 26.2, 13.8), Row("full M2S block (Table 3)", 27.4, 14.2),
     Row("no DGA (Table 4)", 26.9, 13.0), Row("simple DC + DGA (Table 4)", 27.4, 14.0),
     Row("EADC + DGA (Table 4)", 27.4, 14.2)),
)

TABLES = (QMANET_TABLE10, M2SFORMER_TABLE6, M2SFORMER_BACKBONES, M2SFORMER_BLOCKS)


@dataclass(frozen=True)
class BranchFigure:
    """TransForensics Table 5: one output branch's GPU memory and inference time."""

    branch: str
    gpu_memory_mb: float
    seconds: float


TRANSFORENSICS_TABLE5 = {
    "model": "transforensics",
    "source": "TransForensics paper, Table 5 (003_151b28ec671b4df9.txt): batch 1, 512 x 512, Tesla V100",
    "input_size": 512,
    "rows": (BranchFigure("c2", 6687, 0.11), BranchFigure("c3", 774, 0.09), BranchFigure("c4", 368, 0.08),
             BranchFigure("c5", 353, 0.07)),
}


def spec_figure(model: str, source_prefix: str, input_size: int):
    """The spec's published figure for ``model`` whose source starts with ``source_prefix``."""
    from train.models import get_spec

    for fig in get_spec(model).figures:
        if fig.source.startswith(source_prefix) and fig.input_size == input_size:
            return fig
    return None


def table_rows(table: Table) -> list[Row]:
    """The table's rows with figures filled in from the specs; rows naming a model that is
    not registered (yet) keep empty figures and say so in ``note``."""
    from train.models import list_models

    known = set(list_models())
    rows = []
    for row in table.rows:
        if row.model is None:
            rows.append(row)
        elif row.model not in known:
            rows.append(replace(row, note=f"model {row.model!r} not registered"))
        else:
            fig = spec_figure(row.model, table.spec_source, table.input_size)
            if fig is None:
                rows.append(replace(row, note=f"{row.model} spec has no figure from {table.spec_source!r}"))
            else:
                rows.append(replace(row, params_m=fig.params_m, gflops=fig.gflops, note=fig.note))
    return rows


def profile_points() -> list[tuple[str, int]]:
    """(model, input size) pairs the report needs params/GMACs for: every registered model at
    its paper size and at the size of each table that names it."""
    from train.models import get_spec, list_models

    points = {(name, get_spec(name).input_size) for name in list_models()}
    for table in TABLES:
        for row in table.rows:
            if row.model in list_models():
                points.add((row.model, table.input_size))
    return sorted(points)

"""``python -m train.convert``: import weights trained by other code as an imlkit checkpoint.

    python -m train.convert --format m2sformer-authors IN.pth.tar [--word-vectors WV.npy] --out OUT.pt

Each format is one function (``FORMATS``, add one with ``register_format``) that reads the
foreign file and returns our state dict and the checkpoint ``config`` (model, small,
variant, options) that rebuilds the right model, so ``export.onnx --checkpoint OUT.pt``
and ``train.evaluate`` need no further flags. Every converted state dict holds exactly the
keys, shapes and dtypes of that model before anything is written; the file appears only
when all of it fits. Bad input ends in one line naming the file and the keys or shapes at fault.

Formats:

- ``m2sformer-authors``: a checkpoint of the M2SFormer authors' public code
  (``torch.save({'model_state_dict': ..., ...}, 'model_weight_EPOCH{N}_fold{K}.pth.tar')``,
  513 tensors; shared/papers/m2sformer_authors_code.md). Every tensor is mapped; the
  biases of their convolutions before BatchNorm (the four skip 1x1 convs and the first
  conv of each DGA) are folded into that BatchNorm's running mean (BN(Wx + b) with mean mu
  is BN(Wx) with mean mu - b, exactly, in eval and in training); their 16 fixed DCT filters
  are checked against ours (they must be the filters of their frequency rule). The two
  300-d word vectors ("easy", "hard") are not in their checkpoint (their code computes them
  with BPEmb at construction): pass ``--word-vectors`` (a .npy of shape (2, 300), row 0
  "easy", row 1 "hard") or have the ``bpemb`` package installed (it downloads its English
  100k / 300-d model on first use). The result is our ``m2sformer`` with the ``authors``
  variant.
"""
from __future__ import annotations

from .cli import ArgumentParser, interrupts_in_one_line, one_line_errors

interrupts_in_one_line(__name__)  # before the heavy imports

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .checkpoint import save_checkpoint
from .models import build_model, get_spec
from .models.blocks.dct import dct_basis, top_frequencies


class ConvertError(ValueError):
    """A foreign checkpoint that cannot be converted; the message is one line."""


@dataclass(frozen=True)
class Converted:
    state: dict[str, torch.Tensor]  # our state dict, strictly loadable into the model of ``config``
    config: dict[str, Any]  # {"model", "small", "variant", "options"}
    notes: tuple[str, ...] = ()  # what the conversion did, for the user


@dataclass(frozen=True)
class Format:
    name: str
    summary: str
    convert: Callable[..., Converted]  # (path, **options) -> Converted


FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    if fmt.name in FORMATS:
        raise ValueError(f"format {fmt.name!r} is registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


def _names(keys, limit: int = 3) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def read_torch_state(path: Path, key: str) -> dict[str, torch.Tensor]:
    """The state dict under ``key`` of a ``torch.save``d dict (or the dict itself when it
    holds tensors only); a common DataParallel ``module.`` prefix is dropped."""
    if not path.is_file():
        raise ConvertError(f"{path}: file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged or foreign files
        raise ConvertError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise ConvertError(f"{path}: expected a dict, found {type(data).__name__}")
    if key in data:
        data = data[key]
    elif not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ConvertError(f"{path}: no {key!r} in the checkpoint (found: {_names(map(str, data))})")
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ConvertError(f"{path}: {key!r} is not a state dict of tensors")
    if data and all(k.startswith("module.") for k in data):
        data = {k[len("module."):]: v for k, v in data.items()}
    return data


# ------------------------------------------------------------------ m2sformer-authors
# (pattern on their key, our key template or a tag, how the tensor is used)
_STAGE = r"([1-4])"
_AUTHORS_RULES: list[tuple[str, str]] = [
    (r"feature_encoding\.patch_embed1\.(.+)", "encoder.patch_embed.{0}"),
    (rf"feature_encoding\.patch_embed{_STAGE}\.(.+)", "encoder.stages_{s0}.downsample.{1}"),
    (rf"feature_encoding\.block{_STAGE}\.(\d+)\.(.+)", "encoder.stages_{s0}.blocks.{1}.{2}"),
    (rf"feature_encoding\.norm{_STAGE}\.(.+)", "encoder.stages_{s0}.norm.{1}"),
    (rf"skip_connection_module\.skip_connection_reduction{_STAGE}\.0\.weight", "m2s.reduce.{s0}.0.weight"),
    (rf"skip_connection_module\.skip_connection_reduction{_STAGE}\.0\.bias", "fold:m2s.reduce.{s0}.1"),
    (rf"skip_connection_module\.skip_connection_reduction{_STAGE}\.1\.(.+)", "m2s.reduce.{s0}.1.{1}"),
    (r"skip_connection_module\.msms_block\.dct_weight_(\d+)", "dct:{0}"),
    (r"skip_connection_module\.msms_block\.fc\.([02])\.weight", "m2s.spectral.mlp.{0}.weight"),
    (r"skip_connection_module\.msms_block\.init_conv_scale_(\d)\.([01])\.(.+)", "m2s.scales.{0}.body.0.{1}.{2}"),
    (r"skip_connection_module\.msms_block\.init_conv_scale_(\d)\.([34])\.(.+)", "m2s.scales.{0}.body.1.{b}.{2}"),
    (r"skip_connection_module\.msms_block\.spatial_attention_map_scale_(\d)\.0\.weight", "m2s.scales.{0}.gate.weight"),
    (r"skip_connection_module\.msms_block\.final_conv_scale_(\d)\.([01])\.(.+)", "m2s.scales.{0}.out.{1}.{2}"),
    (r"skip_connection_module\.msms_block\.alpha_list\.(\d)", "m2s.scales.{0}.alpha"),
    (r"skip_connection_module\.msms_block\.beta_list\.(\d)", "m2s.scales.{0}.beta"),
    (r"decoder_stage([1-3])\.patch_embedding\.(.+)", "decoder.{s0}.embed.{1}"),
    (r"decoder_stage([1-3])\.block\.(.+)", "decoder.{s0}.block.{1}"),
    (r"decoder_stage([1-3])\.norm\.(.+)", "decoder.{s0}.norm.{1}"),
    (r"decoder_stage([1-3])\.text_guided_attention\.attention_map\.0\.weight", "decoder.{s0}.dga.embed.0.weight"),
    (r"decoder_stage([1-3])\.text_guided_attention\.attention_map\.0\.bias", "fold:decoder.{s0}.dga.embed.1"),
    (r"decoder_stage([1-3])\.text_guided_attention\.attention_map\.([13])\.(.+)", "decoder.{s0}.dga.embed.{1}.{2}"),
    (r"global_prior\.0\.(weight|bias)", "prior_head.{0}"),
    (r"seg_head\.region_conv\.0\.(weight|bias)", "region_head.{0}"),
    (r"seg_head\.edge_conv\.0\.(weight|bias)", "edge_head.{0}"),
]
_AUTHORS_COMPILED = [(re.compile(p + r"\Z"), t) for p, t in _AUTHORS_RULES]
WORDS = ("easy", "hard")


def m2sformer_authors_key(key: str) -> str | None:
    """Our key (or "fold:BN-prefix" / "dct:i") for one of their keys; None if unknown."""
    for pattern, template in _AUTHORS_COMPILED:
        match = pattern.match(key)
        if match:
            groups = match.groups()
            fields = {"s0": int(groups[0]) - 1 if groups and groups[0].isdigit() else None,
                      "b": {"3": "0", "4": "1"}.get(groups[1], "") if len(groups) > 1 else ""}
            ours = template.format(*groups, **fields)
            return ours.replace("mlp.dwconv.dwconv.", "mlp.dwconv.")
    return None


def load_word_vectors(path: str | Path | None) -> tuple[np.ndarray, str]:
    """The (2, 300) "easy"/"hard" table from a .npy, or from BPEmb when it is installed."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConvertError(f"{path}: word-vector file not found")
        try:
            table = np.load(path, allow_pickle=False)
        except Exception as err:  # numpy raises several types for a foreign file
            raise ConvertError(f"{path}: not a readable .npy file ({type(err).__name__})") from None
        if table.shape != (2, 300) or not np.issubdtype(table.dtype, np.floating):
            raise ConvertError(f"{path}: expected a float array of shape (2, 300) (rows 'easy', 'hard'), "
                               f"found {table.dtype} {tuple(table.shape)}")
        if not np.isfinite(table).all():
            raise ConvertError(f"{path}: the word vectors hold NaN or infinite values")
        return table.astype(np.float32), f"word vectors from {path.name}"
    try:
        from bpemb import BPEmb  # optional: only for this conversion
    except ImportError:
        raise ConvertError("--word-vectors: not given and the bpemb package is not installed; pass a (2, 300) "
                           ".npy of the 'easy' and 'hard' vectors, or pip install bpemb") from None
    try:
        bpemb = BPEmb(lang="en", vs=100000, dim=300)
        table = np.stack([np.asarray(bpemb.embed(word), dtype=np.float64).reshape(-1, 300).mean(0)
                          for word in WORDS])
    except Exception as err:  # downloads and file access inside bpemb
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConvertError(f"--word-vectors: BPEmb (en, 100k, 300-d) failed: {first}") from None
    return table.astype(np.float32), "word vectors from BPEmb (en, vs=100000, dim=300)"


def convert_m2sformer_authors(path: str | Path, word_vectors: str | Path | None = None) -> Converted:
    path = Path(path)
    table, source = load_word_vectors(word_vectors)
    theirs = read_torch_state(path, "model_state_dict")
    config = {"model": "m2sformer", "small": False, "variant": "authors", "options": {}}
    options = get_spec("m2sformer").variants["authors"]
    with torch.device("meta"):  # names, shapes and dtypes only
        model = build_model("m2sformer", **options)
    expected = model.state_dict()
    k, size = model.m2s.spectral.basis.shape[0], model.m2s.size
    basis = dct_basis(size, size, top_frequencies(k, size, size, options["frequency_rule"]))

    state: dict[str, torch.Tensor] = {}
    folds: dict[str, torch.Tensor] = {}
    unknown, bad_shapes, bad_dct, seen_dct = [], [], [], set()
    for key, value in theirs.items():
        ours = m2sformer_authors_key(key)
        if ours is None:
            unknown.append(key)
        elif ours.startswith("fold:"):
            folds[ours[len("fold:"):]] = value
        elif ours.startswith("dct:"):
            i = int(ours[len("dct:"):])
            if i >= basis.shape[0] or tuple(value.shape[1:]) != tuple(basis.shape[1:]):
                bad_shapes.append(f"{key} {tuple(value.shape)}")
                continue
            seen_dct.add(i)
            diff = float((value.float() - basis[i]).abs().max())
            if diff > 1e-5:
                bad_dct.append(f"{key} (max diff {diff:.2g})")
        elif ours not in expected:
            unknown.append(key)
        elif value.shape != expected[ours].shape:
            bad_shapes.append(f"{key} {tuple(value.shape)}, expected {tuple(expected[ours].shape)}")
        else:
            state[ours] = value.to(expected[ours].dtype)
    for bn, bias in folds.items():
        mean_key = f"{bn}.running_mean"
        if mean_key not in state or bias.shape != state[mean_key].shape:
            bad_shapes.append(f"conv bias before {bn} {tuple(bias.shape)} has no matching BatchNorm running_mean")
            continue
        state[mean_key] = state[mean_key] - bias.to(state[mean_key].dtype)
    if unknown:
        raise ConvertError(f"{path}: {len(unknown)} unknown key(s) for the M2SFormer authors' layout: {_names(unknown)}")
    if bad_shapes:
        raise ConvertError(f"{path}: wrong shape(s): {_names(bad_shapes, 2)}")
    if bad_dct:
        raise ConvertError(f"{path}: DCT filter(s) that are not those of the authors' frequency rule: {_names(bad_dct)}")
    missing_dct = sorted(set(range(basis.shape[0])) - seen_dct)
    missing = sorted(k for k in expected if k not in state and k != "text.table")
    if missing or missing_dct:
        names = missing + [f"skip_connection_module.msms_block.dct_weight_{i}" for i in missing_dct]
        raise ConvertError(f"{path}: {len(names)} tensor(s) missing (nothing maps to {_names(names)})")

    state["text.table"] = torch.from_numpy(table)
    assert state.keys() == expected.keys()  # unknown / missing keys were reported above
    notes = (f"{len(theirs)} tensors read, {len(folds)} conv biases folded into BatchNorm running means, "
             f"{len(seen_dct)} DCT filters checked against the authors' rule", source)
    return Converted({key: state[key].contiguous() for key in expected}, config, notes)


register_format(Format("m2sformer-authors", "M2SFormer authors' public code (.pth.tar with model_state_dict)",
                       convert_m2sformer_authors))


# ----------------------------------------------------------------------------- CLI
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_file(fmt: str, source: str | Path, out: str | Path, **options: Any) -> Converted:
    """Convert ``source`` with format ``fmt`` and write our checkpoint to ``out``."""
    if fmt not in FORMATS:
        raise ConvertError(f"--format: unknown format {fmt!r}; known: {', '.join(sorted(FORMATS))}")
    source = Path(source)
    result = FORMATS[fmt].convert(source, **options)
    save_checkpoint(out, {"model": result.state, "config": result.config,
                          "imported": {"format": fmt, "file": source.name, "sha256": sha256(source)}})
    return result


@one_line_errors()  # Ctrl-C: one line, exit 130 (the conversion's errors are reported below)
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m train.convert", description=__doc__.splitlines()[0])
    parser.add_argument("source", metavar="IN", help="the checkpoint to convert")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS),
                        help="; ".join(f"{f.name}: {f.summary}" for f in FORMATS.values()))
    parser.add_argument("--out", required=True, help="our checkpoint to write (.pt)")
    parser.add_argument("--word-vectors", metavar="WV.npy",
                        help="m2sformer-authors: (2, 300) float array, rows 'easy' and 'hard' (default: BPEmb)")
    args = parser.parse_args(argv)
    options = {"word_vectors": args.word_vectors} if args.format == "m2sformer-authors" else {}
    if args.format != "m2sformer-authors" and args.word_vectors:
        parser.error("--word-vectors applies to --format m2sformer-authors only")
    try:
        result = convert_file(args.format, args.source, args.out, **options)
    except ConvertError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # writing OUT
        print(f"error: {args.out}: {err.strerror or err}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(note)
    cfg = result.config
    print(f"wrote {args.out}: {cfg['model']}" + (f" (variant {cfg['variant']})" if cfg.get("variant") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

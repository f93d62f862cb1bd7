"""How one engine is built for one TensorRT version: strong or weak typing, builder flags and
FP32 islands. Decided once here and used by both the Python builder (``export.tensorrt``)
and the trtexec recipe (``export.trtexec``), so the two never disagree.

- TensorRT 10.x, weak typing (default): fp16 sets the FP16 flag, int8 sets INT8 (+FP16) on an
  explicitly quantized (Q/DQ) graph; FP32 islands become layer precision constraints with
  OBEY_PRECISION_CONSTRAINTS. ``strongly_typed=True`` builds 10.x the 11.x way instead.
- TensorRT 11.x: networks are always strongly typed and the precision flags, precision
  constraints and implicit INT8 calibration are gone, so the precision must already be in
  the graph: FP16 tensors (the mixed-precision ONNX of ``export.precision``) for fp16, Q/DQ
  nodes (``export.quantize``) for int8.
- Implicit INT8 calibration is never planned (deprecated in 10.1, removed in 11).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto

PRECISIONS = ("fp32", "fp16", "int8")
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


class PlanError(ValueError):
    """A precision / version combination that cannot build; the message is one line."""


def parse_version(version: str) -> tuple[int, int]:
    """``"10.3.0.30"`` -> (10, 3); ``"11"`` -> (11, 0)."""
    m = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?(?:\.[0-9A-Za-z.+-]*)?\s*", str(version))
    if not m:
        raise PlanError(f"TensorRT version {version!r} is not MAJOR[.MINOR[...]]")
    return int(m.group(1)), int(m.group(2) or 0)


@dataclass(frozen=True)
class GraphPrecision:
    """What precision a graph already carries."""

    float16_tensors: int  # FLOAT16 initializers, I/O, inferred tensors and Cast-to-FP16 outputs
    qdq_nodes: int

    @classmethod
    def of(cls, model: onnx.ModelProto) -> "GraphPrecision":
        g = model.graph
        fp16 = {i.name for i in g.initializer if i.data_type == TensorProto.FLOAT16}
        fp16 |= {v.name for v in list(g.input) + list(g.output) + list(g.value_info)
                 if v.type.tensor_type.elem_type == TensorProto.FLOAT16}
        for node in g.node:
            if node.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in node.attribute):
                fp16.update(node.output)
        return cls(len(fp16), sum(node.op_type in QDQ_OPS for node in g.node))


@dataclass(frozen=True)
class BuildPlan:
    tensorrt: str
    precision: str
    strongly_typed: bool
    builder_flags: tuple[str, ...]  # names of tensorrt.BuilderFlag members
    fp32_nodes: tuple[str, ...]  # ONNX node names constrained to FP32 (10.x weak typing only)
    notes: tuple[str, ...] = ()

    @property
    def major(self) -> int:
        return parse_version(self.tensorrt)[0]

    def as_dict(self) -> dict[str, object]:
        return {"tensorrt": self.tensorrt, "precision": self.precision, "strongly_typed": self.strongly_typed,
                "builder_flags": list(self.builder_flags), "fp32_nodes": list(self.fp32_nodes),
                "notes": list(self.notes)}


def _need_graph_precision(precision: str, graph: GraphPrecision, why: str) -> None:
    if precision == "fp16" and not graph.float16_tensors:
        raise PlanError(f"{why}: fp16 needs the mixed-precision ONNX (FP16 with FP32 islands, "
                        "`python -m export.fp16`); this graph has no FP16 tensors")
    if precision == "int8" and not graph.qdq_nodes:
        raise PlanError(f"{why}: int8 needs the explicitly quantized Q/DQ ONNX "
                        "(`python -m export.quantize`); this graph has no QuantizeLinear/DequantizeLinear")


def plan_build(tensorrt: str, precision: str, graph: GraphPrecision, fp32_nodes: tuple[str, ...] | list[str] = (),
               strongly_typed: bool | None = None) -> BuildPlan:
    """The build for ``precision`` with TensorRT ``tensorrt``; raises PlanError when impossible."""
    if precision not in PRECISIONS:
        raise PlanError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    major, _ = parse_version(tensorrt)
    if major not in (10, 11):
        raise PlanError(f"TensorRT {tensorrt} is not supported: this kit builds with 10.x or 11.x")
    fp32_nodes = tuple(dict.fromkeys(fp32_nodes))
    if precision == "fp32" and graph.qdq_nodes:
        raise PlanError(f"the graph is quantized ({graph.qdq_nodes} Q/DQ nodes): ask for --precision int8")
    if precision == "fp32" and graph.float16_tensors:
        raise PlanError(f"the graph has {graph.float16_tensors} FP16 tensors: ask for --precision fp16")
    notes: list[str] = []
    if major >= 11:
        if strongly_typed is False:
            raise PlanError(f"TensorRT {tensorrt} builds strongly typed networks only (weak typing was removed in 11)")
        strongly_typed = True
    strongly_typed = bool(strongly_typed)
    if strongly_typed:
        _need_graph_precision(precision, graph, f"TensorRT {tensorrt} strongly typed takes precision from the graph")
        if fp32_nodes:
            notes.append(f"{len(fp32_nodes)} FP32 island node(s) ignored: under strong typing the islands are "
                         "the graph's own FP32 tensors and casts")
        return BuildPlan(tensorrt, precision, True, (), (), tuple(notes))
    if precision == "int8" and not graph.qdq_nodes:
        raise PlanError("int8 needs the explicitly quantized Q/DQ ONNX (`python -m export.quantize`): "
                        "implicit INT8 calibration is deprecated in 10.x and removed in 11")
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}[precision]
    if precision == "fp32":
        if fp32_nodes:
            notes.append("FP32 islands are moot in an FP32 build: ignored")
        fp32_nodes = ()
    elif fp32_nodes:
        flags += ("OBEY_PRECISION_CONSTRAINTS",)
    else:
        notes.append("no FP32 islands given: LayerNorm / Softmax / attention may overflow FP16; pass the "
                     "islands of `python -m export.fp16` as --fp32-nodes")
    return BuildPlan(tensorrt, precision, False, flags, fp32_nodes, tuple(notes))


ISLANDS_SCHEMA = "iml-fp16-islands"  # the island list of ``export.precision``


def load_fp32_nodes(path: str | Path) -> tuple[str, ...]:
    """FP32 islands from a file: the island list ``python -m export.fp16`` writes (its
    TensorRT 10 layers: the islands minus the constant/shape arithmetic TensorRT folds), a
    JSON list of ONNX node names, a JSON object with a ``"fp32_nodes"`` (or ``"nodes"``)
    list of names, or plain text with one name per line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise PlanError(f"{path}: cannot read FP32 island file ({err.strerror or err})") from None
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            data = json.loads(stripped)
        except ValueError as err:
            raise PlanError(f"{path}: not valid JSON ({err})") from None
        if isinstance(data, dict) and data.get("schema") == ISLANDS_SCHEMA:
            from .precision import Fp16Islands, PrecisionError

            try:
                return tuple(Fp16Islands.from_dict(data, str(path)).tensorrt10_layers())
            except PrecisionError as err:
                raise PlanError(str(err)) from None
        if isinstance(data, dict):
            data = data.get("fp32_nodes", data.get("nodes"))
        if not isinstance(data, list) or not all(isinstance(n, str) and n for n in data):
            raise PlanError(f"{path}: expected a list of node names (or an object with \"fp32_nodes\")")
        return tuple(data)
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def unknown_nodes(model: onnx.ModelProto, names: tuple[str, ...]) -> list[str]:
    known = {n.name for n in model.graph.node}
    return [n for n in names if n not in known]

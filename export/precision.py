"""FP16 safety: find the FP32 islands of a graph by measurement and write the mixed-precision ONNX.

TensorRT 11 builds strongly typed networks: precision comes from the ONNX graph itself, so an
FP16 deployment is an FP16 graph with FP32 islands and Casts at their borders. TensorRT 10
builds the FP32 graph with the FP16 flag and per-layer precision constraints instead. Both
come from the same island list, found here on onnxruntime CPU with calibration images:

1. **Range** (measured). Every intermediate tensor is exposed as a graph output
   (:func:`with_tensor_outputs`) and its largest magnitude recorded over the calibration
   images. A tensor above ``overflow_limit`` (default 2^14 = 16384, a quarter of FP16's
   largest finite value 65504: 4x headroom for images brighter or larger than the
   calibration set) stays FP32: its producer and all its consumers join the islands.
2. **Rules** (the ops that overflow FP16 in vision transformers): normalisations
   (LayerNormalization, GroupNormalization, InstanceNormalization), Softmax/LogSoftmax,
   Exp/Log/Pow/Sqrt, the accumulating reductions (ReduceMean/Sum/SumSquare/L2/LogSumExp/Prod),
   the attention MatMuls that feed and consume each Softmax with the nodes between them
   (scale, bias, reshape) and the scaling of Q (so ``Mul(Q) -> MatMul -> Softmax -> MatMul``,
   the pattern TensorRT fuses, stays in one precision), the ends of decomposed norms (the
   ``+ eps`` before a Sqrt and the division by its result), and the output head (the few
   nodes after the last convolution or matrix product). Shape/constant arithmetic (every node
   whose inputs are all constants or shapes) also stays FP32: TensorRT folds it at build
   time, so it costs nothing, and FP16 would only blur values such as sinusoidal position
   codes.
3. **Measured** (the final mask). The graph with FP16 storage (:func:`simulate_fp16`) is run
   against FP32 on the calibration images; while the probability maps differ by more than
   ``max_prob_diff`` or the decided masks agree with IoU below ``min_iou``
   (``runtime.agreement``), the FP16 nodes to blame join the islands and the check repeats.
   Blame (:func:`blame`) is read from the exposed tensors of both graphs: how much a node's
   relative RMS error exceeds its inputs', plus the excess of the island nodes it feeds.

Why simulate: onnxruntime's CPU provider has FP16 kernels for few ops; it computes the others
in FP32 and drops the rounding between neighbouring ones, so the mixed graph on CPU
understates FP16 error. The simulation is the FP32 graph with a Cast pair (to FP16 and back)
on every tensor the mixed graph stores in FP16: exactly the rounding and overflow TensorRT
applies to the tensors between FP16 layers (it accumulates convolutions and matrix products
in FP32 as well). The mixed graph itself is then checked on onnxruntime CPU against the same
tolerance: it must load, run and agree.

Conversion uses ``onnxruntime.transformers.float16.convert_float_to_float16`` (graph inputs
and outputs stay FP32, islands get Casts at their borders), followed by
:func:`drop_round_trips`: the converter also puts an FP32 -> FP16 -> FP32 pair on every edge
between two island nodes, which would store in FP16 the very values the islands protect.

The island list (:class:`Fp16Islands`) is saved as JSON and in the sidecar, with the
TensorRT 10 form: ``--precisionConstraints=obey --layerPrecisions=NAME:fp32,...
--layerOutputTypes=NAME:fp32,...`` (ONNX node names are TensorRT layer names; constant and
shape arithmetic, which TensorRT folds, is left out).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import onnx
import onnx.shape_inference
from onnx import TensorProto
from tqdm import tqdm

from runtime.atomic import atomic_write_bytes, mkstemp
from runtime.sidecar import ArtifactInfo, ParityInfo, Sidecar, sha256_file, sidecar_path

from runtime.agreement import Agreement, agreement
from .trt_islands import check_trtexec_names, trtexec_island_args
from .trt_plan import PlanError
from .verify import GraphIndex

DEFAULT_OVERFLOW_LIMIT = 2.0 ** 14
# Parity of the FP16 graph against FP32 (the reasons are in export.fp16's docstring).
DEFAULT_MAX_PROB_DIFF = 1e-2
DEFAULT_MIN_IOU = 0.99
ISLANDS_SCHEMA = "iml-fp16-islands"
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)

#: Ops kept in FP32 by rule, with the reason recorded for each island node.
FP32_OPS = {
    "LayerNormalization": "normalisation", "GroupNormalization": "normalisation",
    "InstanceNormalization": "normalisation", "Softmax": "softmax", "LogSoftmax": "softmax",
    "Exp": "exp/log", "Log": "exp/log", "Pow": "power", "Sqrt": "power",
    "ReduceMean": "reduction", "ReduceSum": "reduction", "ReduceSumSquare": "reduction",
    "ReduceL2": "reduction", "ReduceLogSumExp": "reduction", "ReduceProd": "reduction",
}
# Ops that may sit between an attention MatMul and its Softmax (scale, bias, mask, reshapes).
_ATTENTION_PASS = {"Mul", "Div", "Add", "Where", "Reshape", "Transpose", "Identity", "Cast", "Dropout"}
# Ops between a norm's Sqrt/ReduceL2 and the division by it.
_NORM_PASS = {"Add", "Clip", "Max", "Expand", "Unsqueeze", "Reshape", "Cast", "Identity"}
_NORM_ROOTS = {"Sqrt", "ReduceL2"}
_SHAPE_OPS = {"Shape", "Size"}
# Weighted layers: the output head is everything after the last of them.
_WEIGHTED = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
_HEAD_LIMIT = 16
# Reasons whose nodes TensorRT folds or never builds as layers (left out of the TensorRT 10 form).
_FOLDED = {"static"}


Progress = Callable[[Sequence, str], Iterable]  # (items, description) -> the items, reporting progress


def quiet(items: Sequence, desc: str = "") -> Iterable:
    """The default progress reporter: none."""
    return items


def progress_bar(items: Sequence, desc: str = "") -> Iterable:
    """The command-line progress reporter: a tqdm bar on stderr, one step per image."""
    return tqdm(items, desc=desc, unit="img", file=sys.stderr)


class PrecisionError(RuntimeError):
    """A precision step failed; the message is one line for the user."""


# --------------------------------------------------------------------------- graph plumbing

def ensure_node_names(model: onnx.ModelProto) -> int:
    """Name every unnamed node ``OP_INDEX`` (islands are lists of node names); returns how many."""
    taken = {n.name for n in model.graph.node}
    named = 0
    for k, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{k}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            named += 1
    return named


def float_tensors(model: onnx.ModelProto) -> dict[str, int]:
    """Node outputs of float type (FLOAT or FLOAT16) -> elem_type, from shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    return {out: types[out] for node in model.graph.node for out in node.output
            if out and types.get(out) in FLOAT_TYPES}


def with_tensor_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs the tensors ``names`` (so onnxruntime
    returns every intermediate value asked for), typed from shape inference."""
    out = copy.deepcopy(model)
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = {v.name: v for v in inferred.graph.value_info}
    present = {o.name for o in out.graph.output}
    for name in names:
        if name in present:
            continue
        info = infos.get(name)
        out.graph.output.append(copy.deepcopy(info) if info is not None else onnx.ValueInfoProto(name=name))
        present.add(name)
    return out


def session(model: onnx.ModelProto):
    """An onnxruntime CPU session over an in-memory model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own pybind11 types
        raise PrecisionError(f"onnxruntime cannot load the graph ({' '.join(str(err).split())[:300]})") from None


def run_outputs(sess, batch: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run one batch; outputs (all, or ``names``) as float32 arrays where they are floats."""
    input_name = sess.get_inputs()[0].name
    names = list(names) if names is not None else [o.name for o in sess.get_outputs()]
    try:
        values = sess.run(names, {input_name: batch})
    except Exception as err:  # onnxruntime's pybind11 errors (shape mismatch, kernel failure, out of memory)
        raise PrecisionError(f"onnxruntime failed to run the graph on a {tuple(batch.shape)} batch "
                             f"({' '.join(str(err).split())[:300]})") from None
    return {n: (v.astype(np.float32) if v.dtype == np.float16 else v) for n, v in zip(names, values)}


def static_nodes(model: onnx.ModelProto) -> set[str]:
    """Nodes computable at build time: every input an initializer, a Constant or a shape
    (Shape/Size output), directly or through other such nodes."""
    static = {init.name for init in model.graph.initializer} | {""}
    names = set()
    for node in model.graph.node:  # graph order is topological
        if node.op_type == "Constant" or node.op_type in _SHAPE_OPS:
            static.update(node.output)
        elif node.input and all(i in static for i in node.input):
            static.update(node.output)
            names.add(node.name)
    return names


# --------------------------------------------------------------------------- the islands

@dataclass
class Fp16Islands:
    """Nodes kept in FP32 (name -> (op type, reason)) and how they were found."""

    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)
    overflow_limit: float = DEFAULT_OVERFLOW_LIMIT
    source: str = ""  # the FP32 ONNX the names refer to
    source_sha256: str = ""

    def add(self, node: onnx.NodeProto, reason: str) -> bool:
        if node.name in self.nodes:
            return False
        self.nodes[node.name] = (node.op_type, reason)
        return True

    def by_reason(self) -> dict[str, int]:
        return dict(Counter(reason.split(":")[0] for _, reason in self.nodes.values()))

    def tensorrt10_layers(self) -> list[str]:
        """Island nodes that become TensorRT layers (constant/shape arithmetic is folded)."""
        return sorted(n for n, (op, reason) in self.nodes.items()
                      if op != "Constant" and reason.split(":")[0] not in _FOLDED)

    def layer_precisions(self) -> str:
        """The TensorRT 10 form: ``NAME:fp32,NAME:fp32,...`` (for --layerPrecisions and
        --layerOutputTypes, or IBuilderConfig layer-by-layer precision); names are checked by
        the shared trtexec rule (``export.trt_islands``)."""
        layers = self.tensorrt10_layers()
        try:
            check_trtexec_names(layers)
        except PlanError as err:
            raise PrecisionError(f"{err} (it cannot be a trtexec layer spec)") from None
        return ",".join(f"{n}:fp32" for n in layers)

    def trtexec_args(self) -> list[str]:
        """trtexec flags (TensorRT 10, with --fp16) that keep the islands in FP32."""
        self.layer_precisions()  # one-line PrecisionError for a name trtexec cannot carry
        layers = self.tensorrt10_layers()
        return ["--precisionConstraints=obey", *trtexec_island_args(layers)] if layers else []

    def to_dict(self) -> dict:
        return {
            "schema": ISLANDS_SCHEMA, "version": 1,
            "source": self.source, "source_sha256": self.source_sha256,
            "overflow_limit": self.overflow_limit,
            "nodes": [{"name": n, "op": op, "reason": reason} for n, (op, reason) in sorted(self.nodes.items())],
            "by_reason": self.by_reason(),
            "tensorrt10": {"layers": self.tensorrt10_layers(), "trtexec": self.trtexec_args()},
        }

    @classmethod
    def from_dict(cls, data: dict, where: str = "<islands>") -> "Fp16Islands":
        if not isinstance(data, dict) or data.get("schema") != ISLANDS_SCHEMA:
            raise PrecisionError(f"{where}: not an FP16 island list (schema {ISLANDS_SCHEMA!r})")
        try:
            nodes = {d["name"]: (d["op"], d["reason"]) for d in data["nodes"]}
            return cls(nodes, float(data["overflow_limit"]), data.get("source", ""), data.get("source_sha256", ""))
        except (KeyError, TypeError, ValueError) as err:
            raise PrecisionError(f"{where}: malformed island list ({type(err).__name__}: {err})") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_bytes(path, self.to_json().encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Fp16Islands":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PrecisionError(f"{path}: island list not found") from None
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise PrecisionError(f"{path}: not a readable JSON island list ({' '.join(str(err).split())})") from None
        return cls.from_dict(data, str(path))


def default_output(model: str | os.PathLike, suffix: str) -> Path:
    """Where a precision variant goes by default: ``m.onnx`` -> ``m.SUFFIX.onnx`` beside it."""
    p = Path(model)
    return p.with_name(f"{p.stem}.{suffix}.onnx")


def islands_path(mixed_onnx: str | os.PathLike) -> Path:
    """Where the island list of a mixed-precision ONNX goes: ``m.fp16.onnx`` -> ``m.fp16.islands.json``."""
    p = Path(mixed_onnx)
    return p.with_name(p.stem + ".islands.json")


def rule_islands(model: onnx.ModelProto, islands: Fp16Islands) -> None:
    """Add the rule-based islands (module docstring, step 2) to ``islands``."""
    graph = model.graph
    index = GraphIndex.build(model)
    producers, consumers = index.producers, index.consumers
    static = static_nodes(model)
    floats = float_tensors(model)
    for node in graph.node:
        if node.name in static:
            if any(o in floats for o in node.output):  # integer shape arithmetic has no precision
                islands.add(node, "static: constant/shape arithmetic")
        elif node.op_type in FP32_OPS:
            islands.add(node, f"{FP32_OPS[node.op_type]}: {node.op_type}")
    for node in output_head(model, static):
        islands.add(node, f"output: {node.op_type} after the last weighted layer")
    for node in graph.node:
        if node.name in static:
            continue
        if node.op_type == "Softmax":
            for path in _walk(node, producers, consumers, _ATTENTION_PASS, "MatMul", backward=True):
                for n in path:
                    islands.add(n, "attention: Q.K^T feeding Softmax")
                scale = producers.get(path[-1].input[0])  # Mul(Q, scale): keeps the fused pattern in one precision
                if scale is not None and scale.op_type in ("Mul", "Div") and scale.name not in static:
                    islands.add(scale, "attention: scaled Q")
            for path in _walk(node, producers, consumers, _ATTENTION_PASS, "MatMul", backward=False):
                for n in path:
                    islands.add(n, "attention: Softmax.V")
        if node.op_type in _NORM_ROOTS:
            for path in _walk(node, producers, consumers, _NORM_PASS, {"Div", "Reciprocal"}, backward=False):
                for n in path:
                    islands.add(n, "norm: division by a root")
            if node.op_type == "Sqrt":
                eps = producers.get(node.input[0])
                if eps is not None and eps.op_type == "Add":
                    islands.add(eps, "norm: + eps before a root")


def output_head(model: onnx.ModelProto, static: set[str] | None = None) -> list[onnx.NodeProto]:
    """The nodes between the last weighted layers (Conv, MatMul, Gemm) and the graph
    outputs (at most 16; none if the head is larger). They work on one-channel maps, so
    FP32 costs nothing there, and FP16 storage of a probability in [0.5, 1) alone is off
    by up to 2^-12 = 2.4e-4, which would otherwise floor the parity."""
    producers = GraphIndex.build(model).producers
    static = static_nodes(model) if static is None else static
    head: dict[str, onnx.NodeProto] = {}
    stack = [o.name for o in model.graph.output]
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in head or node.name in static or node.op_type == "Constant":
            continue
        if node.op_type in _WEIGHTED:
            continue
        head[node.name] = node
        if len(head) > _HEAD_LIMIT:
            return []
        stack.extend(node.input)
    return list(head.values())


def _walk(start: onnx.NodeProto, producers, consumers, passthrough: set[str], target, backward: bool,
          depth: int = 4) -> list[list[onnx.NodeProto]]:
    """Paths from ``start`` through ``passthrough`` ops to a ``target`` op (nodes after start)."""
    targets = {target} if isinstance(target, str) else set(target)
    found: list[list[onnx.NodeProto]] = []

    def step(node: onnx.NodeProto, path: list[onnx.NodeProto], left: int) -> None:
        if backward:
            nxt = [producers[i] for i in node.input[:2] if i in producers]
        else:
            nxt = [c for o in node.output for c in consumers.get(o, [])]
        for n in nxt:
            if n.op_type in targets:
                found.append(path + [n])
            elif n.op_type in passthrough and left > 0:
                step(n, path + [n], left - 1)

    step(start, [], depth)
    return found


def overflow_islands(model: onnx.ModelProto, ranges: dict[str, float], limit: float,
                     islands: Fp16Islands) -> list[str]:
    """Keep every tensor whose measured max |x| exceeds ``limit`` in FP32 (its producer and
    consumers join the islands); returns those tensor names."""
    index = GraphIndex.build(model)
    producers, consumers = index.producers, index.consumers
    hot = sorted(t for t, peak in ranges.items() if not peak <= limit)  # NaN/inf count as over
    for t in hot:
        peak = ranges[t]
        reason = f"overflow: max |{t}| = {peak:.4g} > {limit:g}"
        if t in producers:
            islands.add(producers[t], reason)
        for c in consumers.get(t, []):
            islands.add(c, reason)
    return hot


def block_constants(model: onnx.ModelProto, islands: Fp16Islands) -> None:
    """A Constant whose every consumer is an island node stays FP32 too (no FP16 round trip)."""
    consumers, floats = GraphIndex.build(model).consumers, float_tensors(model)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in floats:
            users = [c for o in node.output for c in consumers.get(o, [])]
            if users and all(u.name in islands.nodes for u in users):
                islands.add(node, "static: constant used only in FP32")


def convert_mixed(model: onnx.ModelProto, islands: Fp16Islands) -> onnx.ModelProto:
    """FP16 graph with the islands in FP32 and Casts at their borders; inputs/outputs stay FP32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    mixed = convert_float_to_float16(copy.deepcopy(model), keep_io_types=True, op_block_list=[],
                                     node_block_list=sorted(islands.nodes))
    drop_round_trips(mixed)
    OnnxModel(mixed).topological_sort()  # the converter appends its Casts at the end
    try:
        onnx.checker.check_model(mixed, full_check=True)
    except onnx.checker.ValidationError as err:
        raise PrecisionError(f"mixed-precision graph is invalid: {str(err).splitlines()[0]}") from None
    return mixed


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def drop_round_trips(model: onnx.ModelProto) -> int:
    """Remove FP32 -> FP16 -> FP32 Cast pairs. The converter puts one on every edge between
    two island nodes (and between an island and an FP32 graph output), which would store
    exactly the values the islands protect (e.g. Q.K^T before its Softmax) in FP16.
    Consumers read the FP32 tensor instead; a graph output gets an Identity of it. Returns
    how many pairs were removed."""
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    types.update({t.name: t.data_type for t in graph.initializer})
    index = GraphIndex.build(model)
    producers, consumers = index.producers, index.consumers
    outputs = {o.name for o in graph.output}
    dropped: set[str] = set()
    pairs = 0
    for c2 in graph.node:
        c1 = producers.get(c2.input[0]) if _cast_to(c2) == TensorProto.FLOAT else None
        if c1 is None or _cast_to(c1) != TensorProto.FLOAT16 or types.get(c1.input[0]) != TensorProto.FLOAT:
            continue
        source = c1.input[0]
        if c2.output[0] in outputs:
            c2.op_type = "Identity"
            del c2.attribute[:]
            c2.input[0] = source
        else:
            for user in consumers.get(c2.output[0], []):
                for k, name in enumerate(user.input):
                    if name == c2.output[0]:
                        user.input[k] = source
            dropped.add(c2.name)
        pairs += 1
    used = {i for n in graph.node if n.name not in dropped for i in n.input} | outputs
    for node in graph.node:  # FP16 casts that fed only dropped round trips
        if _cast_to(node) == TensorProto.FLOAT16 and node.output[0] not in used:
            dropped.add(node.name)
    kept = [n for n in graph.node if n.name not in dropped]
    live = {o for n in kept for o in n.output}
    graph.ClearField("node")
    graph.node.extend(kept)
    stale = [v for v in graph.value_info if v.name not in live]
    for v in stale:
        graph.value_info.remove(v)
    return pairs


def simulate_fp16(model: onnx.ModelProto, islands: Fp16Islands) -> onnx.ModelProto:
    """The FP32 graph with the mixed graph's FP16 *storage*: every tensor the mixed graph
    holds in FP16 passes through a Cast pair (rounded to FP16 and back), the arithmetic
    stays FP32. A consumer sees the rounded tensor when it or the tensor's producer is
    outside the islands (graph inputs and weights count as FP32 producers). This is what
    the measurements run: onnxruntime's CPU provider has FP16 kernels for few ops and
    computes the others in FP32, dropping the rounding between them, so the mixed graph
    itself on CPU understates FP16 error; TensorRT rounds every FP16 tensor it stores."""
    sim = copy.deepcopy(model)
    graph = sim.graph
    floats = set(float_tensors(model))
    floats |= {i.name for i in graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT}
    floats |= {t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT}
    producers = GraphIndex.build(model).producers
    nodes = [copy.deepcopy(n) for n in graph.node]

    def fp16(node: onnx.NodeProto) -> bool:
        return node.name not in islands.nodes

    def pair(src: str, dst: str) -> list[onnx.NodeProto]:
        mid = f"{dst}::fp16"
        return [onnx.helper.make_node("Cast", [src], [mid], to=TensorProto.FLOAT16, name=f"{mid}/to16"),
                onnx.helper.make_node("Cast", [mid], [dst], to=TensorProto.FLOAT, name=f"{dst}/to32")]

    rounded_for_fp16: dict[str, str] = {}  # FP32-produced tensor -> its rounded copy for FP16 consumers
    for node in nodes:
        if not fp16(node):
            continue
        for k, name in enumerate(node.input):
            owner = producers.get(name)
            if name in floats and (owner is None or not fp16(owner)):
                node.input[k] = rounded_for_fp16.setdefault(name, f"{name}::rounded")
    out: list[onnx.NodeProto] = [n for src, dst in rounded_for_fp16.items()
                                 if producers.get(src) is None for n in pair(src, dst)]
    for node in nodes:
        out.append(node)
        for k, name in enumerate(node.output):
            if name not in floats:
                continue
            if fp16(node):
                node.output[k] = f"{name}::fp32"
                out.extend(pair(node.output[k], name))
            elif name in rounded_for_fp16:
                out.extend(pair(name, rounded_for_fp16[name]))
    graph.ClearField("node")
    graph.node.extend(out)
    graph.ClearField("value_info")
    return sim


# --------------------------------------------------------------------------- measurement

def tensor_ranges(model: onnx.ModelProto, batches: Sequence[np.ndarray],
                  progress: Progress = quiet) -> dict[str, float]:
    """Largest |value| of every float intermediate tensor over ``batches`` (FP32 run)."""
    names = list(float_tensors(model))
    sess = session(with_tensor_outputs(model, names))
    peaks = dict.fromkeys(names, 0.0)
    for batch in progress(batches, "FP32 ranges"):
        for name, value in run_outputs(sess, batch, names).items():
            finite = np.isfinite(value).all()
            peak = float(np.abs(value).max()) if value.size else 0.0
            peaks[name] = max(peaks[name], peak) if finite else math.inf
    return peaks


def error_growth(model: onnx.ModelProto, simulated: onnx.ModelProto, batches: Sequence[np.ndarray]) -> dict[str, float]:
    """Per node of ``model``: how much the FP16 error grows across it in ``simulated``
    (:func:`simulate_fp16`, which keeps the tensor names) — the relative RMS error of its
    output minus the largest of its inputs' (max over ``batches``)."""
    names = list(float_tensors(model))
    ref_sess = session(with_tensor_outputs(model, names))
    sim_sess = session(with_tensor_outputs(simulated, names))
    err = dict.fromkeys(names, 0.0)
    for batch in batches:
        ref, sim = run_outputs(ref_sess, batch, names), run_outputs(sim_sess, batch, names)
        for n in names:
            r, m = ref[n].astype(np.float64), sim[n].astype(np.float64)
            scale = math.sqrt(float(np.mean(r * r))) + 1e-12
            e = math.sqrt(float(np.mean((m - r) ** 2))) / scale if np.isfinite(m).all() else math.inf
            err[n] = max(err[n], e)
    growth = {}
    for node in model.graph.node:
        outs = [err[o] for o in node.output if o in err]
        if outs:
            ins = [err[i] for i in node.input if i in err]
            growth[node.name] = max(outs) - (max(ins) if ins else 0.0)
    return growth


def blame(model: onnx.ModelProto, islands: Fp16Islands, growth: dict[str, float]) -> dict[str, float]:
    """Score the FP16 nodes for the next round: their own error growth, plus the growth of
    the island nodes they feed (an island node whose error still grows gets it from the
    FP16 rounding of its inputs, e.g. a cancelling subtraction of rounded operands)."""
    producers = GraphIndex.build(model).producers
    score = {n: g for n, g in growth.items() if n not in islands.nodes and g > 0}
    for node in model.graph.node:
        g = growth.get(node.name, 0.0)
        if node.name in islands.nodes and g > 0:
            for name in node.input:
                owner = producers.get(name)
                if owner is not None and owner.name not in islands.nodes:
                    score[owner.name] = score.get(owner.name, 0.0) + g
    return score


@dataclass
class Fp16Result:
    """What :func:`make_fp16` found: the mixed graph, its islands and its measured agreement."""

    mixed: onnx.ModelProto
    islands: Fp16Islands
    agreement: Agreement  # FP16 storage simulated (simulate_fp16) vs FP32: what decided the islands
    cpu_agreement: Agreement  # the mixed graph itself on onnxruntime CPU vs FP32
    max_activation: float  # largest |x| of a run-time (not constant/shape) FP32 tensor on the calibration images
    overflowing: list[str]  # tensors above the limit
    rounds: list[dict]  # one entry per check: islands so far and the simulated agreement
    nodes: int  # nodes in the FP32 graph


def find_islands(model: onnx.ModelProto, batches: Sequence[np.ndarray],
                 overflow_limit: float = DEFAULT_OVERFLOW_LIMIT,
                 progress: Progress = quiet) -> tuple[Fp16Islands, dict[str, float], list[str]]:
    """The FP16-unsafe islands by range and rule (module docstring, steps 1 and 2), without
    the measured growth; names unnamed nodes of ``model`` in place. Returns the islands, the
    per-tensor ranges and the tensors over the limit."""
    if not batches:
        raise PrecisionError("FP16 analysis needs at least one calibration image")
    ensure_node_names(model)
    islands = Fp16Islands(overflow_limit=overflow_limit)
    ranges = tensor_ranges(model, batches, progress)
    hot = overflow_islands(model, ranges, overflow_limit, islands)
    rule_islands(model, islands)
    block_constants(model, islands)
    return islands, ranges, hot


def _outputs(sess, batches: Sequence[np.ndarray], progress: Progress = quiet,
             desc: str = "") -> list[dict[str, np.ndarray]]:
    return [run_outputs(sess, b, ["prob", "score"]) for b in progress(batches, desc)]


def make_fp16(model: onnx.ModelProto, batches: Sequence[np.ndarray], *, threshold: float = 0.5,
              max_prob_diff: float = DEFAULT_MAX_PROB_DIFF, min_iou: float = DEFAULT_MIN_IOU,
              overflow_limit: float = DEFAULT_OVERFLOW_LIMIT, max_rounds: int = 8, grow: float = 0.05,
              growth_batches: int = 2, progress: Progress = quiet) -> Fp16Result:
    """Find the FP32 islands of ``model`` on ``batches`` (module docstring) and build the
    mixed graph; raises PrecisionError when no island set within ``max_rounds`` meets the
    tolerance, or the mixed graph on onnxruntime CPU does not. ``grow`` is the share of the
    remaining FP16 nodes added per measured round."""
    model = copy.deepcopy(model)
    islands, ranges, hot = find_islands(model, batches, overflow_limit, progress)
    reference = _outputs(session(model), batches, progress, "FP32 outputs")
    rounds: list[dict] = []
    by_name = {n.name: n for n in model.graph.node}
    for round_no in range(max_rounds + 1):
        block_constants(model, islands)
        simulated = simulate_fp16(model, islands)
        result = agreement(reference, _outputs(session(simulated), batches, progress, f"FP16 check {round_no + 1}"),
                           threshold)
        rounds.append({"islands": len(islands.nodes), **result.to_dict()})
        if result.within(max_prob_diff, min_iou):
            break
        candidates = blame(model, islands, error_growth(model, simulated, batches[:growth_batches]))
        if not candidates or round_no == max_rounds:
            raise PrecisionError(
                f"no FP16 island set meets the tolerance (max |prob diff| <= {max_prob_diff:g}, decided-mask "
                f"IoU >= {min_iou:g}) after {len(rounds)} round(s): last {result.describe()}")
        take = max(1, math.ceil(grow * sum(1 for n in model.graph.node if n.name not in islands.nodes)))
        for name in sorted(candidates, key=candidates.get, reverse=True)[:take]:
            islands.add(by_name[name], f"measured: FP16 error score {candidates[name]:.3g} (round {round_no + 1})")

    mixed = convert_mixed(model, islands)
    on_cpu = agreement(reference, _outputs(session(mixed), batches, progress, "mixed ONNX on CPU"), threshold)
    if not on_cpu.within(max_prob_diff, min_iou):
        raise PrecisionError(f"the mixed-precision graph on onnxruntime CPU misses the tolerance: {on_cpu.describe()}")
    static = static_nodes(model)
    live = [ranges[o] for n in model.graph.node if n.name not in static and n.op_type != "Constant"
            for o in n.output if o in ranges]
    return Fp16Result(mixed, islands, result, on_cpu, max(live, default=0.0), hot, rounds, len(model.graph.node))


# --------------------------------------------------------------------------- writing

def cpu_parity(max_abs_diff: float, tolerance: float, passed: bool) -> ParityInfo:
    """A sidecar parity record against the FP32 ONNX on onnxruntime CPU."""
    return ParityInfo(max_abs_diff=max_abs_diff, tolerance=tolerance, passed=passed,
                      reference="fp32 onnx on onnxruntime CPU")


def derived_sidecar(source: Sidecar, artifact: Path, *, precision: str, parity: ParityInfo | None,
                    details: dict) -> Sidecar:
    """The sidecar of a precision variant of ``source`` (same input, preprocessing and
    outputs), naming the variant and holding the measured details under ``extra``."""
    import onnxruntime

    return dataclasses.replace(
        source,
        artifact=ArtifactInfo(artifact.name, "onnx", sha256_file(artifact)),
        variant={**source.variant, "precision": precision},
        parity=parity,
        versions={**source.versions, "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        extra={**source.extra, "precision": details},
    )


def naming(path: str | os.PathLike, err: BaseException) -> str:
    """``err``'s one-line message, prefixed with ``path`` unless it starts with a file's name
    already (the model's, or e.g. a calibration image's)."""
    text = " ".join(str(err).split())
    head = text.split(": ", 1)[0]
    return text if str(path) in text or Path(head).exists() else f"{path}: {text}"


def write_model_with_sidecar(model: onnx.ModelProto, out: Path, make_sidecar: Callable[[Path], Sidecar],
                             also: dict[Path, bytes] | None = None) -> Path:
    """Write ``model`` to ``out``, its sidecar (built from the written file) beside it, and the
    files of ``also`` ({path: content}); every file is staged as a temporary file first and
    renamed into place only once all are complete, so a failure leaves none of them."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []

    def stage(target: Path) -> Path:
        fd, name = mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        staged.append((Path(name), target))
        return Path(name)

    try:
        tmp = stage(out)
        onnx.save(model, str(tmp))
        side = make_sidecar(tmp)
        side = dataclasses.replace(side, artifact=dataclasses.replace(side.artifact, file=out.name))
        side.validate()
        stage(sidecar_path(out)).write_text(side.to_json())
        for path, data in (also or {}).items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            stage(Path(path)).write_bytes(data)
        for tmp_path, target in reversed(staged):  # the model last: its presence means all are there
            os.replace(tmp_path, target)
    finally:
        for tmp_path, _ in staged:
            tmp_path.unlink(missing_ok=True)
    return out


def load_source(path: str | os.PathLike) -> tuple[onnx.ModelProto, Sidecar]:
    """An FP32 ONNX and its sidecar, with one-line errors for a missing or bad file."""
    from runtime.errors import SidecarError

    path = Path(path)
    if not path.is_file():
        raise PrecisionError(f"{path}: ONNX model not found")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # protobuf DecodeError and friends
        raise PrecisionError(f"{path}: not a readable ONNX model ({type(err).__name__})") from None
    try:
        side = Sidecar.load(sidecar_path(path))
    except SidecarError as err:
        raise PrecisionError(str(err)) from None
    if side.artifact.sha256 != sha256_file(path):
        raise PrecisionError(f"{path}: stale sidecar {sidecar_path(path)} (sha256 differs; re-export the model)")
    if side.variant.get("precision") not in (None, "fp32"):
        raise PrecisionError(f"{path}: already a {side.variant['precision']} model; start from the FP32 export")
    weights = {t.name for t in model.graph.initializer}
    if [i.name for i in model.graph.input if i.name not in weights] != [side.input.name]:
        raise PrecisionError(f"{path}: expected one graph input named {side.input.name!r}")
    return model, side


def write_fp16(result: Fp16Result, source_path: Path, source_side: Sidecar, out: Path, *, calibration: str,
               images: int, max_prob_diff: float, min_iou: float, islands_file: Path | None = None) -> Path:
    """Write the mixed ONNX, its sidecar and the island list (default :func:`islands_path`)."""
    islands = result.islands
    islands.source, islands.source_sha256 = source_path.name, source_side.artifact.sha256
    islands_file = islands_file or islands_path(out)
    details = {
        "mode": "fp16-mixed",
        "source": source_path.name, "source_sha256": source_side.artifact.sha256,
        "calibration": {"source": calibration, "images": images},
        "tolerance": {"max_abs_prob": max_prob_diff, "min_mask_iou": min_iou},
        "agreement_fp16_storage": result.agreement.to_dict(),
        "agreement_onnxruntime_cpu": result.cpu_agreement.to_dict(),
        "overflow_limit": islands.overflow_limit,
        "max_abs_activation": result.max_activation if math.isfinite(result.max_activation) else None,
        "overflowing_tensors": result.overflowing,
        "fp32_nodes": len(islands.nodes), "graph_nodes": result.nodes,
        "islands_by_reason": islands.by_reason(),
        "islands_file": islands_file.name,
        "islands": sorted(islands.nodes),
        "tensorrt10_layer_precisions": islands.layer_precisions(),
        "rounds": result.rounds,
    }
    agr = result.cpu_agreement
    write_model_with_sidecar(result.mixed, out, lambda tmp: derived_sidecar(
        source_side, tmp, precision="fp16-mixed",
        parity=cpu_parity(max(agr.max_abs_prob, agr.max_abs_score), max_prob_diff, True), details=details),
        also={islands_file: islands.to_json().encode("utf-8")})
    return out

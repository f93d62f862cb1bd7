"""Run one ONNX graph on OpenVINO's CPU plugin as consecutive segments, each compiled at its
own inference precision: BF16 (or FP16) kernels where the model tolerates them, FP32 where
it does not.

OpenVINO's CPU plugin applies ``INFERENCE_PRECISION_HINT`` to a whole compiled model (its
2026.4 release ignores the per-node ``disable_fp16_compression`` attribute under a BF16 hint;
measured on TransForensics C2: the same mask flips with every op marked), so keeping part of
a graph in FP32 means compiling that part as a model of its own. ``partition`` cuts the graph
along its topological order: the model is constant-folded first (``fold``: shape arithmetic
and reshaped weights become constants, so no segment gets a weight or a shape as a runtime
input, which the plugin cannot compile), then its compute ops (everything but Parameter,
Constant and Result) are numbered 0..n-1 in ``Model.get_ordered_ops()`` order, which is the
same for the same file in every process; ``fp32_ranges`` lists half-open [start, end) ranges
of those numbers kept in FP32. Each tensor that one segment makes and a later one reads
becomes an output of the first and a Parameter of the second; constants stay where they are. ``SegmentChain`` runs the
compiled segments one after the other (never two at once, so the thread pool is the same one
a single model uses) and returns the original model's outputs in their order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["fold", "op_numbers", "compute_ops", "crossing_bytes", "precision_runs", "partition", "SegmentChain",
           "check_ranges", "even_segments"]

#: What ``op_numbers`` gives an op that is not a compute op (a Constant gets None).
PARAMETER, RESULT = -1, -2
_NOT_COMPUTE = {"Constant": None, "Parameter": PARAMETER, "Result": RESULT}


def fold(model):
    """``model`` with its constant subgraphs folded (in place; returned for chaining): what
    ``compute_ops``, ``crossing_bytes`` and ``partition`` number."""
    from openvino.passes import ConstantFolding, Manager

    manager = Manager()
    manager.register_pass(ConstantFolding())
    manager.run_passes(model)
    return model


def op_numbers(ordered: Sequence) -> list[int | None]:
    """For each op of ``ordered`` (``Model.get_ordered_ops()``): its compute-op number
    0..n-1 (what ``fp32_ranges`` counts), ``PARAMETER``, ``RESULT``, or None for a Constant.
    The one numbering that ``compute_ops``, ``partition`` and ``crossing_bytes`` share."""
    numbers: list[int | None] = []
    count = 0
    for n in ordered:
        kind = n.get_type_name()
        if kind in _NOT_COMPUTE:
            numbers.append(_NOT_COMPUTE[kind])
        else:
            numbers.append(count)
            count += 1
    return numbers


def compute_ops(model) -> list:
    """The model's compute ops in topological order (what ``fp32_ranges`` numbers)."""
    ordered = model.get_ordered_ops()
    return [n for n, c in zip(ordered, op_numbers(ordered)) if c is not None and c >= 0]


def check_ranges(ranges: Sequence[Sequence[int]], n_ops: int) -> list[tuple[int, int]]:
    """``ranges`` as sorted, merged (start, end) pairs within [0, n_ops); ValueError otherwise."""
    out: list[tuple[int, int]] = []
    for r in ranges:
        if len(r) != 2 or not all(isinstance(v, (int, np.integer)) for v in r):
            raise ValueError(f"fp32 range {list(r)!r} is not a [start, end) pair of op numbers")
        a, b = int(r[0]), int(r[1])
        if not 0 <= a < b <= n_ops:
            raise ValueError(f"fp32 range [{a}, {b}) is not within the model's {n_ops} compute ops")
        out.append((a, b))
    merged: list[tuple[int, int]] = []
    for a, b in sorted(out):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def even_segments(n_ops: int, parts: int) -> list[tuple[int, int]]:
    """[0, n_ops) cut into ``parts`` consecutive ranges of (nearly) equal op counts."""
    parts = max(1, min(parts, n_ops))
    edges = [round(k * n_ops / parts) for k in range(parts + 1)]
    return [(edges[k], edges[k + 1]) for k in range(parts)]


def precision_runs(n_ops: int, fp32_ranges: Sequence[tuple[int, int]], low: str) -> list[tuple[int, int, str]]:
    """[0, n_ops) as consecutive (start, end, hint) runs: "f32" inside ``fp32_ranges``, ``low``
    (the reduced-precision hint) elsewhere; empty runs are dropped."""
    runs: list[tuple[int, int, str]] = []
    at = 0
    for a, b in fp32_ranges:
        if a > at:
            runs.append((at, a, low))
        runs.append((a, b, "f32"))
        at = b
    if at < n_ops:
        runs.append((at, n_ops, low))
    return runs


@dataclass
class Segment:
    """One compiled piece: the model, which tensors it reads and which it hands on."""

    model: Any
    hint: str
    inputs: list  # keys of the tensors it reads, in Parameter order
    outputs: list  # keys of the tensors it makes for later segments, in output order (None: the last)


def partition(model, runs: Sequence[tuple[int, int, str]]) -> tuple[list[Segment], tuple[int, int]]:
    """Cut ``model`` (an ``openvino.Model`` already through ``fold``; changed in place: read a
    fresh one for each partition) into one Segment per run. Tensor keys: (producer's position in
    ``get_ordered_ops()``, output index); the input image is the key of the model's only
    Parameter. Returns the segments and the image's key."""
    import openvino as ov

    ordered = model.get_ordered_ops()
    position = {n.get_instance_id(): k for k, n in enumerate(ordered)}
    last = len(runs) - 1
    segment_of: dict[int, int] = {}
    bounds = [b for _, b, _ in runs]
    seg = 0
    for k, number in enumerate(op_numbers(ordered)):
        if number == PARAMETER:
            segment_of[k] = -1
        elif number == RESULT:
            segment_of[k] = last
        elif number is not None:
            while number >= bounds[seg]:
                seg += 1
            segment_of[k] = seg
    params: list[list] = [[] for _ in runs]
    inputs: list[list] = [[] for _ in runs]
    outputs: list[list] = [[] for _ in runs]
    for k, n in enumerate(ordered):
        i = segment_of.get(k)
        if i is None:  # a Constant: read in place by whichever segment uses it
            continue
        for j_out, out in enumerate(n.outputs()):
            readers: dict[int, list] = {}
            for t in out.get_target_inputs():
                j = segment_of[position[t.get_node().get_instance_id()]]
                if j != i:
                    readers.setdefault(j, []).append(t)
            for j, targets in sorted(readers.items()):
                p = ov.op.Parameter(out.get_element_type(), out.get_partial_shape())
                for t in targets:
                    t.replace_source_output(p.output(0))
                params[j].append(p)
                inputs[j].append((k, j_out))
            if readers and i >= 0:
                outputs[i].append(out)
    segments = []
    for s, (_, _, hint) in enumerate(runs):
        if s == last:
            piece = ov.Model(model.get_results(), params[s], f"segment{s}")
            keys = None
        else:
            piece = ov.Model(outputs[s], params[s], f"segment{s}")
            keys = [(position[o.get_node().get_instance_id()], o.get_index()) for o in outputs[s]]
        segments.append(Segment(piece, hint, inputs[s], keys))
    image = next(k for k, n in enumerate(ordered) if n.get_type_name() == "Parameter")
    return segments, (image, 0)


class SegmentChain:
    """Compiled segments run in order; ``infer(x)`` returns the original outputs as a list."""

    def __init__(self, core, segments: Sequence[Segment], image_key: tuple[int, int], config: dict[str, Any]):
        self._steps = []
        for seg in segments:
            compiled = core.compile_model(seg.model, "CPU", {**config, "INFERENCE_PRECISION_HINT": seg.hint})
            self._steps.append((compiled.create_infer_request(), seg.inputs, seg.outputs, compiled))
        self._image = image_key
        self.hints = [seg.hint for seg in segments]

    def get_property(self, name: str):
        """A property of the first compiled segment (threads are the same in all)."""
        return self._steps[0][3].get_property(name)

    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        values = {self._image: x}
        for request, reads, makes, _ in self._steps:
            result = request.infer([values[key] for key in reads])
            arrays = [np.array(result[k]) for k in range(len(result))]
            if makes is None:
                return arrays
            values.update(zip(makes, arrays))
        raise AssertionError("a partition ends with its last segment")


def crossing_bytes(model) -> np.ndarray:
    """``out[c]``: bytes of the tensors a cut before compute op ``c`` would hand from the
    first segment to the second (``out[0]`` is the image alone). A cut where little crosses
    costs one small copy; a cut through an attention block hands on its (tokens x tokens)
    maps and undoes the plugin's fusions, which measured slower than the whole FP32 model."""
    ordered = model.get_ordered_ops()
    numbers = op_numbers(ordered)
    count = sum(1 for c in numbers if c is not None and c >= 0)
    # what a reader's position means for a cut: a Result reads after every compute op
    number = {n.get_instance_id(): (count if c == RESULT else c) for n, c in zip(ordered, numbers)}
    delta = np.zeros(count + 2, dtype=np.int64)
    for n, p in zip(ordered, numbers):
        if p is None or p == RESULT:  # a Constant (read in place) or a Result (makes nothing)
            continue
        for out in n.outputs():
            last = max((number[t.get_node().get_instance_id()] for t in out.get_target_inputs()), default=p)
            if last <= p or not out.get_partial_shape().is_static:
                continue
            size = int(np.prod([d.get_length() for d in out.get_partial_shape()], dtype=np.int64))
            delta[p + 1] += size * out.get_element_type().size
            delta[last + 1] -= size * out.get_element_type().size
    return np.cumsum(delta)[: count + 1]

"""Checks on an exported graph: ONNX checker and strict shape inference, an op lint
(opset, domains, ops TensorRT cannot parse, the attention pattern) and numerical parity
of the runtime's onnxruntime backend against PyTorch."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import onnx
import onnx.defs
import onnx.numpy_helper
import onnx.shape_inference

# Ops a graph for TensorRT must not hold: DFT/STFT (no TensorRT support), the opset-23
# Attention op (only TensorRT >= 10.14), control flow from data-dependent Python branches.
FORBIDDEN_OPS = frozenset({"DFT", "STFT", "Attention", "If", "Loop", "Unique"})


@dataclass
class LintReport:
    opset: int
    op_counts: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    attention_patterns: int = 0  # Mul(Q)->MatMul->Softmax->MatMul chains
    custom_ops: int = 0  # nodes of an allowed non-standard (domain, op), e.g. onnxruntime's fused attention
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class GraphIndex:
    """What node rules need to know about the rest of the graph, built once per lint."""

    model: onnx.ModelProto
    opset: int
    producers: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]
    initializers: dict[str, onnx.TensorProto]

    @classmethod
    def build(cls, model: onnx.ModelProto) -> "GraphIndex":
        graph = model.graph
        return cls(model, default_opset(model), _producers(graph), _consumers(graph),
                   {init.name: init for init in graph.initializer})

    def is_constant(self, name: str) -> bool:
        """True for a build-time constant: an initializer or the output of a Constant node."""
        if name in self.initializers:
            return True
        node = self.producers.get(name)
        return node is not None and node.op_type == "Constant"

    def constant_value(self, name: str) -> np.ndarray | None:
        """The value of a build-time constant, or None when ``name`` is computed at run time."""
        if name in self.initializers:
            return onnx.numpy_helper.to_array(self.initializers[name])
        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return onnx.numpy_helper.to_array(attr.t)
        return None


#: A node rule: yields one problem message per violation (lint prefixes the node's name).
NodeRule = Callable[[onnx.NodeProto, GraphIndex], Iterable[str]]


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ValueError("graph imports no default-domain opset")


def check_model(path: str | Path) -> onnx.ModelProto:
    """ONNX checker on the file and strict shape inference; returns the loaded model."""
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    return model


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for inp in node.input:
            users.setdefault(inp, []).append(node)
    return users


def lint(model: onnx.ModelProto, opset: int | None = None, *,
         forbidden: frozenset[str] = FORBIDDEN_OPS, rules: Sequence[NodeRule] = (),
         allowed_custom: frozenset[tuple[str, str]] = frozenset()) -> LintReport:
    """Op lint: every node in the default domain (or one of ``allowed_custom``'s (domain, op)
    pairs, counted in ``custom_ops``) and defined at the graph's opset, none of
    ``forbidden`` (default ``FORBIDDEN_OPS``), and every Softmax between two MatMuls fed by
    a scaled Q or by a constant Q holding the scale (the attention pattern TensorRT fuses).
    ``rules`` run on every default-domain node in the same walk (e.g. a TensorRT version's
    op table, ``export.trt_support``)."""
    graph_opset = default_opset(model)
    report = LintReport(opset=graph_opset)
    if opset is not None and graph_opset != opset:
        report.problems.append(f"graph opset is {graph_opset}, expected {opset}")
    index = GraphIndex.build(model)
    producers, consumers = index.producers, index.consumers
    for node in model.graph.node:
        report.op_counts[node.op_type] += 1
        label = node.name or node.op_type
        if (node.domain, node.op_type) in allowed_custom:
            report.custom_ops += 1
            continue
        if node.domain not in ("", "ai.onnx"):
            report.problems.append(f"node {label}: op {node.domain}::{node.op_type} outside the default domain")
            continue
        if node.op_type in forbidden:
            report.problems.append(f"node {label}: op {node.op_type} is not allowed")
            continue
        for rule in rules:
            report.problems.extend(f"node {label}: {message}" for message in rule(node, index))
        try:
            onnx.defs.get_schema(node.op_type, max_inclusive_version=graph_opset, domain="")
        except onnx.defs.SchemaError:
            report.problems.append(f"node {label}: op {node.op_type} is not defined in opset {graph_opset}")
        if node.op_type == "Softmax":
            qk = producers.get(node.input[0])
            users = consumers.get(node.output[0], [])
            if qk is not None and qk.op_type == "MatMul" and any(u.op_type == "MatMul" for u in users):
                q = producers.get(qk.input[0])
                # a constant Q (learned queries) holds the scale already: the dynamo exporter folds it
                if (q is not None and q.op_type == "Mul") or index.is_constant(qk.input[0]):
                    report.attention_patterns += 1
                else:
                    report.problems.append(f"node {label}: attention scale is not folded into Q")
    return report


@dataclass
class Parity:
    max_abs_prob: float
    max_abs_score: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_prob <= self.tolerance and self.max_abs_score <= self.tolerance


def _run_onnx(onnx_path: str | Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    from runtime.backends.ort_backend import OrtBackend

    return OrtBackend(onnx_path, providers=["CPUExecutionProvider"]).run(batch)


def _compare(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], tolerance: float) -> Parity:
    return Parity(
        max_abs_prob=float(np.abs(outputs["prob"] - reference["prob"]).max()),
        max_abs_score=float(np.abs(outputs["score"] - reference["score"]).max()),
        tolerance=tolerance,
    )


def parity(onnx_path: str | Path, reference: dict[str, np.ndarray], batch: np.ndarray,
           tolerance: float = 1e-4) -> Parity:
    """Run the runtime's onnxruntime backend on ``batch`` and compare with PyTorch's
    ``reference`` outputs ("prob", "score")."""
    return _compare(_run_onnx(onnx_path, batch), reference, tolerance)


@dataclass
class ExportParity:
    """The export's outputs against two PyTorch references: the model as built (before the
    export rewrites), so a rewrite that changes the outputs cannot pass, and the rewritten
    model that was traced, which isolates the exporter and runtime from the rewrites."""

    as_built: Parity
    rewritten: Parity

    @property
    def passed(self) -> bool:
        return self.as_built.passed and self.rewritten.passed

    @property
    def max_abs_diff(self) -> float:
        return max(self.as_built.max_abs_prob, self.as_built.max_abs_score,
                   self.rewritten.max_abs_prob, self.rewritten.max_abs_score)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {name: {"max_abs_prob": p.max_abs_prob, "max_abs_score": p.max_abs_score}
                for name, p in (("as_built", self.as_built), ("rewritten", self.rewritten))}


def export_parity(onnx_path: str | Path, as_built: dict[str, np.ndarray], rewritten: dict[str, np.ndarray],
                  batch: np.ndarray, tolerance: float = 1e-4) -> ExportParity:
    """One onnxruntime run of ``batch``, compared with both PyTorch references."""
    outputs = _run_onnx(onnx_path, batch)
    return ExportParity(_compare(outputs, as_built, tolerance), _compare(outputs, rewritten, tolerance))

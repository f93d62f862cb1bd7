"""The two ways ``export.onnx`` turns the contract module into an ONNX file: torch.export
("dynamo", the default: ``DEFAULT_EXPORTER``) and the TorchScript tracer ("torchscript", the
fallback), behind one call, ``export_graph``.

- ``dynamo``: ``torch.export.export(strict=False)`` captures the graph, ``torch.onnx.export``
  translates the ExportedProgram with onnxscript's torchlib and its optimizer folds constants.
  Its lowest opset is 18 (the default here); lower opsets go through the ONNX version
  converter. Any local function left in the graph is inlined, so every node downstream
  (the TensorRT op lint, FP16 island names, Q/DQ) is a plain node of the main graph, and the
  inner tensors' ``value_info`` is dropped as in a TorchScript graph. A
  dynamic batch is a ``torch.export.Dim``; torch.export specialises a size-1 example
  dimension to the constant 1, so that export traces a batch of 2 (``example_batch``).
- ``torchscript``: the tracer behind ``dynamo=False`` (deprecated by torch since 2.9),
  opset 17 by default, a dynamic batch through ``dynamic_axes``.

TensorRT 10.0 and later parse opsets 9 to 20 (``export.trt_support``), so both defaults
suit every target (trt10.3, trt10.16, trt11). Non-standard ops (onnxruntime's fused
attention, ``export.ort_attention``) come as a ``CustomOp``: a torch custom op with a
TorchScript symbolic registered by its module and an onnxscript translation for dynamo.

Under dynamo, ``DYNAMO_TRANSLATIONS`` replaces torchlib's translation of a few aten ops by
the op pattern onnxruntime's graph optimiser fuses (see ``gelu_translation``).

A failure raises ``ExporterError`` with one line that names the module being traced (from
the traceback of torch.export or the tracer, or for an op torchlib cannot translate from the
node's ``nn_module_stack``) and suggests the other exporter.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Callable, Sequence

import torch
import torch.nn as nn

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_EXPORTER = "dynamo"
DEFAULT_OPSETS = {"dynamo": 18, "torchscript": 17}
LABELS = {
    "dynamo": "torch.onnx dynamo=True (torch.export + onnxscript)",
    "torchscript": "torch.onnx dynamo=False (TorchScript tracer)",
}
INPUT_NAMES = ("image",)
OUTPUT_NAMES = ("prob", "score")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ATEN_OP = re.compile(r"target=torch\.ops\.([\w.]+)|OpOverload\(op='([\w.]+)', overload='(\w+)'\)")


class ExporterError(RuntimeError):
    """An exporter failed on the module; the message is one line for the user."""


@dataclass(frozen=True)
class CustomOp:
    """A torch custom op exported as a non-standard ONNX op (``domain``, ``version``): the
    TorchScript exporter uses the symbolic its module registered, dynamo ``translation``."""

    target: torch._ops.OpOverload
    translation: Callable
    domain: str
    version: int = 1


def gelu_translation(x, approximate: str = "none"):
    """aten.gelu as x * (Erf(x / sqrt 2) + 1) * 0.5 (the TorchScript exporter's order), the
    pattern onnxruntime fuses into one Gelu kernel. torchlib writes x * (0.5 * (Erf(x / sqrt 2)
    + 1)), which onnxruntime leaves as five element-wise nodes: on full-size M2SFormer at 256
    that left 19 unfused GELUs (measured with ``python -m bench.exporters --optimized``).
    ``approximate="tanh"`` keeps the tanh formula (none of the seed models uses it)."""
    from onnxscript import opset18 as op

    if approximate == "tanh":
        inner = op.Mul(op.Add(x, op.Mul(op.Mul(op.Mul(x, x), x), 0.044715)), math.sqrt(2.0 / math.pi))
        return op.Mul(op.Mul(x, 0.5), op.Add(op.Tanh(inner), 1.0))
    return op.Mul(op.Mul(x, op.Add(op.Erf(op.Div(x, math.sqrt(2.0))), 1.0)), 0.5)


DYNAMO_TRANSLATIONS: dict[Callable, Callable] = {torch.ops.aten.gelu.default: gelu_translation}


def check_exporter(exporter: str) -> str:
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    return exporter


def default_opset(exporter: str) -> int:
    return DEFAULT_OPSETS[check_exporter(exporter)]


def example_batch(exporter: str, batch: int | str) -> int:
    """The batch of the example input traced for ``batch`` (an int or "dynamic")."""
    if batch == "dynamic":
        return 2 if exporter == "dynamo" else 1
    return int(batch)


def export_graph(module: nn.Module, image: torch.Tensor, path: str | Path, *, exporter: str, opset: int,
                 dynamic_batch: bool = False, custom_ops: Sequence[CustomOp] = ()) -> None:
    """Export ``module(image) -> (prob, score)`` to ``path`` with ``exporter``; raises
    ExporterError (one line) when the exporter fails."""
    check_exporter(exporter)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes, torch's deprecation notice; parity is checked after
        if exporter == "dynamo":
            _dynamo(module, image, Path(path), opset, dynamic_batch, custom_ops)
        else:
            _torchscript(module, image, Path(path), opset, dynamic_batch, custom_ops)


def _torchscript(module: nn.Module, image: torch.Tensor, path: Path, opset: int, dynamic_batch: bool,
                 custom_ops: Sequence[CustomOp]) -> None:
    dynamic = {name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES} if dynamic_batch else None
    try:
        torch.onnx.export(module, (image,), str(path), dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                          dynamic_axes=dynamic, do_constant_folding=True,
                          custom_opsets={op.domain: op.version for op in custom_ops} or None)
    except Exception as err:  # the tracer and the symbolic functions raise many types
        raise ExporterError(_describe(err, "torchscript", "the TorchScript tracer", module)) from None


def _dynamo(module: nn.Module, image: torch.Tensor, path: Path, opset: int, dynamic_batch: bool,
            custom_ops: Sequence[CustomOp]) -> None:
    shapes = {"image": {0: torch.export.Dim("batch", min=1)}} if dynamic_batch else None
    try:
        program = torch.export.export(module, (image,), dynamic_shapes=shapes, strict=False)
    except Exception as err:  # torch.export's UserError, guard and unsupported-op errors, the model's own
        raise ExporterError(_describe(err, "dynamo", "torch.export", module)) from None
    try:
        onnx_program = torch.onnx.export(program, (image,), dynamo=True, opset_version=opset,
                                         input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                                         custom_translation_table={**DYNAMO_TRANSLATIONS,
                                                                   **{op.target: op.translation for op in custom_ops}},
                                         optimize=True, verbose=False)
        _inline_functions(onnx_program.model)
        if dynamic_batch:
            _name_batch(onnx_program.model)
        onnx_program.save(str(path))
    except Exception as err:  # torchlib's dispatch, graph construction and optimizer errors
        raise ExporterError(_describe(err, "dynamo", "the ONNX translation", module, program)) from None
    _drop_value_info(path)


def _drop_value_info(path: Path) -> None:
    """Remove the intermediate ``value_info`` (types and shapes of every inner tensor) the
    dynamo exporter writes and the TorchScript one does not: tools that rewrite types (the FP16
    converter of ``export.precision``) would otherwise leave stale FP32 entries that fail
    shape inference. The checker's strict shape inference recomputes them."""
    import onnx

    model = onnx.load(str(path))
    if len(model.graph.value_info):
        del model.graph.value_info[:]
        onnx.save(model, str(path))


def _inline_functions(model) -> None:
    """Inline the local functions of an onnx_ir model (none are expected after the optimizer)."""
    if len(model.functions):
        import onnx_ir.passes.common as common

        common.InlinePass()(model)


def _name_batch(model, name: str = "batch") -> None:
    """Call the input's symbolic batch dimension ``name`` everywhere (torch.export calls it
    s0, s40, ...), as the TorchScript export does."""
    import onnx_ir as ir

    first = model.graph.inputs[0].shape[0]
    if isinstance(first, int) or first.value is None:
        return
    values = [*model.graph.inputs, *model.graph.outputs,
              *(out for node in model.graph.all_nodes() for out in node.outputs)]
    for value in values:
        if value.shape is None:
            continue
        dims = [ir.SymbolicDim(name) if isinstance(d, ir.SymbolicDim) and d.value == first.value else d
                for d in value.shape]
        value.shape = ir.Shape(dims)


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and all(err is not e for e in seen):
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _frames(tb: TracebackType | None):
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _module_name(names: dict[int, str], module: nn.Module) -> str:
    name = names[id(module)]
    return f"{name or '<top>'} ({type(module).__name__})"


def failing_module(err: BaseException, module: nn.Module, program=None) -> str | None:
    """The innermost submodule of ``module`` whose forward was running when ``err`` was raised
    ("path (Class)"), else the module of the fx node whose op could not be translated, else None."""
    names = {id(m): name for name, m in module.named_modules()}
    innermost = None
    for e in _chain(err):
        for frame in _frames(e.__traceback__):
            owner = frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names:
                innermost = owner
        if innermost is not None:
            return _module_name(names, innermost)
    if program is None:
        return None
    for e in _chain(err):
        match = _ATEN_OP.search(str(e))
        if not match:
            continue
        target = match.group(1) or f"{match.group(2)}.{match.group(3)}"
        for node in program.graph.nodes:
            stack = node.meta.get("nn_module_stack")
            if node.op == "call_function" and str(node.target) == target and stack:
                path, cls = list(stack.values())[-1]
                cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
                return f"{path} ({cls_name.rsplit('.', 1)[-1]})"
    return None


def _first_line(err: BaseException) -> str:
    """The first line of the innermost exception that says something (torch.onnx's wrappers
    start with generic advice)."""
    for e in reversed(_chain(err)):
        lines = [line.strip() for line in _ANSI.sub("", str(e)).splitlines() if line.strip()]
        if lines:
            return f"{type(e).__name__}: {lines[0]}"
    return type(err).__name__


def _describe(err: BaseException, exporter: str, stage: str, module: nn.Module, program=None) -> str:
    where = failing_module(err, module, program)
    other = next(e for e in EXPORTERS if e != exporter)
    place = f" in module {where}" if where else ""
    return f"{exporter} exporter ({stage}) failed{place}: {_first_line(err)} (try --exporter {other})"

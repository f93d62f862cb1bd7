"""``python -m export.quantize MODEL.onnx``: an explicitly quantized INT8 (Q/DQ) ONNX and its accuracy delta.

TensorRT builds INT8 only from explicit QuantizeLinear/DequantizeLinear pairs (TensorRT 11
removed implicit calibration), symmetric with zero-point 0. This tool writes such a graph
with onnxruntime's static quantizer (``onnxruntime.quantization.quantize_static``):

- QDQ format, INT8 activations and weights, both symmetric (every zero point is 0: checked
  on the written graph), weights per output channel, activations per tensor from N
  calibration images (a dataset, or the project's synthetic forgeries) with MinMax,
  entropy or percentile calibration;
- Q/DQ on the inputs of the weighted layers only (Conv, ConvTranspose, MatMul, Gemm by
  default: TensorRT's recommended placement; ``--ops`` widens it); biases stay FP32
  (TensorRT takes no INT32 Dequantize);
- the FP16-unsafe islands (``export.precision``: ranges and rules, or the list that
  ``export.fp16`` wrote, ``--islands``) are not quantized: attention products, Softmax,
  normalisations and the output head stay in float.

Then FP32 and INT8 run on onnxruntime CPU over evaluation images disjoint from the
calibration ones, and the report gives the mask agreement (IoU of the INT8 mask with the
FP32 mask, probability differences) and the accuracy against ground truth of both (pixel
F1 and IoU at the sidecar threshold, per forged image, ``train.metrics``) with the delta.
The Q/DQ ONNX gets a sidecar (variant ``precision: int8-qdq``, all of the above under
``extra.precision``) so the runtime's Predictor runs it. ``--max-f1-drop`` / ``--min-iou``
turn the report into a gate (exit 1, nothing written); ``--figure PNG`` shows the masks.
"""
from __future__ import annotations

import copy
import io
import logging
import math
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from train.cli import ArgumentParser, interrupts_in_one_line, one_line_errors, output_file, positive_int

interrupts_in_one_line(__name__)  # before the heavy imports

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from runtime.atomic import atomic_write_bytes
from runtime.sidecar import Sidecar
from train.metrics import PixelMetrics

from runtime.agreement import Agreement, agreement
from .calibration import EVAL_START, SYNTHETIC, CalibrationError, LabeledImage, input_batches, load_images, masks_at
from .precision import (DEFAULT_OVERFLOW_LIMIT, Fp16Islands, PrecisionError, default_output, derived_sidecar,
                        ensure_node_names, find_islands, load_source, naming, progress_bar, run_outputs, session,
                        write_model_with_sidecar)
from .verify import GraphIndex

DEFAULT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QdqSummary:
    """What the written graph holds: Q/DQ counts, their integer types and zero points."""

    quantize: int
    dequantize: int
    int8_zero_points: int  # zero-point initializers of type INT8
    other_types: list[str]  # zero points of another type, or missing (UINT8 by default): should be none
    nonzero_zero_points: list[str]  # zero-point initializers with a non-zero value (should be none)
    per_channel: int  # DequantizeLinear nodes with a per-channel (1-D, >1 element) scale
    quantized_nodes: int  # nodes of the quantized op types fed by a DequantizeLinear

    def to_dict(self) -> dict:
        return asdict(self)


def qdq_summary(model: onnx.ModelProto, ops: Sequence[str] = DEFAULT_OPS) -> QdqSummary:
    """Count and check the Q/DQ nodes of ``model`` (TensorRT takes INT8 with zero point 0 only)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = GraphIndex.build(model).producers
    q = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    zero_points = {n.input[2] for n in q + dq if len(n.input) > 2 and n.input[2]}
    types = [f"{n.name}: no zero point (UINT8 by default)" for n in q + dq if len(n.input) < 3 or not n.input[2]]
    nonzero, int8 = [], 0
    for name in sorted(zero_points):
        t = inits.get(name)
        if t is None:
            nonzero.append(f"{name} (not a constant)")
            continue
        if t.data_type == TensorProto.INT8:
            int8 += 1
        else:
            types.append(f"{name}: {TensorProto.DataType.Name(t.data_type)}")
        if np.any(numpy_helper.to_array(t) != 0):
            nonzero.append(name)
    per_channel = sum(1 for n in dq if n.input[1] in inits and numpy_helper.to_array(inits[n.input[1]]).size > 1)
    fed = sum(1 for n in graph.node if n.op_type in ops
              and any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input))
    return QdqSummary(len(q), len(dq), int8, types, nonzero, per_channel, fed)


def inline_constants(model: onnx.ModelProto) -> int:
    """Make weights initializers again, in place: a Constant node becomes an initializer of
    the same name, and an Identity of an initializer (the TorchScript exporter's way of
    sharing a parameter) is bypassed. The quantizer recognises weights (per-channel, no
    calibration) and Conv biases only as initializers. Returns how many nodes went."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    keep = []
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None and node.output[0] not in outputs:
            tensor = copy.deepcopy(value.t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            inits.add(tensor.name)
        elif node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    for node in keep:
        for k, name in enumerate(node.input):
            node.input[k] = alias.get(name, name)
    removed = len(graph.node) - len(keep)
    graph.ClearField("node")
    graph.node.extend(keep)
    return removed


def _reader(input_name: str, batches: Sequence[np.ndarray]):
    """An onnxruntime CalibrationDataReader over preprocessed batches (with a progress bar)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(progress_bar([{input_name: b} for b in batches], "INT8 calibration"))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    return Batches()


def quantize_qdq(model: onnx.ModelProto, batches: Sequence[np.ndarray], *, exclude: Sequence[str] = (),
                 ops: Sequence[str] = DEFAULT_OPS, method: str = "minmax", per_channel: bool = True) -> onnx.ModelProto:
    """The symmetric INT8 Q/DQ graph of ``model`` (module docstring), ``exclude`` left in float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise PrecisionError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    if not batches:
        raise PrecisionError("INT8 calibration needs at least one image")
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    reader = _reader(model.graph.input[0].name, batches)
    with tempfile.TemporaryDirectory(prefix="qdq-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        model = copy.deepcopy(model)
        inline_constants(model)
        onnx.save(model, str(src))
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice on pre-processing goes to the root logger
        try:
            quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(ops),
                            per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=list(exclude), calibrate_method=calibrate,
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                           "QuantizeBias": False})
        except Exception as err:  # the quantizer raises plain Exceptions and onnxruntime errors
            raise PrecisionError(f"onnxruntime quantization failed ({' '.join(str(err).split())[:300]})") from None
        finally:
            logging.getLogger().setLevel(quiet)
        qdq = onnx.load(str(dst))
    summary = qdq_summary(qdq, ops)
    if summary.nonzero_zero_points or summary.other_types:
        first = (summary.nonzero_zero_points + summary.other_types)[0]
        raise PrecisionError(f"quantized graph is not symmetric INT8: {first}")
    return qdq


@dataclass
class Evaluation:
    """INT8 vs FP32 on evaluation images: agreement and accuracy against ground truth."""

    agreement: Agreement
    fp32: dict  # train.metrics.PixelMetrics result of the FP32 model
    int8: dict
    maps: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)
    # per image: FP32 prob, INT8 prob, ground truth (model size), for the figure

    @property
    def f1_delta(self) -> float:
        return self.int8["per_image"]["f1"] - self.fp32["per_image"]["f1"]

    @property
    def iou_delta(self) -> float:
        return self.int8["per_image"]["iou"] - self.fp32["per_image"]["iou"]

    def to_dict(self) -> dict:
        def clean(d: dict) -> dict:  # strict JSON for the sidecar: nan -> None
            return {k: clean(v) if isinstance(v, dict) else (None if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in d.items()}

        return clean({"agreement": self.agreement.to_dict(), "fp32": self.fp32, "int8": self.int8,
                      "f1_delta": self.f1_delta, "iou_delta": self.iou_delta})


def evaluate(reference: onnx.ModelProto, candidate: onnx.ModelProto, images: list[LabeledImage], side: Sidecar
             ) -> Evaluation:
    """Run both graphs on onnxruntime CPU over ``images``; compare and score them."""
    batches = input_batches(images, side.preprocess)
    ref_sess, can_sess = session(reference), session(candidate)
    ref = [run_outputs(ref_sess, b, ["prob", "score"]) for b in progress_bar(batches, "FP32 evaluation")]
    can = [run_outputs(can_sess, b, ["prob", "score"]) for b in progress_bar(batches, "INT8 evaluation")]
    truth = masks_at(images, ref[0]["prob"].shape[-2:])
    scores = []
    for outs in (ref, can):
        metrics = PixelMetrics(side.threshold)
        for out, mask in zip(outs, truth):
            metrics.update(out["prob"][0, 0], mask)
        scores.append(metrics.result())
    maps = [(r["prob"][0, 0], c["prob"][0, 0], t) for r, c, t in zip(ref, can, truth)]
    return Evaluation(agreement(ref, can, side.threshold), scores[0], scores[1], maps)


def save_figure(path: Path, evaluation: Evaluation, images: list[LabeledImage], threshold: float,
                rows: int = 4) -> Path:
    """PNG: per evaluation image (at most ``rows``), the image, its ground truth, the FP32
    and INT8 masks and |INT8 - FP32| of the probability."""
    from matplotlib.figure import Figure

    rows = min(rows, len(images))
    fig = Figure(figsize=(12.5, 2.6 * rows), layout="constrained")
    axes = fig.subplots(rows, 5, squeeze=False)
    titles = ("image", "ground truth", "FP32 mask", "INT8 mask", "|INT8 - FP32| prob")
    for r in range(rows):
        ref, can, truth = evaluation.maps[r]
        panels = (images[r].image, truth, ref > threshold, can > threshold)
        for c, (ax, panel) in enumerate(zip(axes[r], panels)):
            ax.imshow(panel, cmap=None if c == 0 else "gray", vmin=0, vmax=1 if c else 255)
        diff = axes[r][4].imshow(np.abs(can - ref), cmap="magma", vmin=0)
        fig.colorbar(diff, ax=axes[r][4], shrink=0.8)
        for c, ax in enumerate(axes[r]):
            ax.set_axis_off()
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
    a = evaluation.agreement
    fig.suptitle(f"INT8 Q/DQ vs FP32: mask IoU {a.mask_iou:.4f}, F1 delta {evaluation.f1_delta:+.4f} "
                 f"({len(images)} image(s))", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return atomic_write_bytes(path, buf.getvalue())


def quantizable_ops() -> list[str]:
    """The op types onnxruntime's QDQ quantizer knows how to quantize."""
    from onnxruntime.quantization.registry import QDQRegistry

    return sorted(QDQRegistry)


def check_ops(model: onnx.ModelProto, ops: Sequence[str]) -> None:
    """``--ops``: each an op type the quantizer handles, and at least one of them in the graph."""
    known = quantizable_ops()
    for op in ops:
        if op not in known:
            raise PrecisionError(f"--ops {op}: not an op type onnxruntime's QDQ quantizer handles "
                                 f"(it handles {', '.join(known)})")
    present = {n.op_type for n in model.graph.node}
    if not present & set(ops):
        raise PrecisionError(f"--ops {' '.join(ops)}: the graph has no node of these types; nothing to quantize")


@one_line_errors(ValueError, OSError)
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m export.quantize", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="FP32 ONNX from export.onnx (with its sidecar)")
    parser.add_argument("--out", type=Path, help="Q/DQ ONNX (default MODEL.int8.onnx)")
    parser.add_argument("--data", default=SYNTHETIC,
                        help="calibration images: a dataset folder (Tp/, Gt/) or JSON list, or 'synthetic'")
    parser.add_argument("--calib", type=positive_int, default=32, help="number of calibration images (default 32)")
    parser.add_argument("--eval-data", help="evaluation images (default: --data; synthetic ones are disjoint "
                                            "from the calibration images, a dataset's follow them)")
    parser.add_argument("--eval", type=positive_int, default=16, help="number of evaluation images (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed for synthetic images")
    parser.add_argument("--method", choices=METHODS, default="minmax", help="activation calibration (default minmax)")
    parser.add_argument("--ops", nargs="+", default=list(DEFAULT_OPS), metavar="OP",
                        help=f"op types to quantize (default {' '.join(DEFAULT_OPS)})")
    parser.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weights")
    parser.add_argument("--islands", type=Path, help="island list from export.fp16 to keep unquantized "
                                                     "(default: found here by range and rule)")
    parser.add_argument("--overflow-limit", type=float, default=DEFAULT_OVERFLOW_LIMIT,
                        help=f"range rule for the islands (default {DEFAULT_OVERFLOW_LIMIT:g})")
    parser.add_argument("--figure", type=Path, help="also write a PNG of masks FP32 vs INT8 on evaluation images")
    parser.add_argument("--max-f1-drop", type=float, help="fail if F1 (per image) drops by more than this")
    parser.add_argument("--min-iou", type=float, help="fail if the INT8/FP32 mask IoU is below this")
    args = parser.parse_args(argv)
    out = output_file(args.out or default_output(args.model, "int8"), suffix=".onnx")
    try:
        model, side = load_source(args.model)
        check_ops(model, args.ops)
        size = side.preprocess.size[0]
        calib = load_images(args.data, args.calib, size=size, seed=args.seed)
        eval_source = args.eval_data or args.data
        eval_start = EVAL_START if str(eval_source) == SYNTHETIC else (args.calib if args.eval_data is None else 0)
        evals = load_images(eval_source, args.eval, size=size, seed=args.seed, start=eval_start)
        batches = input_batches(calib, side.preprocess)
        model = copy.deepcopy(model)
        if args.islands:
            islands = Fp16Islands.load(args.islands)
            if islands.source_sha256 and islands.source_sha256 != side.artifact.sha256:
                raise PrecisionError(f"{args.islands}: island list is for another export of the model "
                                     f"({islands.source}, sha256 differs)")
            ensure_node_names(model)  # as export.fp16 did before naming the islands
        else:
            islands, _, _ = find_islands(model, batches, args.overflow_limit, progress_bar)
        qdq = quantize_qdq(model, batches, exclude=sorted(islands.nodes), ops=args.ops, method=args.method,
                           per_channel=not args.per_tensor)
        summary = qdq_summary(qdq, args.ops)
        if not summary.quantize:
            raise PrecisionError(f"no node of {', '.join(args.ops)} was quantized (the graph has no QuantizeLinear); "
                                 "nothing written")
        result = evaluate(model, qdq, evals, side)
        failed = []
        if args.max_f1_drop is not None and not -result.f1_delta <= args.max_f1_drop:
            failed.append(f"F1 drops by {-result.f1_delta:.4f} > {args.max_f1_drop:g}")
        if args.min_iou is not None and not result.agreement.mask_iou >= args.min_iou:
            failed.append(f"mask IoU vs FP32 {result.agreement.mask_iou:.4f} < {args.min_iou:g}")
        if failed:
            raise PrecisionError(f"{out}: INT8 accuracy gate failed: {'; '.join(failed)}")
        details = {
            "mode": "int8-qdq", "source": args.model.name, "source_sha256": side.artifact.sha256,
            "quantization": {"format": "QDQ", "activations": "int8 symmetric per-tensor",
                             "weights": f"int8 symmetric {'per-tensor' if args.per_tensor else 'per-channel'}",
                             "zero_point": 0, "bias": "float", "ops": list(args.ops), "method": args.method,
                             "tool": "onnxruntime.quantization.quantize_static"},
            "calibration": {"source": str(args.data), "images": len(calib)},
            "evaluation": {"source": str(eval_source), "images": len(evals), "first_index": eval_start,
                           **result.to_dict()},
            "qdq": summary.to_dict(),
            "unquantized_islands": sorted(islands.nodes),
        }
        # INT8 has no parity tolerance: the sidecar's parity is null, the measured delta sits in extra.precision.
        write_model_with_sidecar(qdq, out, lambda tmp: derived_sidecar(side, tmp, precision="int8-qdq", parity=None,
                                                                       details=details))
        if args.figure:
            save_figure(args.figure, result, evals, side.threshold)
    except (PrecisionError, CalibrationError) as err:
        print(f"error: {naming(args.model, err)}", file=sys.stderr)
        return 1
    f32, i8 = result.fp32["per_image"], result.int8["per_image"]
    print(f"wrote {out} and its sidecar" + (f"; figure {args.figure}" if args.figure else ""))
    print(f"Q/DQ: {summary.quantize} QuantizeLinear, {summary.dequantize} DequantizeLinear "
          f"({summary.per_channel} per-channel), {summary.quantized_nodes} quantized "
          f"{'/'.join(args.ops)} node(s), all zero points 0 (int8); {len(islands.nodes)} island node(s) left in float")
    print(f"calibration: {len(calib)} image(s) from {args.data} ({args.method}); "
          f"evaluation: {len(evals)} other image(s) from {eval_source}, "
          f"{result.fp32['forged_images']} with forged pixels")
    print(f"INT8 vs FP32 on onnxruntime CPU: {result.agreement.describe()}")
    print(f"accuracy vs ground truth (per forged image, threshold {side.threshold:g}): "
          f"F1 FP32 {f32['f1']:.4f} -> INT8 {i8['f1']:.4f} (delta {result.f1_delta:+.4f}); "
          f"IoU FP32 {f32['iou']:.4f} -> INT8 {i8['iou']:.4f} (delta {result.iou_delta:+.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

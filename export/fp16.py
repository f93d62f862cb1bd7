"""``python -m export.fp16 MODEL.onnx``: the FP16 mixed-precision ONNX and its FP32 islands.

Reads an FP32 export and its sidecar, measures on calibration images which nodes must stay
FP32 (``export.precision``: range, rules, then greedy growth until the final mask agrees),
and writes three files, all or none:

- ``OUT`` (default ``MODEL.fp16.onnx``): FP16 graph with FP32 islands and Casts, inputs and
  outputs FP32 — what TensorRT 11 builds strongly typed;
- ``OUT.json``: its sidecar (variant ``precision: fp16-mixed``; the islands, calibration and
  measured agreement under ``extra.precision``), so the runtime's Predictor runs it;
- the island list (default ``OUT`` with ``.islands.json``): node names, reasons, and the
  TensorRT 10 form (``--precisionConstraints=obey --layerPrecisions=NAME:fp32,...``) to
  build the FP32 ONNX with ``--fp16``.

Tolerance (defaults): the probability maps of the mixed graph and of FP32 differ by at most
1e-2 on every pixel, and the masks at the sidecar threshold agree with IoU >= 0.99 over the
pixels FP32 decides with a margin > 1e-3 (``runtime.agreement``). Measured with 16 synthetic
images on the five seed models with random weights (small configurations, and M2SFormer at
256): max |prob diff| 3.7e-5 to 3.7e-4 with FP16 storage simulated, 2.3e-5 to 2.6e-4 for the
mixed ONNX on onnxruntime CPU, decided-pixel IoU 1.0 — the default leaves ~25x headroom for
trained weights, whose activations are larger, and 1e-2 on a probability moves a mask only
where the model is undecided anyway.
"""
from __future__ import annotations

import sys
from pathlib import Path

from train.cli import ArgumentParser, interrupts_in_one_line, one_line_errors, output_file, positive_int

interrupts_in_one_line(__name__)  # before the heavy imports

from .calibration import SYNTHETIC, CalibrationError, input_batches, load_images
from .precision import (DEFAULT_MAX_PROB_DIFF, DEFAULT_MIN_IOU, DEFAULT_OVERFLOW_LIMIT, PrecisionError,
                        default_output, islands_path, load_source, make_fp16, naming, progress_bar, write_fp16)


@one_line_errors(ValueError, OSError)
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m export.fp16", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="FP32 ONNX from export.onnx (with its sidecar)")
    parser.add_argument("--out", type=Path, help="mixed-precision ONNX (default MODEL.fp16.onnx)")
    parser.add_argument("--islands", type=Path, help="island list JSON (default OUT as .islands.json)")
    parser.add_argument("--data", default=SYNTHETIC,
                        help="calibration images: a dataset folder (Tp/, Gt/) or JSON list, or 'synthetic'")
    parser.add_argument("--calib", type=positive_int, default=16, help="number of calibration images (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed for synthetic images")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_MAX_PROB_DIFF,
                        help=f"max |prob diff| vs FP32 (default {DEFAULT_MAX_PROB_DIFF:g})")
    parser.add_argument("--min-iou", type=float, default=DEFAULT_MIN_IOU,
                        help=f"min mask IoU vs FP32 on decided pixels (default {DEFAULT_MIN_IOU:g})")
    parser.add_argument("--overflow-limit", type=float, default=DEFAULT_OVERFLOW_LIMIT,
                        help=f"max |activation| allowed in FP16 (default {DEFAULT_OVERFLOW_LIMIT:g})")
    parser.add_argument("--max-rounds", type=int, default=8, help="measured island-growing rounds (default 8)")
    args = parser.parse_args(argv)
    out = output_file(args.out or default_output(args.model, "fp16"), suffix=".onnx")
    islands_file = output_file(args.islands or islands_path(out), "--islands", suffix=".json")
    try:
        model, side = load_source(args.model)
        images = load_images(args.data, args.calib, size=side.preprocess.size[0], seed=args.seed)
        batches = input_batches(images, side.preprocess)
        result = make_fp16(model, batches, threshold=side.threshold, max_prob_diff=args.tolerance,
                           min_iou=args.min_iou, overflow_limit=args.overflow_limit, max_rounds=args.max_rounds,
                           progress=progress_bar)
        write_fp16(result, args.model, side, out, calibration=str(args.data), images=len(images),
                   max_prob_diff=args.tolerance, min_iou=args.min_iou, islands_file=islands_file)
    except (PrecisionError, CalibrationError) as err:
        print(f"error: {naming(args.model, err)}", file=sys.stderr)
        return 1
    isl = result.islands
    layers = isl.tensorrt10_layers()
    print(f"wrote {out}, its sidecar and {islands_file}")
    print(f"calibration: {len(images)} image(s) from {args.data}; largest run-time activation "
          f"{result.max_activation:.4g} (limit {args.overflow_limit:g}); over the limit: {len(result.overflowing)}")
    print(f"FP32 islands: {len(isl.nodes)} of {result.nodes} nodes "
          f"({', '.join(f'{k} {v}' for k, v in sorted(isl.by_reason().items()))}); "
          f"{len(layers)} TensorRT 10 layer constraint(s); {len(result.rounds)} check(s)")
    print(f"FP16 storage vs FP32: {result.agreement.describe()}")
    print(f"mixed ONNX on onnxruntime CPU vs FP32: {result.cpu_agreement.describe()}")
    print(f"tolerance: max |prob diff| <= {args.tolerance:g}, decided-mask IoU >= {args.min_iou:g}: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

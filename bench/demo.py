"""``python -m bench.demo``: the whole path on built-in defaults, no dataset, GPU or download.

Generates synthetic forgeries (``train.synth``: splices, copy-moves and removals of the
photos scikit-image ships, plus authentic copies), trains the model's small configuration
on them for a few minutes on the CPU (``train.trainer``), exports the best checkpoint to
ONNX with the rewrites, checks the graph and parity, predicts held-out generated images
with the torch-free runtime and scores them against the all-zero and all-one masks,
profiles params and MACs of the paper-size model against the paper, times the exported
model on the runtime against PyTorch eager (``bench.quick``), and prints one summary
table. Everything lands in ``--out`` (default ``demo-out/``): the training run (``run/``,
with ``curves.png``), the ONNX model and sidecar, ``heldout_predictions.png`` and one
mask / overlay PNG per held-out image in ``heldout/``.
"""
from __future__ import annotations

from train.cli import interrupts_in_one_line, one_line_errors

interrupts_in_one_line(__name__)  # before the heavy imports

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from export.exporters import DEFAULT_EXPORTER, EXPORTERS
from export.onnx import ExportError, export_model
from runtime import Predictor
from runtime.io import load_image, save_png
from runtime.overlay import overlay
from train.config import TrainConfig
from train.data import load_pair, read_samples
from train.metrics import PixelMetrics
from train.models import get_spec
from train.synth import generate
from train.trainer import Trainer

from .profile import format_profile, profile
from .quick import quick_benchmark


@dataclass(frozen=True)
class DemoTraining:
    """Sizes of the demo's synthetic data and training run."""

    train: int
    val: int
    test: int
    epochs: int
    batch_size: int
    lr: float = 1e-3  # a tiny model from scratch: 10x the papers' fine-tuning rate


# About 300 optimizer steps at 64 px, 3-5 minutes on one CPU core; --small only smoke-tests the path.
FULL = DemoTraining(train=320, val=48, test=48, epochs=15, batch_size=16)
SMALL = DemoTraining(train=16, val=4, test=6, epochs=1, batch_size=4)


def demo_image(size: int = 320, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A generated test picture: smooth colour gradients with texture, and a pasted
    ellipse from a differently-noised copy (a crude splice). Returns (uint8 HxWx3, mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([0.5 + 0.4 * np.sin(6 * xx + 2 * yy), 0.5 + 0.4 * np.cos(4 * yy), 0.4 + 0.3 * xx * yy], -1)
    base += rng.normal(0, 0.02, base.shape)
    donor = base[::-1, ::-1] + rng.normal(0, 0.08, base.shape)
    cy, cx, ry, rx = size * 0.45, size * 0.55, size * 0.18, size * 0.25
    mask = ((yy * size - cy) / ry) ** 2 + ((xx * size - cx) / rx) ** 2 <= 1.0
    image = np.where(mask[..., None], donor, base)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), mask


def train_stage(model: str, out: Path, plan: DemoTraining) -> tuple[Path, Path, dict]:
    """Generate train / validation / held-out test sets (disjoint index ranges of one
    seed), train the small configuration; returns (best checkpoint, test set, summary)."""
    size = get_spec(model).small_size
    data = out / "data"
    for folder in (data, out / "run"):  # the demo's own outputs from an earlier run
        shutil.rmtree(folder, ignore_errors=True)
    generate(data / "train", plan.train, size=size, seed=0, start=0, progress=False)
    generate(data / "val", plan.val, size=size, seed=0, start=plan.train, progress=False)
    generate(data / "test", plan.test, size=size, seed=0, start=plan.train + plan.val, progress=False)
    config = TrainConfig(model=model, data=str(data / "train"), val=str(data / "val"), out=str(out / "run"),
                         small=True, epochs=plan.epochs, batch_size=plan.batch_size, lr=plan.lr, workers=0,
                         threads=1, ckpt_every=0, log_every=5)
    trainer = Trainer(config)
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    return out / "run" / "best.pt", data / "test", summary


def _enlarge(image: np.ndarray, side: int) -> np.ndarray:
    """Nearest-neighbour upscaling by a whole factor so the longer side reaches ``side``."""
    factor = max(1, side // max(image.shape[:2]))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def predict_heldout(onnx_path: Path, test_dir: Path, out: Path, grid_rows: int = 6, tile: int = 192) -> dict:
    """Runtime predictions on the held-out set: per-image pixel F1 at 0.5 of the model and
    of the all-zero / all-one masks, mask + overlay PNGs, and a grid of forged examples
    (image | ground truth | prediction overlay)."""
    predictor = Predictor(onnx_path)
    scores, zeros, ones = PixelMetrics(), PixelMetrics(), PixelMetrics()
    rows = []
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    for sample in read_samples(test_dir / "data.json"):
        image = load_image(sample.image)
        _, truth = load_pair(sample)
        pred = predictor.predict(image)
        scores.update(pred.prob, truth)
        zeros.update(np.zeros_like(pred.prob), truth)
        ones.update(np.ones_like(pred.prob), truth)
        save_png(out / "heldout" / f"{sample.image.stem}_mask.png", pred.mask)
        shown = overlay(image, pred.mask)
        save_png(out / "heldout" / f"{sample.image.stem}_overlay.png", shown)
        if truth.any() and len(rows) < grid_rows:
            tiles = [image, np.repeat(truth[..., None] * np.uint8(255), 3, -1), shown]
            rows.append(np.concatenate([_enlarge(t, tile) for t in tiles], axis=1))
    if rows:
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
        save_png(out / "heldout_predictions.png", np.concatenate(rows, axis=0))
    return {"f1": scores.result()["per_image"]["f1"], "f1_dataset": scores.result()["dataset"]["f1"],
            "zero": zeros.result()["per_image"]["f1"], "one": ones.result()["per_image"]["f1"],
            "images": scores.forged_images + scores.authentic_images, "forged": scores.forged_images}


@one_line_errors(ValueError, OSError)  # Ctrl-C: one line, exit 130; an unknown --model etc.: one line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="m2sformer")
    parser.add_argument("--out", default="demo-out", help="output folder")
    parser.add_argument("--small", action="store_true",
                        help="a few training steps and the small profile (fast; for the tests)")
    parser.add_argument("--exporter", choices=EXPORTERS, default=DEFAULT_EXPORTER,
                        help=f"ONNX exporter (default {DEFAULT_EXPORTER}; see export.exporters)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str]] = []
    steps = tqdm(total=5, desc="demo", unit="step", file=sys.stderr)

    t0 = time.perf_counter()
    steps.set_postfix_str("synthetic data + training")
    plan = SMALL if args.small else FULL
    ckpt, test_dir, summary = train_stage(args.model, out, plan)
    rows.append(("train", f"{args.model} small, {plan.train} synthetic images at {get_spec(args.model).small_size} "
                 f"px, {summary['steps']} steps; best validation F1 {summary['best_val_f1']:.3f}",
                 f"{summary['seconds']:.0f} s"))
    steps.update()

    steps.set_postfix_str("export + checks")
    try:
        res = export_model(args.model, out / f"{args.model}.onnx", small=True, checkpoint=ckpt, exporter=args.exporter)
    except ExportError as err:
        steps.close()
        print(f"error: {err}", file=sys.stderr)
        return 1
    rows += [("export", f"{res.onnx_path} ({res.onnx_path.stat().st_size / 2**20:.1f} MiB, trained weights)",
              f"{res.seconds:.1f} s"),
             ("graph", f"{args.exporter} exporter, opset {res.lint.opset}, {sum(res.lint.op_counts.values())} nodes, "
              f"{res.lint.attention_patterns} attention patterns, lint ok", ""),
             ("parity", f"max |prob diff| {res.parity.max_abs_prob:.1e} (tol {res.parity.tolerance:g})",
              "pass" if res.parity.passed else "FAIL")]
    steps.update()

    steps.set_postfix_str("runtime predict (held-out)")
    t = time.perf_counter()
    held = predict_heldout(res.onnx_path, test_dir, out)
    rows.append(("predict", f"{held['images']} held-out images ({held['forged']} forged) with the runtime: "
                 f"pixel F1@0.5 {held['f1']:.3f} (all-zero {held['zero']:.3f}, all-one {held['one']:.3f})",
                 f"{time.perf_counter() - t:.1f} s"))
    steps.update()

    steps.set_postfix_str("profile")
    t = time.perf_counter()
    prof = profile(args.model, small=args.small)
    rows.append(("profile", f"{prof.params_m:.2f} M params, {prof.gmacs_fvcore:.2f} GMACs (fvcore), "
                 f"{prof.gmacs_torch:.2f} GMACs (torch) at {prof.input_size}", f"{time.perf_counter() - t:.1f} s"))
    steps.update()

    steps.set_postfix_str("benchmark")
    rows += quick_benchmark(res.onnx_path, args.model, small=True)
    steps.update()
    steps.close()

    print()
    print(format_profile(prof))
    print()
    width = max(len(r[1]) for r in rows)
    print(f"{'step':<8}  {'result':<{width}}  time/status")
    print(f"{'-' * 8}  {'-' * width}  -----------")
    for step, result, extra in rows:
        print(f"{step:<8}  {result:<{width}}  {extra}")
    print(f"\nheld-out pixel F1 at 0.5 (mean over {held['forged']} forged images): {held['f1']:.3f}, against "
          f"{held['zero']:.3f} for an all-zero mask and {held['one']:.3f} for an all-one mask; "
          f"training curves in {out / 'run' / 'curves.png'}")
    print(f"all steps passed in {time.perf_counter() - t0:.1f} s; outputs in {out}/ (run/, ONNX + sidecar, "
          "heldout_predictions.png, heldout/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

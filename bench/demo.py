"""``python -m bench.demo``: the whole path on built-in defaults, no dataset, GPU or download.

Builds M2SFormer (random init) at its paper size, exports it to ONNX with the rewrites,
checks the graph and parity, predicts a generated image with the torch-free runtime
(mask and overlay PNGs), profiles params and MACs against the paper, and prints one
summary table. Everything lands in ``--out`` (default ``demo-out/``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from export.onnx import ExportError, export_model
from runtime import Predictor
from runtime.io import save_png
from runtime.overlay import overlay

from .profile import format_profile, profile


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="m2sformer")
    parser.add_argument("--out", default="demo-out", help="output folder")
    parser.add_argument("--small", action="store_true", help="the small test configuration (fast)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str]] = []
    steps = tqdm(total=3, desc="demo", unit="step", file=sys.stderr)

    t0 = time.perf_counter()
    steps.set_postfix_str("export + checks")
    try:
        res = export_model(args.model, out / f"{args.model}.onnx", small=args.small)
    except ExportError as err:
        steps.close()
        print(f"error: {err}", file=sys.stderr)
        return 1
    rows += [("export", f"{res.onnx_path} ({res.onnx_path.stat().st_size / 2**20:.1f} MiB)",
              f"{res.seconds:.1f} s"),
             ("graph", f"opset {res.lint.opset}, {sum(res.lint.op_counts.values())} nodes, "
              f"{res.lint.attention_patterns} attention patterns, lint ok", ""),
             ("parity", f"max |prob diff| {res.parity.max_abs_prob:.1e} (tol {res.parity.tolerance:g})",
              "pass" if res.parity.passed else "FAIL")]
    steps.update()

    steps.set_postfix_str("runtime predict")
    t = time.perf_counter()
    image, truth = demo_image()
    save_png(out / "demo_image.png", image)
    pred = Predictor(res.onnx_path).predict(image)
    save_png(out / "demo_mask.png", pred.mask)
    save_png(out / "demo_overlay.png", overlay(image, pred.mask))
    rows.append(("predict", f"{image.shape[1]}x{image.shape[0]} image -> score {pred.score:.3f}, "
                 f"{100 * pred.tampered_fraction:.1f}% px flagged (random weights)", f"{time.perf_counter() - t:.1f} s"))
    steps.update()

    steps.set_postfix_str("profile")
    t = time.perf_counter()
    prof = profile(args.model, small=args.small)
    rows.append(("profile", f"{prof.params_m:.2f} M params, {prof.gmacs_fvcore:.2f} GMACs (fvcore), "
                 f"{prof.gmacs_torch:.2f} GMACs (torch) at {prof.input_size}", f"{time.perf_counter() - t:.1f} s"))
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
    print(f"\nall steps passed in {time.perf_counter() - t0:.1f} s; outputs in {out}/ "
          "(ONNX + sidecar, demo_image.png, demo_mask.png, demo_overlay.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: predict tamper masks for images with an exported model.

    python -m runtime.predict MODEL IMAGE... --out DIR [--threshold T] [--json]

For each IMAGE writes ``DIR/<stem>_mask.png`` (0/255 grayscale) and
``DIR/<stem>_overlay.png`` (the image with the mask tinted red and outlined),
each written atomically, and prints ``path  score=0.123  tampered_px=4.5%``
(or, with ``--json``, one JSON list of results).

The model and every image are checked before anything is written: if any
input is unusable, the command prints ``error: <message>`` on stderr, writes no
output at all, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .errors import RuntimeInputError, one_line
from .io import load_image, save_png
from .overlay import overlay
from .predictor import Predictor

EXIT_INPUT_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m runtime.predict",
        description="Predict image-manipulation masks with an exported ONNX model.")
    ap.add_argument("model", type=Path, help="model artifact (.onnx) with its .json sidecar next to it")
    ap.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="input image files")
    ap.add_argument("--out", type=Path, required=True, metavar="DIR",
                    help="output directory for <stem>_mask.png and <stem>_overlay.png")
    ap.add_argument("--threshold", type=float, default=None, metavar="T",
                    help="mask threshold in [0, 1] (default: the sidecar's, normally 0.5)")
    ap.add_argument("--provider", action="append", dest="providers", metavar="NAME",
                    help="onnxruntime execution provider to use (repeatable; default: best available)")
    ap.add_argument("--json", action="store_true", help="print results as a JSON list")
    return ap


def _check_outputs(images: Sequence[Path], out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RuntimeInputError(f"output {out} exists and is not a directory")
    seen: dict[str, Path] = {}
    for img in images:
        if img.stem in seen:
            raise RuntimeInputError(f"inputs {seen[img.stem]} and {img} would both write "
                                    f"{img.stem}_mask.png")
        seen[img.stem] = img


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
            raise RuntimeInputError(f"--threshold must be in [0, 1], got {args.threshold}")
        predictor = Predictor(args.model, providers=args.providers, threshold=args.threshold)
        _check_outputs(args.images, args.out)
        for img in args.images:  # decode every image once before writing anything
            load_image(img)
        args.out.mkdir(parents=True, exist_ok=True)

        from tqdm import tqdm

        results = []
        bar = tqdm(args.images, unit="img", disable=True if len(args.images) < 2 else None,
                   file=sys.stderr)
        for img in bar:
            rgb = load_image(img)
            pred = predictor.predict(rgb)
            mask_path = args.out / f"{img.stem}_mask.png"
            overlay_path = args.out / f"{img.stem}_overlay.png"
            vis = overlay(rgb, pred.mask)
            save_png(mask_path, pred.mask)
            save_png(overlay_path, vis)
            row = {"image": str(img), "score": pred.score,
                   "tampered_fraction": pred.tampered_fraction,
                   "height": pred.size[0], "width": pred.size[1],
                   "mask": str(mask_path), "overlay": str(overlay_path)}
            results.append(row)
            if not args.json:
                bar.write(f"{img}  score={pred.score:.3f}  "
                          f"tampered_px={100.0 * pred.tampered_fraction:.1f}%", file=sys.stdout)
    except RuntimeInputError as e:
        print("error: " + one_line(e), file=sys.stderr)
        return EXIT_INPUT_ERROR
    except OSError as e:  # the output folder: permissions, a full disk
        print(f"error: cannot write to {args.out}: {one_line(e)}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()

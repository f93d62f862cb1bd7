"""``python -m train.synth --out DIR --n N``: write a synthetic forgery dataset.

Splices, copy-moves, removals and authentic copies of the photos scikit-image ships
(``train.data.forge``), deterministic under ``--seed``, in the IMDL-BenCo folder layout
(``DIR/Tp``, ``DIR/Gt``) and its JSON list form (``DIR/data.json``: ``[[image, mask],
...]``, ``"Negative"`` for authentic images), plus ``DIR/meta.json`` (generator settings
and what was done to each image). The folder appears only when complete.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .cli import ArgumentParser, interrupts_in_one_line, one_line_errors, output_folder, positive_int

interrupts_in_one_line(__name__)  # before the heavy imports

from tqdm import tqdm

from .data.folders import DataError, write_dataset
from .data.forge import KINDS, ForgeryConfig, ForgeryGenerator


def generate(out: str | Path, n: int, size: int = 256, seed: int = 0, start: int = 0,
             weights: tuple[float, ...] | None = None, progress: bool = True, **config) -> Path:
    """Write samples ``start .. start + n - 1`` of the generator (seed ``seed``) to ``out``.
    Different ``start`` ranges of one seed never overlap, which gives held-out splits."""
    if n < 1:
        raise DataError(f"--n must be at least 1, got {n}")
    cfg = ForgeryConfig(size=size, **({"weights": tuple(weights)} if weights else {}), **config)
    gen = ForgeryGenerator(cfg, seed=seed)
    records = []

    def items():
        for i in tqdm(range(start, start + n), desc=f"synth {Path(out).name}", unit="img", disable=not progress,
                      file=sys.stderr):
            f = gen.sample(i)
            records.append({"name": f"{i:06d}_{f.kind}", "kind": f.kind, **f.ops})
            yield f"{i:06d}_{f.kind}", f.image, f.mask, bool(f.label)

    write_dataset(out, items(), meta={"generator": gen.describe(), "start": start, "n": n, "samples": records})
    return Path(out)


@one_line_errors(ValueError, OSError)
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m train.synth", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="new output folder")
    ap.add_argument("--n", type=positive_int, required=True, help="number of images")
    ap.add_argument("--size", type=positive_int, default=256, help="side of the square crops, px (default 256)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first sample index (disjoint ranges = disjoint splits)")
    ap.add_argument("--weights", type=float, nargs=len(KINDS), metavar="W",
                    help=f"relative frequency of {', '.join(KINDS)} (default "
                         f"{' '.join(str(w) for w in ForgeryConfig().weights)})")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    output_folder(args.out, new=True)
    out = generate(args.out, args.n, args.size, args.seed, args.start, args.weights, progress=not args.quiet)
    print(f"wrote {args.n} images to {out}/ (Tp/, Gt/, data.json, meta.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench.prepare``: build, before a benchmark run, what the run reuses from its
cache, so that ``pytest bench/``'s time goes to measuring (``make bench`` runs both).

For each selected model: the onnxruntime exports (batch 1 at the paper size, the dynamic-batch
export of the batch sweep, one per named variant), ``runtime.tune``'s choice for the paper-size
export (each candidate backend x precision timed in its own process and checked against
onnxruntime FP32 on the calibration images; the ``auto`` backend runs what it chose; the tuner's
progress is shown), the profiles (params, fvcore MACs) at every size the report compares, the
profiles of M2SFormer's encoder ablation, and torch.compile's kernels (one compile in a fresh
process fills the inductor cache). Everything is keyed like the
run keys it (code fingerprint, options, size, batch; a tune file is current while the tuner
says so for this machine and file), so an edit to ``train``, ``export`` or ``runtime`` makes it
build again; what is current is skipped. Prints one line per item with
its seconds; the first failure stops with a one-line error and a non-zero exit.
"""
from __future__ import annotations

from train.cli import interrupts_in_one_line, one_line_errors

interrupts_in_one_line(__name__)  # before the heavy imports

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

_USER_INDUCTOR_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")  # before anything imports torch


@dataclass(frozen=True)
class Item:
    label: str
    run: Callable[[], object]


def plan(models: list[str], cache: Path, small: bool = False, compile: bool = True,
         exporter: str | None = None, tune: bool = True, subjects: list | None = None,
         core: bool = False) -> list[Item]:
    """The work items for ``models``, in run order (``exporter`` None: export.onnx's default).
    ``subjects`` (``bench.subject.Subject``): what the core suites measure of the models they
    name, instead of the paper build and size (as ``pytest bench/ --subjects``); ``core``: only
    what the core suites need (the subjects' exports, tuning, profiles and compiled kernels and
    the papers' profile points), not the optional points' (dynamic-batch export, variants,
    encoder ablation)."""
    from bench.artifacts import CALIBRATION_IMAGES, cached_export, code_fingerprint
    from bench.papers import M2SFORMER_BACKBONES, profile_points
    from bench.subject import Subject, cached_profile, is_default_variant
    from train.models import get_spec

    fingerprint = code_fingerprint()
    items: list[Item] = []

    def export(subject: Subject, batch: int | str = 1) -> Item:
        return Item(f"export {subject.label} {subject.size}px batch {batch}",
                    lambda: cached_export(subject.model, cache, size=subject.size, batch=batch, small=subject.small,
                                          variant=subject.variant, options=dict(subject.options) or None,
                                          fingerprint=fingerprint, exporter=exporter))

    def profile(subject: Subject) -> Item:
        return Item(f"profile {subject.label} {subject.size}px", lambda: cached_profile(subject, cache, fingerprint))

    models, chosen = Subject.measured(models, list(subjects or ()), small=small)
    for model in models:
        base = Subject.paper(model, small=small)
        measured = [s for s in chosen if s.model == model]
        for subject in measured:
            items.append(export(subject))
            if tune:  # the export item returns the cached file at once now
                label = (f"tune {subject.label} {subject.size}px (runtime.tune, up to {CALIBRATION_IMAGES} "
                         "calibration images)")
                items.append(Item(label, lambda made=items[-1], subject=subject: _tune(subject, made.run(), cache)))
        if not core:  # the optional points' exports
            items.append(export(base, "dynamic"))
            for variant in sorted(get_spec(model).variants):
                if not is_default_variant(model, variant):
                    items.append(export(Subject.paper(model, small=small, variant=variant)))
        sizes = [base.size] if small else sorted({s for m, s in profile_points() if m == model})
        points = [Subject(model, s, 1, small) for s in sizes]  # test_profile's points (a core suite)
        items += [profile(s) for s in points] + [profile(s) for s in measured if s != base and s not in points]
        if model == "m2sformer" and not core:
            items += [profile(Subject(model, base.size, 1, small, None, (("encoder", row.encoder),)))
                      for row in M2SFORMER_BACKBONES.rows if row.encoder]
        if compile:
            items += [_compile(s) for s in measured]
    return items


def _compile(subject) -> Item:
    """One torch.compile of ``subject`` in a fresh process: fills the inductor cache the run reuses."""
    from bench.memory import measure_backend

    return Item(f"torch.compile {subject.label} {subject.size}px (fresh process, inductor cache)",
                lambda: measure_backend(subject, "compile"))


def _tune(subject, path: Path, cache: Path) -> dict:
    """``runtime.tune`` of ``subject``'s export unless current, its rounds planned from one
    onnxruntime call (the first, so an over-estimate) made only when it tunes."""
    from bench.artifacts import cached_tune, calibration_folder
    from bench.backends import make_runner

    def estimate() -> float:
        call = make_runner("ort", subject, path).call
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    return cached_tune(path, calibration_folder(cache, subject.size), echo=True, estimate=estimate)


@one_line_errors()  # Ctrl-C: one line, exit 130 (this tool reports its own errors)
def main(argv: list[str] | None = None) -> int:
    from bench.artifacts import DEFAULT_CACHE, use_inductor_cache

    parser = argparse.ArgumentParser(prog="python -m bench.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma list of registered models (default: all)")
    parser.add_argument("--small", action="store_true", help="the small test configurations")
    parser.add_argument("--subjects", default="", help="comma list of MODEL[VARIANT]@SIZE the core suites measure "
                        "instead of those models' paper build and size (as pytest bench/ --subjects)")
    parser.add_argument("--core", action="store_true",
                        help="only what the core suites need, not the optional points (variants, sweeps, ablation)")
    parser.add_argument("--bench-cache", type=Path, default=DEFAULT_CACHE, help="cache folder (as pytest bench/)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile's cache cold")
    parser.add_argument("--no-tune", action="store_true",
                        help="leave the exports untuned (the run tunes them for `auto` where it needs to)")
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"),
                        help="ONNX exporter of the exports (default: export.onnx's; as pytest bench/ --exporter)")
    args = parser.parse_args(argv)

    from train.models import list_models

    known = list_models()
    models = [m.strip().lower() for m in args.models.split(",") if m.strip()] or known
    unknown = [m for m in models if m not in known]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; registered: {', '.join(known)}")
    from bench.subject import Subject

    try:
        subjects = Subject.parse_list(args.subjects, small=args.small)
    except ValueError as err:
        parser.error(f"--subjects: {err}")
    models = Subject.measured(models, subjects, small=args.small)[0]
    args.bench_cache.mkdir(parents=True, exist_ok=True)
    use_inductor_cache(args.bench_cache, _USER_INDUCTOR_CACHE)

    from tqdm import tqdm

    items = plan(models, args.bench_cache, small=args.small, compile=not args.no_compile, exporter=args.exporter,
                 tune=not args.no_tune, subjects=subjects, core=args.core)
    start = time.perf_counter()
    bar = tqdm(items, desc="prepare", unit="item", file=sys.stderr)
    for item in bar:
        bar.set_postfix_str(item.label[:60])
        t = time.perf_counter()
        try:
            item.run()
        except (OSError, RuntimeError, ValueError, KeyError) as err:  # incl. ExportFailed, MeasureError, torch errors
            bar.close()
            print(f"error: {item.label}: {' '.join(str(err).split())}", file=sys.stderr)
            return 1
        tqdm.write(f"{time.perf_counter() - t:7.1f} s  {item.label}", file=sys.stdout)
    print(f"prepared {len(items)} item(s) for {', '.join(models)} in {time.perf_counter() - start:.0f} s "
          f"(cache {args.bench_cache})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

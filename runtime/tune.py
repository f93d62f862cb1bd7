"""``python -m runtime.tune MODEL.onnx``: pick the fastest backend x precision for this
machine whose masks stay within a budget of FP32 onnxruntime's, and write the choice beside
the model (``MODEL.onnx.tune.json``) for ``backend="auto"``.

    python -m runtime.tune MODEL.onnx [--images DIR] [--max-flip 1e-3] [--rounds 10]
                                      [--threads N] [--candidates onnxruntime:fp32,openvino:bf16]
                                      [--no-mixed]

Candidates: onnxruntime FP32 (the reference) and, where OpenVINO is installed, OpenVINO at
every precision its CPU plugin runs here (FP32, and BF16 / FP16 on CPUs that have them).
Each candidate runs in its own child process, one after the other, so no two libraries'
thread pools ever share the cores: the child opens the backend, runs every calibration image
(batch 1) and then times ``--rounds`` calls on the first one after ``--warmup`` untimed calls
(p50 is the figure). Each candidate's probability maps are compared with the reference's
(``runtime.agreement``: mask flip rate, mask IoU, max prob diff); a candidate whose flip
rate is above ``--max-flip`` is out of the budget, and the fastest in it is the choice.

Mixed precision: where OpenVINO BF16 (or FP16) misses the budget, child processes look for a
split of the graph in two that stays within it (``--no-mixed`` skips this): the longest BF16
head with an FP32 tail, and the longest BF16 tail behind an FP32 head (the sensitive part of
a model may be its output end, or its input end: noise filters, DCT). The cut points tried
sit where little data crosses (``openvino_segments.crossing_bytes``: the cheapest cut in each
sixteenth of the compute ops, never inside an attention block; none that leaves less than a
sixteenth in BF16), and each search bisects over them on the calibration images, assuming a
longer FP32 part flips no more pixels; a split found is timed and checked like any candidate
(``fp32_ranges`` in its row and, when it wins, in the choice).

Calibration images: ``--images DIR`` (image files, searched recursively), else the
project's synthetic forgeries (``python -m train.synth``, run as a separate command, which
needs the full kit; the runtime alone asks for ``--images``). They are preprocessed as the
sidecar says.

The tuning file records the machine's fingerprint (``runtime.machine``: CPU name and
generation, flags, cores, library versions) and the model's sha256; ``load_tuned`` (and so
``backend="auto"``) ignores it, saying why, on any other machine or file. It is written
atomically with the user's umask; a bad input is one line on stderr, exit 2, and nothing
written.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .atomic import atomic_write_bytes
from .errors import RuntimeInputError, one_line

__all__ = ["tune", "tune_path", "load_tuned", "default_candidates", "SCHEMA", "MAX_FLIP"]

SCHEMA = "iml-tune"
VERSION = 1
MAX_FLIP = 1e-3
REFERENCE = ("onnxruntime", "fp32")
EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130


def tune_path(model: str | os.PathLike) -> Path:
    """Where the tuning of ``model`` lives: ``MODEL.onnx`` -> ``MODEL.onnx.tune.json``."""
    p = Path(model)
    return p.with_name(p.name + ".tune.json")


def default_candidates() -> list[tuple[str, str]]:
    """(backend, precision) pairs this machine can run: onnxruntime FP32 first (the
    reference), then OpenVINO at each precision its CPU plugin lists."""
    out = [REFERENCE]
    from .backends import openvino_backend

    if openvino_backend.available():
        out += [("openvino", p) for p in openvino_backend.supported_precisions()]
    return out


def parse_candidates(text: str) -> list[tuple[str, str]]:
    """``onnxruntime:fp32,openvino:bf16`` -> pairs; the reference is always first."""
    from .backends import BACKENDS, PRECISIONS

    pairs = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        backend, _, precision = item.partition(":")
        if backend not in BACKENDS[:2] or precision not in PRECISIONS:
            raise RuntimeInputError(f"--candidates: {item!r} is not BACKEND:PRECISION with BACKEND one of "
                                    f"onnxruntime, openvino and PRECISION one of {', '.join(PRECISIONS)}")
        pairs.append((backend, precision))
    return [REFERENCE] + [p for p in dict.fromkeys(pairs) if p != REFERENCE]


def _machine_mismatch(recorded: dict[str, Any], here: dict[str, Any]) -> str | None:
    for key in sorted(set(recorded) | set(here)):
        if recorded.get(key) != here.get(key):
            return f"{key} {recorded.get(key)!r} there, {here.get(key)!r} here"
    return None


def load_tuned(model: str | os.PathLike, sha256: str | None = None) -> tuple[dict[str, Any] | None, str]:
    """(the tuning of ``model``, why it applies) or (None, why not): absent, unreadable, for
    another file (``sha256``: the model's digest if known, else computed), or written on a
    machine with another fingerprint."""
    from .machine import fingerprint
    from .sidecar import sha256_file

    path = tune_path(model)
    if not path.is_file():
        return None, f"no tuning ({path.name}): onnxruntime FP32"
    try:
        data = json.loads(path.read_text())
        choice = data["choice"]
        ok = (data.get("schema") == SCHEMA and data.get("version") == VERSION and isinstance(choice, dict)
              and {"backend", "precision"} <= set(choice))
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        return None, f"{path} is not a tuning file of this version: onnxruntime FP32"
    digest = sha256 or sha256_file(model)
    if data.get("model_sha256") != digest:
        return None, f"{path.name} was tuned for another file (sha256 differs): onnxruntime FP32"
    mismatch = _machine_mismatch(data.get("machine", {}), fingerprint())
    if mismatch:
        return None, f"{path.name} was tuned on another machine ({mismatch}): onnxruntime FP32"
    return data, f"{path.name}: fastest within the mask budget on this machine"


# --------------------------------------------------------------------------- calibration images


def synthetic_images(folder: Path, n: int, size: int) -> Path:
    """``n`` synthetic forgeries of ``size`` px written by the full kit's ``python -m
    train.synth`` (a separate command: the runtime imports none of the kit)."""
    if importlib.util.find_spec("train") is None or importlib.util.find_spec("skimage") is None:
        raise RuntimeInputError("no --images given and the full kit's synthetic forgeries (python -m train.synth) "
                                "are not installed here: pass --images DIR of calibration photos")
    out = folder / "synth"
    cmd = [sys.executable, "-m", "train.synth", "--out", str(out), "--n", str(n), "--size", str(size), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeInputError(f"python -m train.synth failed: {one_line(done.stderr or done.stdout)}")
    return out / "Tp"


def calibration_batch(images: Sequence[Path], sidecar) -> np.ndarray:
    """The preprocessed (N, 3, H, W) float32 batch of ``images``."""
    from .io import load_image
    from .preprocess import preprocess

    pre = sidecar.preprocess
    return preprocess([load_image(p) for p in images], pre.size, pre.mean, pre.std, pre.scale)


# --------------------------------------------------------------------------- the child


def _worker(spec_path: str) -> int:
    """Child process: run one candidate on the calibration batch and time it; writes
    ``outputs.npz`` and ``result.json`` into the spec's folder."""
    import time

    from .backends import Choice, open_choice

    spec = json.loads(Path(spec_path).read_text())
    folder = Path(spec["folder"])
    batch = np.load(spec["batch"])
    t = time.perf_counter()
    ranges = tuple(tuple(r) for r in spec.get("fp32_ranges") or ()) or None
    backend = open_choice(spec["model"], Choice(spec["backend"], spec["precision"], "explicit", "tune", ranges),
                          threads=spec["threads"])
    open_s = time.perf_counter() - t
    outs = [backend.run(batch[k : k + 1]) for k in range(batch.shape[0])]
    np.savez(folder / "outputs.npz", prob=np.concatenate([o["prob"] for o in outs]),
             score=np.concatenate([o["score"] for o in outs]))
    first = batch[:1]
    for _ in range(spec["warmup"]):
        backend.run(first)
    times = []
    for _ in range(spec["rounds"]):
        t = time.perf_counter()
        backend.run(first)
        times.append(time.perf_counter() - t)
    result = {"open_s": open_s, "times_s": times, "p50_s": float(np.percentile(times, 50)),
              "settings": backend.settings}
    (folder / "result.json").write_text(json.dumps(result))
    return 0


SHAPES = {"fp32-tail": "BF16 head, FP32 tail", "fp32-head": "FP32 head, BF16 tail"}


def _search_worker(spec_path: str) -> int:
    """Child process: bisect over the cut points for the longest reduced-precision part whose
    masks stay within the budget, in the spec's shape ("fp32-tail": the ops from the cut on
    stay FP32; "fp32-head": those before it); writes ``search.json`` (the cut, or null, and
    every probe)."""
    from .agreement import agreement
    from .backends import openvino_segments as seg
    from .backends.openvino_backend import OpenVinoBackend, shared_core

    spec = json.loads(Path(spec_path).read_text())
    batch = np.load(spec["batch"])
    with np.load(spec["reference"]) as z:
        reference = {"prob": z["prob"], "score": z["score"]}
    parts = 16
    n_ops, cuts = cut_points(seg.fold(shared_core().read_model(spec["model"])), parts)
    tail = spec["shape"] == "fp32-tail"
    # a reduced-precision part shorter than one sixteenth of the ops is not worth a second model
    cuts = [c for c in cuts if (c >= n_ops / parts if tail else c <= n_ops - n_ops / parts)]
    probes: list[dict[str, Any]] = []

    def fits(cut: int) -> bool:
        ranges = [(cut, n_ops)] if tail else [(0, cut)]
        backend = OpenVinoBackend(spec["model"], precision=spec["precision"], threads=spec["threads"],
                                  fp32_ranges=ranges)
        outs = [backend.run(batch[k : k + 1]) for k in range(batch.shape[0])]
        got = {key: np.concatenate([o[key] for o in outs]) for key in ("prob", "score")}
        agree = agreement([reference], [got], threshold=spec["threshold"])
        probes.append({"cut": cut, "flipped": agree.flipped, "decided_flipped": agree.decided_flipped})
        return agree.flipped <= spec["max_flip"]

    # a longer FP32 part flips no more pixels (assumed): fp32-tail wants the latest cut that
    # fits, fp32-head the earliest; lo never fits, hi always does (sentinels past the ends)
    lo, hi = -1, len(cuts)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if tail:
            lo, hi = (mid, hi) if fits(cuts[mid]) else (lo, mid)
        else:
            lo, hi = (lo, mid) if fits(cuts[mid]) else (mid, hi)
    found = (cuts[lo] if lo >= 0 else None) if tail else (cuts[hi] if hi < len(cuts) else None)
    result = {"shape": spec["shape"], "compute_ops": n_ops, "cuts": cuts, "probes": probes, "cut": found,
              "fp32_ranges": None if found is None else [[found, n_ops]] if tail else [[0, found]]}
    (Path(spec["folder"]) / "search.json").write_text(json.dumps(result))
    return 0


def cut_points(model, parts: int = 16) -> tuple[int, list[int]]:
    """(compute ops, candidate cuts) of a folded model (``openvino_segments.fold``): in each of
    ``parts`` equal runs of the compute ops, the position where the fewest bytes cross (the
    first such); never 0 (no BF16 head at all)."""
    from .backends import openvino_segments as seg

    crossing = seg.crossing_bytes(model)
    n_ops = len(crossing) - 1
    cuts = []
    for a, b in seg.even_segments(n_ops, parts):
        a = max(a, 1)
        if a < b:
            cuts.append(a + int(np.argmin(crossing[a:b])))
    return n_ops, sorted(set(cuts))


def _child(mode: str, spec: dict[str, Any], folder: Path) -> str | None:
    """Run ``python -m runtime.tune MODE spec.json`` in a child; its last stderr line if it failed."""
    spec_file = folder / "spec.json"
    spec_file.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "runtime.tune", mode, str(spec_file)], capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).strip().splitlines() if ln.strip()]
        return one_line(lines[-1] if lines else f"exit status {done.returncode}")
    return None


def _run_search(model: Path, precision: str, shape: str, batch_file: Path, reference_file: Path, folder: Path, *,
                threads: int | None, max_flip: float, threshold: float) -> dict[str, Any]:
    folder.mkdir()
    spec = {"model": str(model), "precision": precision, "shape": shape, "batch": str(batch_file),
            "reference": str(reference_file),
            "folder": str(folder), "threads": threads, "max_flip": max_flip, "threshold": threshold}
    error = _child("--search", spec, folder)
    return {"error": error, "shape": shape} if error else json.loads((folder / "search.json").read_text())


def _run_candidate(model: Path, backend: str, precision: str, batch_file: Path, folder: Path, *,
                   threads: int | None, rounds: int, warmup: int,
                   fp32_ranges: list | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    folder.mkdir()
    spec = {"model": str(model), "backend": backend, "precision": precision, "batch": str(batch_file),
            "folder": str(folder), "threads": threads, "rounds": rounds, "warmup": warmup, "fp32_ranges": fp32_ranges}
    error = _child("--worker", spec, folder)
    if error:
        return {"error": error}, {}
    with np.load(folder / "outputs.npz") as z:
        outputs = {"prob": z["prob"], "score": z["score"]}
    return json.loads((folder / "result.json").read_text()), outputs


# --------------------------------------------------------------------------- tuning


def tune(model: str | os.PathLike, images: str | os.PathLike | None = None, *, max_flip: float = MAX_FLIP,
         rounds: int = 10, warmup: int = 2, threads: int | None = None, n_images: int = 8,
         candidates: Sequence[tuple[str, str]] | None = None, progress: bool = True,
         write: bool = True, mixed: bool = True) -> dict[str, Any]:
    """Time and check every candidate on ``model`` (see the module's docstring); returns the
    tuning record and, with ``write``, writes it to ``tune_path(model)``."""
    from .agreement import agreement
    from .io import image_files
    from .machine import fingerprint
    from .predictor import checked_sidecar
    from .progress import Progress

    model = Path(model)
    if model.suffix.lower() != ".onnx":
        raise RuntimeInputError(f"model {model}: runtime.tune tunes ONNX files (a TensorRT engine runs on TensorRT)")
    sidecar = checked_sidecar(model)
    if not 0 <= max_flip < 1:
        raise RuntimeInputError(f"--max-flip: must be in [0, 1), got {max_flip}")
    if rounds < 1 or warmup < 0 or n_images < 1:
        raise RuntimeInputError(f"--rounds and --n-images must be >= 1 and --warmup >= 0, got {rounds}, "
                                f"{n_images}, {warmup}")
    pairs = list(candidates) if candidates is not None else default_candidates()
    if not pairs or tuple(pairs[0]) != REFERENCE:
        pairs = [REFERENCE] + [tuple(p) for p in pairs if tuple(p) != REFERENCE]
    with tempfile.TemporaryDirectory(prefix="iml-tune-") as tmp:
        work = Path(tmp)
        if images is None:
            files = image_files(synthetic_images(work, n_images, int(sidecar.preprocess.size[0])))
            source = f"synthetic forgeries (python -m train.synth --n {n_images} --seed 0)"
        else:
            if not Path(images).is_dir():
                raise RuntimeInputError(f"--images {images}: not a folder")
            files = image_files(images)[:n_images]
            if not files:
                raise RuntimeInputError(f"--images {images}: no image files in it or below")
            source = str(images)
        batch_file = work / "batch.npy"
        np.save(batch_file, calibration_batch(files, sidecar))
        rows: list[dict[str, Any]] = []
        reference: dict[str, np.ndarray] | None = None
        reference_file = work / "reference.npz"
        threshold = float(sidecar.threshold)

        def measure(k: int, backend: str, precision: str, fp32_ranges: list | None = None, **extra) -> dict[str, Any]:
            nonlocal reference
            result, outputs = _run_candidate(model, backend, precision, batch_file, work / f"c{k}", threads=threads,
                                             rounds=rounds, warmup=warmup, fp32_ranges=fp32_ranges)
            row: dict[str, Any] = {"backend": backend, "precision": precision, **extra, **result}
            if fp32_ranges:
                row["fp32_ranges"] = fp32_ranges
            if "error" in result:
                if (backend, precision) == REFERENCE:
                    raise RuntimeInputError(f"model {model}: onnxruntime FP32 failed: {result['error']}")
                row["ok"] = False
            else:
                if reference is None:
                    reference = outputs
                    np.savez(reference_file, **outputs)
                agree = agreement([reference], [outputs], threshold=threshold)
                row.update(flipped=agree.flipped, decided_flipped=agree.decided_flipped,
                           mask_iou=agree.mask_iou, max_abs_prob=agree.max_abs_prob, ok=agree.flipped <= max_flip)
            rows.append(row)
            if progress:
                bar.write(_describe(row))
            return row

        bar = Progress(pairs, total=len(pairs), desc="tune", unit="backend")
        try:
            for k, (backend, precision) in enumerate(bar):
                measure(k, backend, precision)
            missed = [r["precision"] for r in rows if r["backend"] == "openvino" and r["precision"] in ("bf16", "fp16")
                      and "error" not in r and not r["ok"]] if mixed else []
            searches = [(precision, shape) for precision in missed for shape in SHAPES]
            for k, (precision, shape) in enumerate(searches, start=len(pairs)):
                found = _run_search(model, precision, shape, batch_file, reference_file, work / f"s{k}",
                                    threads=threads, max_flip=max_flip, threshold=threshold)
                if found.get("cut") is None:
                    rows.append({"backend": "openvino", "precision": precision, "ok": False, "search": found,
                                 "error": found.get("error") or f"no split ({SHAPES[shape]}) within the budget"})
                    if progress:
                        bar.write(_describe(rows[-1]))
                    continue
                measure(k, "openvino", precision, found["fp32_ranges"], search=found)
        finally:
            bar.close()
    best = min((r for r in rows if r["ok"]), key=lambda r: r["p50_s"])
    record = {
        "schema": SCHEMA, "version": VERSION, "model": model.name, "model_sha256": sidecar.artifact.sha256,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": fingerprint(), "threads": threads, "budget": {"max_flip": max_flip},
        "calibration": {"images": len(files), "source": source, "rounds": rounds, "warmup": warmup},
        "candidates": rows, "choice": {"backend": best["backend"], "precision": best["precision"],
                                       **({"fp32_ranges": best["fp32_ranges"]} if best.get("fp32_ranges") else {})},
    }
    if write:
        atomic_write_bytes(tune_path(model), (json.dumps(record, indent=2) + "\n").encode())
    return record


def _describe(row: dict[str, Any]) -> str:
    name = f"{row['backend']} {row['precision']}"
    if row.get("fp32_ranges") or row.get("search"):
        name += "".join(f" +fp32 ops {a}-{b}" for a, b in row.get("fp32_ranges") or []) or " split"
    if "error" in row:
        return f"{name:22s} failed: {row['error']}"
    verdict = "ok" if row["ok"] else "over the mask budget"
    return (f"{name:22s} p50 {1e3 * row['p50_s']:9.1f} ms  flipped {row['flipped']:.2e} "
            f"(decided {row['decided_flipped']:.2e})  "
            f"IoU {row['mask_iou']:.4f}  max prob diff {row['max_abs_prob']:.2e}  {verdict}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"] and len(argv) == 2:
        return _worker(argv[1])
    if argv[:1] == ["--search"] and len(argv) == 2:
        return _search_worker(argv[1])
    ap = argparse.ArgumentParser(prog="python -m runtime.tune", description=__doc__.splitlines()[0].strip("`"))
    ap.add_argument("model", type=Path, help="an exported ONNX file with its .json sidecar")
    ap.add_argument("--images", type=Path, default=None, metavar="DIR",
                    help="calibration images (default: synthetic forgeries from python -m train.synth)")
    ap.add_argument("--n-images", type=int, default=8, metavar="N", help="calibration images used (default 8)")
    ap.add_argument("--max-flip", type=float, default=MAX_FLIP, metavar="F",
                    help=f"largest share of mask pixels allowed to differ from FP32 onnxruntime (default {MAX_FLIP:g})")
    ap.add_argument("--rounds", type=int, default=10, help="timed calls per candidate (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls before them (default 2)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the physical cores)")
    ap.add_argument("--candidates", default=None, metavar="LIST",
                    help="BACKEND:PRECISION,... (default: every one this machine runs)")
    ap.add_argument("--no-mixed", action="store_true",
                    help="skip the search for a BF16 head with an FP32 tail where plain BF16 misses the budget")
    ap.add_argument("--dry-run", action="store_true", help="print the result, write nothing")
    args = ap.parse_args(argv)
    try:
        if args.threads is not None and args.threads < 1:
            raise RuntimeInputError(f"--threads: must be >= 1, got {args.threads}")
        pairs = parse_candidates(args.candidates) if args.candidates else None
        record = tune(args.model, args.images, max_flip=args.max_flip, rounds=args.rounds, warmup=args.warmup,
                      threads=args.threads, n_images=args.n_images, candidates=pairs, write=not args.dry_run,
                      mixed=not args.no_mixed)
    except RuntimeInputError as e:
        print("error: " + one_line(e), file=sys.stderr)
        return EXIT_INPUT_ERROR
    except OSError as e:
        print(f"error: {tune_path(args.model)}: cannot write ({one_line(e)})", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    choice = record["choice"]
    where = "not written (--dry-run)" if args.dry_run else f"written to {tune_path(args.model)}"
    kept = "".join(f" with ops {a}-{b} in fp32" for a, b in choice.get("fp32_ranges") or [])
    print(f"choice: {choice['backend']} {choice['precision']}{kept} ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

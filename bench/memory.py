"""Memory and start-up cost, each measured in a fresh process so nothing of the benchmark
session (other models, torch for an onnxruntime measurement) is counted.

- ``measure_backend``: a child process (``python -m bench.memory --subject JSON --backend B``)
  imports only what the backend needs, builds the runner, makes ``calls`` inferences and
  reports its peak resident set (``VmHWM``, see ``_maxrss_mib``) after import, after
  set-up and after inference, the import / set-up / first-call seconds, and on CUDA torch's
  peak allocated memory. The parent adds the wall time from spawn to exit (cold start).
- ``import_cost``: seconds and peak RSS of importing modules in a fresh interpreter
  (the runtime's ``runtime.predictor`` + ``onnxruntime`` + ``jsonschema`` versus ``torch``).
- ``installed_mib``: disk footprint of distributions and everything they require (installed
  files as listed in their metadata), e.g. the runtime's (onnxruntime, numpy, pillow, jsonschema) versus
  torch's.

This module imports only the standard library at the top: the child must stay lean.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_MODULES = ("runtime.predictor", "onnxruntime", "jsonschema")
RUNTIME_DISTRIBUTIONS = ("onnxruntime", "numpy", "pillow", "jsonschema")
TORCH_MODULES = ("torch",)
TORCH_DISTRIBUTIONS = ("torch",)
FRESH_PROCESS_S = 10.0  # what a fresh measuring process costs besides its inferences (imports, build), roughly


class MeasureError(RuntimeError):
    """A child process failed; the message is one line naming what ran."""


def _maxrss_mib() -> float:
    """Peak resident set of this process, MiB. On Linux ``VmHWM`` of /proc/self/status: unlike
    ``ru_maxrss``, which execve carries over from the parent (a child of a 1 GiB pytest
    process would report 1 GiB), it starts afresh with the new program."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    scale = 1.0 if sys.platform == "darwin" else 1024.0  # macOS reports bytes, others KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _child(subject_json: str, backend: str, onnx: str | None, calls: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    if backend.startswith("ov") or backend == "auto":
        import runtime.predictor  # noqa: F401
        import openvino  # noqa: F401
    elif backend.startswith("ort") or backend.startswith("tensorrt"):
        import runtime.predictor  # noqa: F401
        import onnxruntime  # noqa: F401
    else:
        import torch  # noqa: F401
        import train.models  # noqa: F401
    import_s = time.perf_counter() - t0
    rss_import = _maxrss_mib()

    from .backends import cuda_peak_mib, make_runner
    from .subject import Subject

    t = time.perf_counter()
    runner = make_runner(backend, Subject.from_dict(json.loads(subject_json)), onnx)
    setup_s = time.perf_counter() - t
    rss_setup = _maxrss_mib()
    t = time.perf_counter()
    for _ in range(calls):
        runner.call()
        if runner.sync:
            runner.sync()
    first_s = time.perf_counter() - t
    out = {"backend": backend, "import_s": import_s, "setup_s": setup_s, "first_s": first_s, "calls": calls,
           "rss_import_mib": rss_import, "rss_setup_mib": rss_setup, "peak_rss_mib": _maxrss_mib(),
           "torch_loaded": "torch" in sys.modules, **{k: v for k, v in runner.info.items() if k != "artifact"}}
    if backend.endswith("cuda"):
        out["cuda_peak_mib"] = cuda_peak_mib()
    return out


def _run_child(args: list[str], what: str, timeout: float | None) -> tuple[dict[str, Any], float]:
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MeasureError(f"{what}: fresh process timed out after {timeout:g} s") from None
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise MeasureError(f"{what}: fresh process failed (exit {proc.returncode}): {tail}")
    return json.loads(lines[-1]), wall


def measure_backend(subject, backend: str, onnx: str | Path | None = None, calls: int = 1,
                    timeout: float | None = 1800) -> dict[str, Any]:
    """Peak memory and start-up times of ``backend`` on ``subject`` in a fresh process."""
    args = ["-m", "bench.memory", "--subject", json.dumps(subject.as_dict()), "--backend", backend,
            "--calls", str(calls)] + (["--onnx", str(onnx)] if onnx else [])
    record, wall = _run_child(args, f"memory of {subject.label} on {backend}", timeout)
    return {**record, "process_wall_s": wall}


def import_cost(modules: tuple[str, ...], timeout: float = 300) -> dict[str, Any]:
    """Seconds to import ``modules`` in a fresh interpreter and the peak RSS afterwards."""
    code = ("import json, sys, time; t = time.perf_counter(); " + "; ".join(f"import {m}" for m in modules)
            + "; s = time.perf_counter() - t; from bench.memory import _maxrss_mib; "
            "print(json.dumps({'import_s': s, 'peak_rss_mib': _maxrss_mib(), 'torch_loaded': 'torch' in sys.modules}))")
    record, wall = _run_child(["-c", code], f"import {', '.join(modules)}", timeout)
    return {**record, "modules": list(modules), "process_wall_s": wall}


def _requirements(dist) -> list[str]:
    from packaging.requirements import Requirement

    names = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(req.name)
    return names


def installed_mib(distributions: tuple[str, ...]) -> dict[str, Any]:
    """Disk size (MiB) of ``distributions`` and their installed requirements, recursively."""
    from importlib.metadata import PackageNotFoundError, distribution

    seen: dict[str, float] = {}
    todo = list(distributions)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        size = 0
        for f in dist.files or []:
            p = Path(dist.locate_file(f))
            if p.is_file():
                size += p.stat().st_size
        seen[name] = size / 2**20
        todo.extend(_requirements(dist))
    return {"roots": list(distributions), "total_mib": sum(seen.values()), "distributions": seen}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--subject", required=True, help="JSON of bench.subject.Subject.as_dict()")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--onnx", help="artifact for onnxruntime / TensorRT backends")
    parser.add_argument("--calls", type=int, default=1, help="inferences to run (default 1)")
    args = parser.parse_args(argv)
    try:
        json.loads(args.subject)
    except ValueError:
        parser.error("--subject is not valid JSON")
    print(json.dumps(_child(args.subject, args.backend, args.onnx, args.calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

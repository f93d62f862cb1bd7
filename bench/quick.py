"""A short benchmark for the end of the demo: one exported model, PyTorch eager versus the
runtime's onnxruntime session, batch 1 at the artifact's size, a few calibrated rounds.

``quick_benchmark(onnx_path, model_name, small)`` returns rows ``(step, result, extra)`` in
the demo's summary-table form; the last row points to the full suites and report
(``make bench``). Same machinery as the suites (``bench.backends``, ``bench.timing``).
"""
from __future__ import annotations

from pathlib import Path

from .backends import make_runner
from .subject import Subject
from .timing import Plan, percentiles, time_calls, warm_up

QUICK_PLAN = Plan(target_s=3.0, min_rounds=3, max_rounds=20, warmup=1)


def quick_benchmark(onnx_path: str | Path, model_name: str, small: bool = False,
                    plan: Plan = QUICK_PLAN) -> list[tuple[str, str, str]]:
    from runtime.sidecar import Sidecar, sidecar_path

    side = Sidecar.load(sidecar_path(Path(onnx_path)))
    subject = Subject(model_name, int(side.preprocess.size[0]), 1, small)
    p50 = {}
    rounds = {}
    for backend in ("torch", "ort"):
        runner = make_runner(backend, subject, onnx_path if backend == "ort" else None)
        warm = warm_up(runner.call, plan.warmup)
        times = time_calls(runner.call, plan.rounds(warm[-1]))
        p50[backend] = percentiles(times)["p50"]
        rounds[backend] = len(times)
    speedup = p50["torch"] / p50["ort"]
    return [
        ("bench", f"batch 1 at {subject.size}: PyTorch eager p50 {p50['torch'] * 1e3:.1f} ms, onnxruntime p50 "
                  f"{p50['ort'] * 1e3:.1f} ms ({speedup:.2f}x)",
         f"{rounds['torch']}+{rounds['ort']} rounds"),
        ("report", "all models and backends, memory, papers' tables: make bench -> bench-out/report.md", ""),
    ]

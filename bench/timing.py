"""Latency measurement shared by the pytest-benchmark suites and the demo's quick benchmark:
warm-up, rounds calibrated from the warm-up time, and p50/p90/p99 of the timed rounds.

Per-call times range from milliseconds (small models) to a minute (TransForensics' C2 branch
at 512 x 512 on two cores), so rounds are planned per benchmark: ``target_s`` seconds of
timed work, at least ``min_rounds`` and at most ``max_rounds`` rounds of one call each
(pytest-benchmark's pedantic mode), after ``warmup`` untimed calls; a call slower than
``slow_s`` gets a fixed ``slow_rounds`` instead (a minute-long inference cannot have many
rounds in a 20-minute run). Percentiles are linear
interpolations (numpy's default); with few rounds p99 is close to the maximum, and the
report prints the round count beside it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Plan:
    target_s: float = 5.0
    min_rounds: int = 3
    max_rounds: int = 30
    warmup: int = 1
    slow_s: float = float("inf")
    slow_rounds: int = 2

    def rounds(self, seconds_per_call: float) -> int:
        """Rounds that fill ``target_s`` at ``seconds_per_call``, clamped to the limits, or
        ``slow_rounds`` for a call of ``slow_s`` or more."""
        if self.min_rounds < 1 or self.max_rounds < self.min_rounds or self.slow_rounds < 1:
            raise ValueError(f"need 1 <= min_rounds <= max_rounds and slow_rounds >= 1, got "
                             f"{self.min_rounds}, {self.max_rounds}, {self.slow_rounds}")
        if seconds_per_call >= self.slow_s:
            return self.slow_rounds
        if seconds_per_call <= 0:
            return self.max_rounds
        return max(self.min_rounds, min(self.max_rounds, math.ceil(self.target_s / seconds_per_call)))


def percentiles(times: Sequence[float]) -> dict[str, float]:
    """{"p50": ..., "p90": ..., "p99": ...} of ``times`` (seconds)."""
    if len(times) == 0:
        raise ValueError("no timings")
    values = np.percentile(np.asarray(times, dtype=np.float64), PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, values)}


def warm_up(fn: Callable[[], Any], calls: int, sync: Callable[[], None] | None = None) -> list[float]:
    """Run ``fn`` ``calls`` times (at least once) and return each call's seconds; the
    last one calibrates the rounds (the first carries one-off costs: allocation, compilation)."""
    return time_calls(fn, max(1, calls), sync)


def time_calls(fn: Callable[[], Any], rounds: int, sync: Callable[[], None] | None = None) -> list[float]:
    """Seconds of each of ``rounds`` calls (no pytest needed: the demo's quick benchmark)."""
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        out.append(time.perf_counter() - t)
    return out


def summary(times: Sequence[float], first_s: float | None, **info: Any) -> dict[str, Any]:
    """What every latency record carries (seconds)."""
    return {"rounds": len(times), "first_s": first_s, "mean_s": float(np.mean(times)), "min_s": float(np.min(times)),
            **{f"{k}_s": v for k, v in percentiles(times).items()}, "times_s": [float(t) for t in times], **info}


def run_benchmark(benchmark, fn: Callable[[], Any], plan: Plan, sync: Callable[[], None] | None = None,
                  first_s: float | None = None, warm_s: float | None = None) -> dict[str, Any]:
    """Warm up, plan the rounds, time them with pytest-benchmark's pedantic mode and put the
    summary (percentiles, raw times) into ``benchmark.extra_info``; returns the summary.
    ``first_s`` is the time of an earlier first call (e.g. compilation) when the caller made it;
    ``warm_s`` (seconds of one call) says the callee is warm already (a reused session): no
    warm-up then, the rounds are planned from it."""
    warm = [] if warm_s is not None else warm_up(fn, plan.warmup, sync)
    rounds = plan.rounds(warm_s if warm_s is not None else warm[-1])
    target = (lambda: (fn(), sync())) if sync else fn
    benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=0)
    stats = getattr(benchmark, "stats", None)
    times = list(stats.stats.data) if stats is not None else (warm[-1:] or [warm_s])  # --benchmark-disable
    first = first_s if first_s is not None else (warm[0] if warm else None)
    info = summary(times, first, warmup=len(warm))
    benchmark.extra_info.update(info)
    return info

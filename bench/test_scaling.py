"""Cost versus input size: MACs at every ``--sizes`` point (torch's counter on the meta device,
so even TransForensics' C2 branch at 1024 x 1024 is counted without running it) and eager
latency where one inference is estimated within ``--point-limit``."""
import pytest

from bench.subject import Subject
from bench.timing import run_benchmark


def test_macs_vs_size(store, model):
    base = Subject.paper(model, small=store.small)
    points = []
    for size in sorted(set(store.sizes) | {base.size}):
        subject = Subject(model, size, 1, base.small)
        try:
            points.append({"size": size, "gmacs_torch": store.gmacs(subject)})
        except Exception as err:  # a model may reject a size (patch grids); the report says which
            points.append({"size": size, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"})
    counted = [p for p in points if "gmacs_torch" in p]
    assert counted, f"{model}: no size could be counted: {points}"
    assert all(a["gmacs_torch"] < b["gmacs_torch"] for a, b in zip(counted, counted[1:])), points
    store.record("scaling", model=model, small=base.small, paper_size=base.size, points=points)


def test_latency_vs_size(benchmark, store, model, scaling_size):
    base = Subject.paper(model, small=store.small)
    if scaling_size == base.size:
        pytest.skip(f"{model} at its paper size {base.size} is measured by test_latency")
    subject = Subject(model, scaling_size, 1, base.small)
    store.skip_if_costly(subject, "torch", f"{model} at {scaling_size} x {scaling_size}")
    store.within_budget(f"{model} eager latency at {scaling_size} x {scaling_size}", store.timed_s(subject, "torch"))
    runner = store.runner(subject, "torch")
    benchmark.group = f"scaling {model}"
    info = run_benchmark(benchmark, runner.call, store.plan)
    benchmark.extra_info.update(kind="latency", suite="scaling", backend="torch", **subject.as_dict(), **runner.info,
                                gmacs_torch=store.gmacs(subject))
    assert info["p50_s"] > 0

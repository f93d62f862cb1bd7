"""Batch sweep at the paper size: eager PyTorch and onnxruntime (a dynamic-batch export) at each
``--batches`` size; points whose single inference is estimated above ``--point-limit`` skip."""
from bench.subject import Subject
from bench.timing import run_benchmark

BACKENDS = ("torch", "ort")


def test_batch(benchmark, store, model, backend, sweep_batch):
    base = Subject.paper(model, small=store.small)
    subject = Subject(model, base.size, sweep_batch, base.small)
    store.skip_if_costly(subject, backend, f"{subject.label} batch {sweep_batch} on {backend}")
    store.within_budget(f"{subject.label} batch {sweep_batch} on {backend}",
                        (store.export_s(base, "dynamic") if backend == "ort" else 0.0) + store.timed_s(subject, backend))
    path = store.export(base, batch="dynamic") if backend == "ort" else None
    runner = store.runner(subject, backend, path)
    benchmark.group = f"batch sweep {subject.label}"
    info = run_benchmark(benchmark, runner.call, store.plan, runner.sync, runner.first_s)
    benchmark.extra_info.update(kind="latency", suite="batch", backend=backend, **subject.as_dict(), **runner.info,
                                images_per_s=sweep_batch / info["p50_s"])
    assert info["p50_s"] > 0

"""Named variants of a model at its paper size (TransForensics' output branches C2..C5: the
paper's Table 5), eager and onnxruntime latency plus fresh-process peak memory per variant.
A variant that builds exactly the default model (C2) is measured by the latency and memory
suites; it is recorded as an alias here and skipped."""
import pytest

from bench.memory import FRESH_PROCESS_S, measure_backend
from bench.subject import is_default_variant
from bench.timing import run_benchmark

BACKENDS = ("torch", "ort")


def _measured_here(store, subject):
    if is_default_variant(subject.model, subject.variant):
        store.record("variant_alias", model=subject.model, variant=subject.variant, size=subject.size,
                     small=subject.small)
        pytest.skip(f"{subject.label} is the default build of {subject.model}: measured by test_latency/test_memory")


def test_variant_latency(benchmark, store, variant_subject, backend):
    _measured_here(store, variant_subject)
    export_s = store.export_s(variant_subject) if backend == "ort" else 0.0
    store.within_budget(f"{variant_subject.label} latency on {backend}",
                        export_s + store.timed_s(variant_subject, backend))
    runner = store.runner(variant_subject, backend)
    benchmark.group = f"variants {variant_subject.model}"
    info = run_benchmark(benchmark, runner.call, store.plan, runner.sync, runner.first_s, runner.warm_s)
    store.ran(runner, variant_subject, info["p50_s"])
    benchmark.extra_info.update(kind="latency", suite="variant", backend=backend, **variant_subject.as_dict(),
                                **runner.info, gmacs_torch=store.gmacs(variant_subject))
    assert info["p50_s"] > 0


def test_variant_memory(store, variant_subject, backend):
    _measured_here(store, variant_subject)
    store.within_budget(f"{variant_subject.label} memory on {backend}",
                        store.estimate_s(variant_subject, backend) + FRESH_PROCESS_S)
    store.close_session()
    rec = measure_backend(variant_subject, backend, store.path_for(variant_subject, backend))
    assert rec["peak_rss_mib"] > 0
    store.record("memory", suite="variant", **variant_subject.as_dict(), **rec)

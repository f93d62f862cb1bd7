"""Named variants of a model at its paper size (TransForensics' output branches C2..C5: the
paper's Table 5), eager and onnxruntime latency plus fresh-process peak memory per variant.
A variant that builds exactly the default model (C2) is measured by the latency and memory
suites; it is recorded as an alias here and skipped."""
import inspect

import pytest

from bench.memory import measure_backend
from bench.timing import run_benchmark

BACKENDS = ("torch", "ort")


def _default_build(subject) -> bool:
    from train.models import get_spec

    spec = get_spec(subject.model)
    defaults = {k: p.default for k, p in inspect.signature(spec.builder).parameters.items()}
    return all(defaults.get(k, object()) == v for k, v in spec.variants[subject.variant].items())


def _measured_here(store, subject):
    if _default_build(subject):
        store.record("variant_alias", model=subject.model, variant=subject.variant, size=subject.size,
                     small=subject.small)
        pytest.skip(f"{subject.label} is the default build of {subject.model}: measured by test_latency/test_memory")


def test_variant_latency(benchmark, store, variant_subject, backend):
    _measured_here(store, variant_subject)
    runner = store.runner(variant_subject, backend)
    benchmark.group = f"variants {variant_subject.model}"
    info = run_benchmark(benchmark, runner.call, store.plan, runner.sync, runner.first_s, runner.warm_s)
    store.ran(runner, variant_subject, info["p50_s"])
    benchmark.extra_info.update(kind="latency", suite="variant", backend=backend, **variant_subject.as_dict(),
                                **runner.info, gmacs_torch=store.gmacs(variant_subject))
    assert info["p50_s"] > 0


def test_variant_memory(store, variant_subject, backend):
    _measured_here(store, variant_subject)
    store.close_session()
    rec = measure_backend(variant_subject, backend, store.path_for(variant_subject, backend))
    assert rec["peak_rss_mib"] > 0
    store.record("memory", **variant_subject.as_dict(), **rec)

"""Latency of every model at its paper input size (or the subjects ``--subjects`` names), batch 1, on every backend available:
calibrated rounds after warm-up, p50/p90/p99 in the benchmark's extra_info. ``ort-prepost``
(the runtime end to end on a photo) is an optional point: for a model whose inference is
estimated above ``--point-limit`` the pre/post-processing is a rounding error of the ``ort``
figure, and its rounds would cost minutes. ``ov``, ``ov-bf16`` and ``auto`` also record, after
their timed rounds, how their masks agree with onnxruntime FP32's on the calibration images
(extra_info "agreement"); ``auto`` records the runtime's choice."""
from bench.backends import AGREEMENT_BACKENDS, DESCRIPTIONS, PRECISIONS, cuda_peak_mib
from bench.timing import run_benchmark


def test_latency(benchmark, store, subject, backend):
    if backend == "ort-prepost":
        store.skip_if_costly(subject, "ort", f"{subject.label} end to end through runtime.Predictor")
    runner = store.runner(subject, backend)
    benchmark.group = f"latency {subject.label} {subject.size}px b{subject.batch}"
    try:
        info = run_benchmark(benchmark, runner.call, store.plan, runner.sync, runner.first_s, runner.warm_s)
    finally:
        if backend == "compile":  # drop dynamo's caches (and the model they reference) before the next model
            import torch._dynamo

            torch._dynamo.reset()
    prof = store.profile(subject)
    precision = PRECISIONS.get(backend) or runner.info.get("settings", {}).get("precision")  # auto: its choice's
    benchmark.extra_info.update(kind="latency", suite="paper", backend=backend,
                                description=DESCRIPTIONS.get(backend, backend),
                                precision=precision, **subject.as_dict(), **runner.info,
                                params_m=prof["params_m"], gmacs_fvcore=prof["gmacs_fvcore"],
                                gmacs_torch=prof["gmacs_torch"])
    if backend == "torch-cuda":
        benchmark.extra_info["cuda_peak_mib"] = cuda_peak_mib()
    if backend in AGREEMENT_BACKENDS:  # untimed: after the rounds
        benchmark.extra_info["agreement"] = store.agreement(subject, runner)
    store.latency[(subject, backend)] = info["p50_s"]
    store.ran(runner, subject, info["p50_s"])
    assert info["rounds"] >= 1 and info["p50_s"] > 0

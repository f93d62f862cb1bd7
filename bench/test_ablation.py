"""M2SFormer's encoder ablation (its Table 7): the whole model with the encoder swapped among
ResNet-50, Res2Net-50, ResNeSt-50, MiT-B2 and PVT-v2-B2: params, MACs and eager latency at 256."""
import pytest

from bench.papers import M2SFORMER_BACKBONES
from bench.subject import Subject
from bench.timing import run_benchmark

ENCODERS = [row.encoder for row in M2SFORMER_BACKBONES.rows if row.encoder]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_encoder_swap(benchmark, store, encoder):
    if "m2sformer" not in store.models:
        pytest.skip("m2sformer is not among --models")
    base = Subject.paper("m2sformer", small=store.small)
    subject = Subject(base.model, base.size, 1, base.small, None, (("encoder", encoder),))
    store.within_budget(f"m2sformer with {encoder}: profile and eager latency",
                        store.profile_s(subject) + store.timed_s(subject, "torch"))
    prof = store.profile(subject)
    store.record("ablation", **{**prof, **subject.as_dict(), "encoder": encoder})
    assert prof["params_m"] > 0
    store.skip_if_costly(subject, "torch", f"eager latency of {subject.label}")
    runner = store.runner(subject, "torch")
    benchmark.group = "m2sformer encoder ablation"
    info = run_benchmark(benchmark, runner.call, store.plan)
    benchmark.extra_info.update(kind="latency", suite="ablation", backend="torch", encoder=encoder,
                                **subject.as_dict(), **runner.info, params_m=prof["params_m"],
                                gmacs_fvcore=prof["gmacs_fvcore"])
    assert info["p50_s"] > 0

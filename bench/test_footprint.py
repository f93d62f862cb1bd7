"""What a deployment carries: the runtime's import time and installed size (onnxruntime, numpy,
pillow and their requirements) versus PyTorch's, each import in a fresh interpreter."""
import pytest

from bench.memory import (RUNTIME_DISTRIBUTIONS, RUNTIME_MODULES, TORCH_DISTRIBUTIONS, TORCH_MODULES, import_cost,
                          installed_mib)
from bench.timing import Plan, percentiles, run_benchmark

STACKS = {"runtime": (RUNTIME_MODULES, RUNTIME_DISTRIBUTIONS), "torch": (TORCH_MODULES, TORCH_DISTRIBUTIONS)}


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_import(benchmark, store, stack):
    modules, dists = STACKS[stack]
    runs = []
    benchmark.group = "import in a fresh interpreter"
    run_benchmark(benchmark, lambda: runs.append(import_cost(modules)), Plan(0.0, 3, 3, warmup=1))
    timed = runs[1:]  # the warm-up run fills the page cache
    import_s = [r["import_s"] for r in timed]
    disk = installed_mib(dists)
    benchmark.extra_info.update(kind="import", stack=stack, modules=list(modules),
                                **{f"import_{k}": v for k, v in percentiles(import_s).items()},
                                peak_rss_mib=max(r["peak_rss_mib"] for r in timed), installed_mib=disk["total_mib"],
                                distributions=disk["distributions"])
    store.record("import", stack=stack, modules=list(modules), import_s=import_s,
                 peak_rss_mib=max(r["peak_rss_mib"] for r in timed), installed_mib=disk["total_mib"],
                 distributions=disk["distributions"])
    assert disk["total_mib"] > 0
    if stack == "runtime":
        assert not any(r["torch_loaded"] for r in timed), "importing the runtime loaded torch"

"""The yardstick: this machine's FP32 matmul throughput, measured first in every run."""
from bench.timing import run_benchmark


def test_matmul_peak(benchmark, store):
    import torch

    peak = store.peak()
    assert peak.gflops > 0 and peak.threads == torch.get_num_threads()
    a = torch.rand(peak.n, peak.n)
    b = torch.rand(peak.n, peak.n)
    with torch.inference_mode():
        info = run_benchmark(benchmark, lambda: a @ b, store.plan)
    benchmark.extra_info.update(kind="peak", gflops=peak.gflops, n=peak.n, threads=peak.threads)
    assert info["p50_s"] > 0

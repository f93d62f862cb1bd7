"""The yardsticks: this machine's FP32 matmul throughput, and its BF16 one where the CPU has
native BF16, measured first in every run (and again at its end)."""
from bench.timing import run_benchmark


def test_matmul_peak(benchmark, store):
    import torch

    peak = store.peak()
    assert peak.gflops > 0 and peak.threads == torch.get_num_threads() and peak.precision == "fp32"
    a = torch.rand(peak.n, peak.n)
    b = torch.rand(peak.n, peak.n)
    with torch.inference_mode():
        info = run_benchmark(benchmark, lambda: a @ b, store.plan)
    benchmark.extra_info.update(kind="peak", precision="fp32", gflops=peak.gflops, n=peak.n, threads=peak.threads)
    assert info["p50_s"] > 0


def test_matmul_peak_bf16(benchmark, store):
    import torch

    peak = store.peak_bf16()  # skips, saying why, on a CPU without native BF16
    assert peak.gflops > 0 and peak.precision == "bf16"
    a = torch.rand(peak.n, peak.n, dtype=torch.bfloat16)
    b = torch.rand(peak.n, peak.n, dtype=torch.bfloat16)
    with torch.inference_mode():
        info = run_benchmark(benchmark, lambda: a @ b, store.plan)
    benchmark.extra_info.update(kind="peak", precision="bf16", gflops=peak.gflops, n=peak.n, threads=peak.threads,
                                source=peak.source)
    assert info["p50_s"] > 0

"""``python -m bench.peak``: this machine's FP32 matrix-multiply throughput, measured with
torch in the same run as the models, as the yardstick for each model's achieved GFLOP/s.

Peak = best over ``repeats`` timings of ``calls`` square ``n x n`` matmuls (2 n^3 FLOPs
each) with torch's default threads; the best, not the mean, because the yardstick is what
the BLAS reaches when nothing else interferes. A model's fraction is
``2 * GMACs / latency / peak``.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Peak:
    gflops: float
    n: int
    calls: int
    repeats: int
    threads: int
    device: str = "cpu"


def matmul_peak(n: int = 2048, calls: int = 4, repeats: int = 5, device: str = "cpu") -> Peak:
    import torch

    gen = torch.Generator().manual_seed(0)
    a = torch.rand(n, n, generator=gen).to(device)
    b = torch.rand(n, n, generator=gen).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        a @ b  # warm-up: thread pool and BLAS buffers
        sync()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(calls):
                a @ b
            sync()
            best = min(best, time.perf_counter() - t)
    return Peak(2.0 * n**3 * calls / best / 1e9, n, calls, repeats, torch.get_num_threads(), device)


def achieved_fraction(gmacs: float, seconds: float, peak_gflops: float) -> float:
    """Achieved FP32 throughput (2 FLOPs per MAC) as a fraction of the measured peak."""
    return 2.0 * gmacs / seconds / peak_gflops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peak", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048, help="matrix size")
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if min(args.n, args.calls, args.repeats) < 1:
        parser.error("--n, --calls and --repeats must be positive")
    peak = matmul_peak(args.n, args.calls, args.repeats)
    print(f"FP32 matmul peak: {peak.gflops:.1f} GFLOP/s ({asdict(peak)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

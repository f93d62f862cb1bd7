"""``python -m bench.peak``: this machine's FP32 matrix-multiply throughput, measured in the
same run as the models, as the yardstick for each model's achieved GFLOP/s.

A library's rate = best over ``repeats`` timings of ``calls`` square ``n x n`` matmuls (2 n^3
FLOPs each) with its default threads; the best, not the mean, because the yardstick is what
the GEMM reaches when nothing else interferes. ``machine_peak`` takes the highest rate of
torch's and onnxruntime's GEMMs at a few sizes (on a shared machine either may be the faster,
and a model run on onnxruntime is held to onnxruntime's GEMM too); a benchmark run measures it
at its start and its end and keeps the higher. A model's fraction is ``2 * GMACs / latency /
peak``.
"""
from __future__ import annotations

from train.cli import interrupts_in_one_line, one_line_errors

interrupts_in_one_line(__name__)  # before the heavy imports

import argparse
import sys
import time
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Peak:
    gflops: float
    n: int
    calls: int
    repeats: int
    threads: int
    device: str = "cpu"
    source: str = "torch"  # which library's GEMM gave ``gflops``
    samples: dict[str, float] = field(default_factory=dict)  # every rate measured, GFLOP/s


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


def ort_matmul_gflops(n: int = 2048, calls: int = 4, repeats: int = 5) -> float:
    """onnxruntime's (MLAS) FP32 GEMM rate on the CPU provider, GFLOP/s, timed like ``matmul_peak``."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    spec = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in ("a", "b", "y")]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "matmul", spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.random((n, n), dtype=np.float32), "b": rng.random((n, n), dtype=np.float32)}
    session.run(None, feeds)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            session.run(None, feeds)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 * calls / best / 1e9


def machine_peak(sizes: tuple[int, ...] = (1024, 2048), calls: int = 4, repeats: int = 5) -> Peak:
    """The highest FP32 GEMM rate of torch and onnxruntime over ``sizes`` (CPU)."""
    samples: dict[str, float] = {}
    runs: dict[str, Peak] = {}
    for n in sizes:
        runs[f"torch n={n}"] = matmul_peak(n, calls, repeats)
        samples[f"torch n={n}"] = runs[f"torch n={n}"].gflops
        samples[f"onnxruntime n={n}"] = ort_matmul_gflops(n, calls, repeats)
    best = max(samples, key=samples.get)
    n = int(best.rsplit("=", 1)[1])
    threads = runs[f"torch n={n}"].threads
    return Peak(samples[best], n, calls, repeats, threads, "cpu", best.split()[0], samples)


def achieved_fraction(gmacs: float, seconds: float, peak_gflops: float) -> float:
    """Achieved FP32 throughput (2 FLOPs per MAC) as a fraction of the measured peak."""
    return 2.0 * gmacs / seconds / peak_gflops


@one_line_errors()  # Ctrl-C: one line, exit 130 (this tool reports its own errors)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peak", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048, help="matrix size")
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if min(args.n, args.calls, args.repeats) < 1:
        parser.error("--n, --calls and --repeats must be positive")
    peak = machine_peak((args.n,), args.calls, args.repeats)
    print(f"FP32 matmul peak: {peak.gflops:.1f} GFLOP/s ({asdict(peak)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench.peak``: this machine's matrix-multiply throughput in FP32 and in BF16,
measured in the same run as the models, as the yardstick for each model's achieved GFLOP/s.

A library's rate = best over ``repeats`` timings of ``calls`` square ``n x n`` matmuls (2 n^3
FLOPs each) with its default threads; the best, not the mean, because the yardstick is what
the GEMM reaches when nothing else interferes. ``machine_peak`` takes the highest rate of the
libraries the models run on, at a few sizes (on a shared machine any may be the faster, and a
model run on onnxruntime or OpenVINO is held to that library's GEMM too):

- FP32: torch, onnxruntime (MLAS) and, where installed, OpenVINO's CPU plugin with
  ``INFERENCE_PRECISION_HINT`` f32;
- BF16: torch on bfloat16 tensors (oneDNN) and OpenVINO with ``INFERENCE_PRECISION_HINT``
  bf16 (FP32 inputs, BF16 arithmetic: what the ``ov-bf16`` backend does). Measured only on a
  CPU with native BF16 (AVX-512 BF16 or AMX-BF16, ``runtime.machine.has_bf16``): elsewhere
  both libraries fall back to emulation or FP32 and the figure would mean nothing.

A benchmark run measures both at its start and its end and keeps the higher. A model's
fraction is ``2 * GMACs / latency / peak`` against the peak of the precision it ran in.
"""
from __future__ import annotations

from train.cli import interrupts_in_one_line, one_line_errors

interrupts_in_one_line(__name__)  # before the heavy imports

import argparse
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

PRECISIONS = ("fp32", "bf16")


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
    precision: str = "fp32"


def gemm_rate(call: Callable[[], object], n: int, calls: int, repeats: int,
              sync: Callable[[], None] | None = None) -> float:
    """GFLOP/s of ``call`` (one n x n x n matmul): one warm-up call (thread pool, buffers),
    then the best of ``repeats`` timings of ``calls`` calls."""
    sync = sync or (lambda: None)
    call()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            call()
        sync()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 * calls / best / 1e9


def matmul_peak(n: int = 2048, calls: int = 4, repeats: int = 5, device: str = "cpu",
                precision: str = "fp32") -> Peak:
    """torch's GEMM rate on ``device`` in ``precision`` (fp32 or bf16 tensors)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.rand(n, n, generator=gen).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    with torch.inference_mode():
        rate = gemm_rate(lambda: a @ b, n, calls, repeats, sync)
    return Peak(rate, n, calls, repeats, torch.get_num_threads(), device, "torch", precision=precision)


def _inputs(n: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)


def ort_matmul_gflops(n: int = 2048, calls: int = 4, repeats: int = 5) -> float:
    """onnxruntime's (MLAS) FP32 GEMM rate on the CPU provider, GFLOP/s."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    spec = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in ("a", "b", "y")]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "matmul", spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a, b = _inputs(n)
    feeds = {"a": a, "b": b}
    return gemm_rate(lambda: session.run(None, feeds), n, calls, repeats)


def ov_matmul_gflops(n: int = 2048, calls: int = 4, repeats: int = 5, precision: str = "fp32") -> float:
    """OpenVINO's CPU-plugin GEMM rate, GFLOP/s: an FP32 MatMul of two inputs compiled for
    latency with ``INFERENCE_PRECISION_HINT`` f32 or bf16 (then the plugin multiplies in BF16)."""
    import openvino as ov
    import openvino.opset13 as ops

    from runtime.backends.openvino_backend import PRECISION_HINTS, shared_core

    a, b = (ops.parameter([n, n], ov.Type.f32, name=name) for name in ("a", "b"))
    model = ov.Model([ops.matmul(a, b, False, False)], [a, b], "matmul")
    compiled = shared_core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
                                                        "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    feeds = list(_inputs(n))
    return gemm_rate(lambda: request.infer(feeds), n, calls, repeats)


def machine_peak(sizes: tuple[int, ...] = (1024, 2048), calls: int = 4, repeats: int = 5,
                 precision: str = "fp32") -> Peak:
    """The highest CPU GEMM rate in ``precision`` over ``sizes`` and the libraries (module
    docstring); for bf16, a ValueError on a CPU without native BF16."""
    from bench.backends import bf16_unavailable, openvino_installed

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and bf16_unavailable():
        raise ValueError(f"no BF16 peak: {bf16_unavailable()}")
    samples: dict[str, float] = {}
    threads = 1
    for n in sizes:
        torch_peak = matmul_peak(n, calls, repeats, precision=precision)
        threads = torch_peak.threads
        samples[f"torch n={n}"] = torch_peak.gflops
        if precision == "fp32":
            samples[f"onnxruntime n={n}"] = ort_matmul_gflops(n, calls, repeats)
        if openvino_installed():
            samples[f"openvino n={n}"] = ov_matmul_gflops(n, calls, repeats, precision)
    best = max(samples, key=samples.get)
    return Peak(samples[best], int(best.rsplit("=", 1)[1]), calls, repeats, threads, "cpu", best.split()[0],
                samples, precision)


def achieved_fraction(gmacs: float, seconds: float, peak_gflops: float) -> float:
    """Achieved throughput (2 FLOPs per MAC) as a fraction of the measured peak."""
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
    fp32 = machine_peak((args.n,), args.calls, args.repeats)
    print(f"FP32 matmul peak: {fp32.gflops:.1f} GFLOP/s ({asdict(fp32)})")
    from bench.backends import bf16_unavailable

    why = bf16_unavailable()
    if why:
        print(f"BF16 matmul peak: not measured ({why})")
    else:
        bf16 = machine_peak((args.n,), args.calls, args.repeats, precision="bf16")
        print(f"BF16 matmul peak: {bf16.gflops:.1f} GFLOP/s, {bf16.gflops / fp32.gflops:.1f}x FP32 ({asdict(bf16)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

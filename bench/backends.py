"""The backends a benchmark compares, each as a ``Runner``: one call = one inference of a
``Subject`` on the same seeded input, plus what the backend reports about itself.

Core backends (CPU):
  torch        PyTorch eager FP32, ``inference_mode``
  compile      ``torch.compile`` (inductor, default mode) FP32; the first call compiles
  ort          onnxruntime FP32, CPU provider, ``session.run`` on the preprocessed batch (the export
               made for onnxruntime: ``--attention ort``, see ``bench.artifacts``)
  ort-prepost  the same session through ``runtime.Predictor.predict`` on a 1024 x 768 RGB photo:
               resize + normalise, inference, resize the map back + threshold
GPU backends (only where a GPU exists): torch-cuda (eager FP32, CUDA peak memory), ort-cuda
(CUDA provider). Artifacts found with ``--artifacts`` add ``ort-fp16`` / ``ort-int8`` (ONNX,
CPU provider) and ``tensorrt-<precision>`` (engines, through the runtime's Predictor).

Nothing here imports torch until a torch backend is built, so a fresh process measuring the
runtime's memory never loads it.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

CORE_BACKENDS = ("torch", "compile", "ort", "ort-prepost")
GPU_BACKENDS = ("torch-cuda", "ort-cuda")
TORCH_BACKENDS = ("torch", "compile", "torch-cuda")
ONNX_BACKENDS = ("ort", "ort-prepost", "ort-cuda")  # run the cached FP32 export
PHOTO_HW = (768, 1024)
DESCRIPTIONS = {
    "torch": "PyTorch eager FP32 (CPU, inference_mode)",
    "compile": "torch.compile, inductor default mode, FP32 (CPU)",
    "ort": "onnxruntime FP32, CPU provider, session only (export --attention ort)",
    "ort-prepost": f"onnxruntime FP32 via runtime.Predictor incl. pre/post-processing of a {PHOTO_HW[1]}x{PHOTO_HW[0]} photo",
    "torch-cuda": "PyTorch eager FP32 on CUDA",
    "ort-cuda": "onnxruntime FP32, CUDA provider",
    "ort-fp16": "onnxruntime, FP16 (mixed-precision) ONNX artifact, CPU provider",
    "ort-int8": "onnxruntime, INT8 Q/DQ ONNX artifact, CPU provider",
}


@dataclass
class Runner:
    backend: str
    call: Callable[[], Any]
    sync: Callable[[], None] | None = None
    first_s: float | None = None  # a first call already made while setting up (compilation)
    warm_s: float | None = None  # seconds of one call when the callee is warm already (a reused session)
    info: dict[str, Any] = field(default_factory=dict)


def seeded_batch(batch: int, size: int, mean, std, seed: int = 0) -> np.ndarray:
    """The benchmark input: uniform [0, 1) pixels, normalised, float32 (N, 3, H, W)."""
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 3, size, size), dtype=np.float32)
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return (x - m) / s


def photo(seed: int = 0) -> np.ndarray:
    """A uint8 RGB photo-sized array for the end-to-end (pre/post-processing) path."""
    return np.random.default_rng(seed).integers(0, 256, (*PHOTO_HW, 3), dtype=np.uint8)


def unavailable(backend: str) -> str | None:
    """Why ``backend`` cannot run on this machine, or None."""
    if backend == "compile" and not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        return "torch.compile's inductor CPU backend needs a C++ compiler (none on PATH)"
    if backend == "torch-cuda":
        import torch

        return None if torch.cuda.is_available() else "no CUDA device (torch.cuda.is_available() is False)"
    if backend == "ort-cuda":
        import onnxruntime as ort

        avail = ort.get_available_providers()
        return None if "CUDAExecutionProvider" in avail else f"onnxruntime has no CUDAExecutionProvider ({', '.join(avail)})"
    if backend.startswith("tensorrt"):
        if not Path("/dev/nvidiactl").exists():
            return "TensorRT engines need an NVIDIA GPU (none on this machine)"
    return None


def _threads_info() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count()}


def _torch_runner(backend: str, subject, batch_np: np.ndarray) -> Runner:
    import torch

    model = subject.build()
    x = torch.from_numpy(batch_np)
    info = {**_threads_info(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if backend == "torch":
        def call():
            with torch.inference_mode():
                return model.predict(x)
        return Runner(backend, call, info=info)
    if backend == "compile":
        import time

        compiled = torch.compile(model.predict)

        def call():
            with torch.no_grad():
                return compiled(x)
        t = time.perf_counter()
        call()
        first = time.perf_counter() - t
        return Runner(backend, call, first_s=first, info={**info, "compile_s": first})
    if backend == "torch-cuda":
        model = model.cuda()
        xc = x.cuda()
        torch.cuda.reset_peak_memory_stats()

        def call():
            with torch.inference_mode():
                return model.predict(xc)
        runner = Runner(backend, call, sync=torch.cuda.synchronize,
                        info={**info, "gpu": torch.cuda.get_device_name()})
        return runner
    raise ValueError(f"unknown torch backend {backend!r}")


def ort_providers(backend: str) -> list[str]:
    return ["CUDAExecutionProvider"] if backend == "ort-cuda" else ["CPUExecutionProvider"]


def _ort_runner(backend: str, path: Path, batch: int, predictor=None) -> Runner:
    import onnxruntime as ort

    from runtime.predictor import Predictor

    predictor = predictor or Predictor(path, providers=ort_providers(backend))
    pre = predictor.sidecar.preprocess
    batch_np = seeded_batch(batch, int(pre.size[0]), pre.mean, pre.std)
    info = {**_threads_info(), "providers": predictor.providers, "onnxruntime": ort.__version__,
            "artifact": str(path), "artifact_mib": path.stat().st_size / 2**20}
    if backend == "ort-prepost":
        image = photo()
        return Runner(backend, lambda: predictor.predict(image), info={**info, "photo_hw": list(PHOTO_HW)})
    return Runner(backend, lambda: predictor.backend.run(batch_np), info=info)


def make_runner(backend: str, subject, onnx_path: str | Path | None = None, predictor=None) -> Runner:
    """A ready-to-time runner of ``subject`` on ``backend``. ONNX and engine backends need
    ``onnx_path`` (the FP32 export, or the artifact of an ort-fp16 / ort-int8 / tensorrt
    backend) and take size, mean and std from its sidecar, so they never import torch;
    onnxruntime backends may reuse an open ``runtime.Predictor`` of that file."""
    if backend in TORCH_BACKENDS:
        from train.models import get_spec

        spec = get_spec(subject.model)
        return _torch_runner(backend, subject, seeded_batch(subject.batch, subject.size, spec.mean, spec.std))
    if onnx_path is None:
        raise ValueError(f"backend {backend!r} needs an ONNX / engine path")
    if backend.startswith("ort"):
        return _ort_runner(backend, Path(onnx_path), subject.batch, predictor)
    if backend.startswith("tensorrt"):
        from runtime.predictor import Predictor

        predictor = Predictor(onnx_path)
        pre = predictor.sidecar.preprocess
        batch_np = seeded_batch(subject.batch, int(pre.size[0]), pre.mean, pre.std)
        return Runner(backend, lambda: predictor.backend.run(batch_np), info={"artifact": str(onnx_path)})
    raise ValueError(f"unknown backend {backend!r}")


def cuda_peak_mib() -> float | None:
    """Peak CUDA memory allocated by torch in this process, MiB (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20

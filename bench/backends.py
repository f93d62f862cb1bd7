"""The backends a benchmark compares, each as a ``Runner``: one call = one inference of a
``Subject`` on the same seeded input, plus what the backend reports about itself.

Core backends (CPU):
  torch        PyTorch eager FP32, ``inference_mode``
  compile      ``torch.compile`` (inductor, default mode) FP32; the first call compiles
  ort          onnxruntime FP32, CPU provider, ``backend.run`` on the preprocessed batch (the export
               made for onnxruntime: ``--attention ort``, see ``bench.artifacts``)
  ort-prepost  the same session through ``runtime.Predictor.predict`` on a 1024 x 768 RGB photo:
               resize + normalise, inference, resize the map back + threshold
  ov           OpenVINO FP32 (CPU plugin, ``runtime.Predictor(backend="openvino", precision="fp32")``)
               on the same export as ``ort``
  ov-bf16      the same with ``precision="bf16"``: BF16 arithmetic on a CPU with native BF16
  auto         ``runtime.Predictor(backend="auto")``: the backend and precision ``runtime.tune``
               chose on this machine for that export (the run tunes it first where no current
               tune file is beside it, as it exports what is not cached)
GPU backends (only where a GPU exists): torch-cuda (eager FP32, CUDA peak memory), ort-cuda
(CUDA provider). Artifacts found with ``--artifacts`` add ``ort-fp16`` / ``ort-int8`` (ONNX,
CPU provider) and ``tensorrt-<precision>`` (engines, through the runtime's Predictor).

Every runtime backend's runner records the backend's settings as configured (threads, spin,
precision, version: ``predictor.backend.settings``), and ``auto``'s its choice; ``run_batch``
runs any preprocessed batch, for the mask agreement against onnxruntime FP32 (``AGREEMENT_BACKENDS``,
outside the timed rounds).

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

CPU_RUNTIME_BACKENDS = ("ov", "ov-bf16", "auto")  # runtime.Predictor's CPU choices beside onnxruntime
CORE_BACKENDS = ("torch", "compile", "ort", "ort-prepost") + CPU_RUNTIME_BACKENDS
GPU_BACKENDS = ("torch-cuda", "ort-cuda")
TORCH_BACKENDS = ("torch", "compile", "torch-cuda")
ONNX_BACKENDS = ("ort", "ort-prepost", "ort-cuda") + CPU_RUNTIME_BACKENDS  # run the cached FP32 export
AGREEMENT_BACKENDS = CPU_RUNTIME_BACKENDS  # masks compared with onnxruntime FP32 on calibration images
REFERENCE_BACKEND = "ort"  # the agreement's reference: onnxruntime FP32, CPU provider
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
    "ov": "OpenVINO FP32 (CPU plugin, inference precision f32) via runtime.Predictor, same export as ort",
    "ov-bf16": "OpenVINO with BF16 inference precision (CPU plugin) via runtime.Predictor, same export as ort",
    "auto": "runtime.Predictor(backend='auto'): the backend x precision runtime.tune chose on this machine",
}
PRECISIONS = {"torch": "fp32", "compile": "fp32", "ort": "fp32", "ort-prepost": "fp32", "torch-cuda": "fp32",
              "ort-cuda": "fp32", "ov": "fp32", "ov-bf16": "bf16", "ort-fp16": "fp16", "ort-int8": "int8"}


def predictor_config(backend: str) -> dict[str, Any]:
    """The ``runtime.Predictor`` keyword arguments of a runtime backend (``ort*``, ``ov*``,
    ``auto``, ``tensorrt-*``); a ValueError for any other name."""
    if backend.startswith("ort"):
        return {"backend": "onnxruntime", "providers": ort_providers(backend)}
    if backend == "ov":
        return {"backend": "openvino", "precision": "fp32"}
    if backend == "ov-bf16":
        return {"backend": "openvino", "precision": "bf16"}
    if backend == "auto":
        return {"backend": "auto"}
    if backend.startswith("tensorrt"):
        return {"backend": "tensorrt"}
    raise ValueError(f"unknown backend {backend!r}")


def open_predictor(backend: str, path: str | Path):
    """A ``runtime.Predictor`` of ``path`` configured as ``backend`` runs it."""
    from runtime.predictor import Predictor

    return Predictor(path, **predictor_config(backend))


def openvino_installed() -> bool:
    """Whether the runtime's OpenVINO backend can import openvino here."""
    from runtime.backends import openvino_backend

    return openvino_backend.available()


@dataclass
class Runner:
    backend: str
    call: Callable[[], Any]
    sync: Callable[[], None] | None = None
    first_s: float | None = None  # a first call already made while setting up (compilation)
    warm_s: float | None = None  # seconds of one call when the callee is warm already (a reused session)
    info: dict[str, Any] = field(default_factory=dict)
    predictor: Any = None  # the runtime.Predictor a runtime backend's calls go through
    run_batch: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None  # any preprocessed batch -> outputs


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
    if backend in ("ov", "ov-bf16") and not openvino_installed():
        from runtime.backends.openvino_backend import NOT_INSTALLED

        return NOT_INSTALLED
    if backend == "ov-bf16":
        return bf16_unavailable()
    return None


def bf16_unavailable() -> str | None:
    """Why BF16 is not measured on this machine (no native BF16 arithmetic), or None."""
    from runtime.machine import has_bf16

    if not has_bf16():
        return "this CPU has no native BF16 (neither AVX-512 BF16 nor AMX-BF16)"
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


def _runtime_runner(backend: str, path: Path, batch: int, predictor=None) -> Runner:
    """A runner of ``path`` through ``runtime.Predictor`` (``predictor``: an open one to reuse)."""
    predictor = predictor or open_predictor(backend, path)
    pre = predictor.sidecar.preprocess
    batch_np = seeded_batch(batch, int(pre.size[0]), pre.mean, pre.std)
    settings = dict(predictor.backend.settings)
    info = {**_threads_info(), "settings": settings, "artifact": str(path), "artifact_mib": path.stat().st_size / 2**20}
    if settings.get("backend") == "onnxruntime":
        import onnxruntime as ort

        info.update(providers=predictor.providers, onnxruntime=ort.__version__)
    if backend == "auto":
        info["choice"] = predictor.choice.to_dict()
    run = predictor.backend.run
    if backend == "ort-prepost":
        image = photo()
        return Runner(backend, lambda: predictor.predict(image), info={**info, "photo_hw": list(PHOTO_HW)},
                      predictor=predictor, run_batch=run)
    return Runner(backend, lambda: run(batch_np), info=info, predictor=predictor, run_batch=run)


def make_runner(backend: str, subject, onnx_path: str | Path | None = None, predictor=None) -> Runner:
    """A ready-to-time runner of ``subject`` on ``backend``. Runtime backends (``ort*``, ``ov*``,
    ``auto``, ``tensorrt-*``) need ``onnx_path`` (the FP32 export, or the artifact of an
    ort-fp16 / ort-int8 / tensorrt backend), take size, mean and std from its sidecar, so they
    never import torch, and may reuse an open ``runtime.Predictor`` of that file configured
    as ``predictor_config(backend)``."""
    if backend in TORCH_BACKENDS:
        from train.models import get_spec

        spec = get_spec(subject.model)
        return _torch_runner(backend, subject, seeded_batch(subject.batch, subject.size, spec.mean, spec.std))
    predictor_config(backend)  # ValueError for an unknown backend
    if onnx_path is None:
        raise ValueError(f"backend {backend!r} needs an ONNX / engine path")
    return _runtime_runner(backend, Path(onnx_path), subject.batch, predictor)


def cuda_peak_mib() -> float | None:
    """Peak CUDA memory allocated by torch in this process, MiB (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20

"""TensorRT backend: run a serialized engine (``.engine`` / ``.plan``) with TensorRT's Python
API, CUDA memory and streams coming from cuda-python (``cuda.bindings.runtime``; the API
TensorRT's own Python samples moved to from PyCUDA).

An engine runs only with the TensorRT version and the GPU architecture that built it, so
before deserializing, the backend compares the build info in the engine's sidecar
(``extra["tensorrt"]``, written by ``export.tensorrt``) with this machine and stops with a
one-line ModelError naming both sides when they differ.

An embedding application can pass its own CUDA stream as an integer handle
(``TensorRTBackend(path, stream=...)``): PyCUDA ``stream.handle``, CuPy ``stream.ptr``,
torch ``torch.cuda.current_stream().cuda_stream``. Otherwise the backend owns one stream.
TensorRT and cuda-python are imported when a backend is created, not with this module,
so the pure checks here (``engine_compatibility``) run anywhere.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendError, ModelError, SidecarError
from ..sidecar import Sidecar, TensorRTBuild, sidecar_path

__all__ = ["TensorRTBackend", "GpuInfo", "engine_compatibility", "query_gpu", "version_key", "NEEDS_GPU_EXTRA"]

NEEDS_GPU_EXTRA = ("TensorRT engines need the gpu extra (gpu-cu12 or gpu-cu13: tensorrt, cuda-python; on "
                   "Jetson JetPack's TensorRT + cuda-python 12.x), which is not available in this build")
CONTRACT = ("prob", "score")


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "MAJOR.MINOR"


def version_key(version: str) -> tuple[int, ...]:
    """Numeric components of a TensorRT version string: "10.3.0.30" -> (10, 3, 0, 30)."""
    out = []
    for part in str(version).strip().split("."):
        digits = part[: len(part) - len(part.lstrip("0123456789"))]
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def engine_compatibility(build: TensorRTBuild, trt_version: str, gpu: GpuInfo) -> tuple[list[str], list[str]]:
    """(errors, warnings) for running an engine built as ``build`` with TensorRT
    ``trt_version`` on ``gpu``. Versions must agree in every component both name (an engine
    is tied to the TensorRT release that built it); the compute capability must be equal; a
    different GPU model of the same architecture is a warning."""
    errors: list[str] = []
    notes: list[str] = []
    built, here = version_key(build.version), version_key(trt_version)
    n = min(len(built), len(here))
    if n == 0 or built[:n] != here[:n]:
        errors.append(f"it was built with TensorRT {build.version} but this machine has TensorRT {trt_version}; "
                      "an engine runs only with the TensorRT version that built it: rebuild it here "
                      "(python -m export.tensorrt)")
    if build.compute_capability != gpu.compute_capability:
        errors.append(f"it was built for {build.gpu} (compute capability {build.compute_capability}) but this "
                      f"GPU is {gpu.name} (compute capability {gpu.compute_capability}): rebuild it on this GPU")
    elif build.gpu != gpu.name:
        notes.append(f"engine built on {build.gpu}, running on {gpu.name} (same compute capability "
                     f"{gpu.compute_capability}); TensorRT advises against moving engines between GPU models")
    return errors, notes


def _import_tensorrt(where: str) -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendError(f"{where}: {NEEDS_GPU_EXTRA}") from None
    return trt


def _import_cudart(where: str) -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python layout
        except ImportError:
            raise BackendError(f"{where}: {NEEDS_GPU_EXTRA}") from None
    return cudart


class _Cuda:
    """The few CUDA runtime calls the backend makes, each checked; errors start with ``where``."""

    def __init__(self, cudart: Any, where: str):
        self.rt = cudart
        self.where = where

    def __call__(self, what: str, result: Any) -> Any:
        err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if err != self.rt.cudaError_t.cudaSuccess:
            name = getattr(err, "name", str(err))
            raise BackendError(f"{self.where}: CUDA {what} failed ({name})")
        return rest[0] if len(rest) == 1 else rest

    def gpu(self, device: int) -> GpuInfo:
        count = self("cudaGetDeviceCount (is there a CUDA GPU and driver?)", self.rt.cudaGetDeviceCount())
        if count < 1:
            raise BackendError(f"{self.where}: no CUDA GPU is available")
        if not 0 <= device < count:
            raise BackendError(f"{self.where}: CUDA device {device} does not exist ({count} present)")
        self(f"cudaSetDevice({device})", self.rt.cudaSetDevice(device))
        prop = self("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(device))
        name = prop.name.decode("utf-8", "replace") if isinstance(prop.name, bytes) else str(prop.name)
        return GpuInfo(name.rstrip("\x00").strip(), f"{prop.major}.{prop.minor}")


def query_gpu(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``device``; BackendError without one."""
    where = f"CUDA device {device}"
    return _Cuda(_import_cudart(where), where).gpu(device)


class TensorRTBackend:
    """One TensorRT engine with the "prob"/"score" outputs, on one CUDA device and stream."""

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, *, stream: int | None = None, device: int = 0,
                 sidecar: Sidecar | None = None):
        self.path = Path(path)
        self._owned_stream = False
        self._buffers: dict[str, tuple[int, int]] = {}
        where = f"model {self.path}"
        trt = _import_tensorrt(where)
        self._cuda = _Cuda(_import_cudart(where), where)
        if not self.path.is_file():
            raise ModelError(f"model {self.path}: file not found")
        if sidecar is None:
            sc = sidecar_path(self.path)
            if not sc.is_file():
                raise SidecarError(f"model {self.path} has no sidecar: expected {sc}")
            sidecar = Sidecar.load(sc)
        build = TensorRTBuild.of(sidecar, sidecar_path(self.path))
        if build is None:
            raise ModelError(f"model {self.path}: its sidecar has no TensorRT build info (extra.tensorrt); "
                             "build engines with python -m export.tensorrt")
        self.build = build
        self.gpu = self._cuda.gpu(device)
        errors, notes = engine_compatibility(build, trt.__version__, self.gpu)
        if errors:
            raise ModelError(f"model {self.path} cannot run here: " + "; ".join(errors))
        for note in notes:
            warnings.warn(f"model {self.path}: {note}", RuntimeWarning, stacklevel=2)

        self._trt = trt
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise ModelError(f"model {self.path}: TensorRT {trt.__version__} could not deserialize the engine "
                             "(corrupt file, or built by another TensorRT)")
        self._engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1:
            raise ModelError(f"model {self.path}: expected one input, found {', '.join(inputs) or 'none'}")
        missing = [n for n in CONTRACT if n not in self._outputs]
        if missing:
            raise ModelError(f"model {self.path}: missing output(s) {', '.join(missing)} "
                             f"(has {', '.join(self._outputs) or 'none'})")
        self._input = inputs[0]
        declared = tuple(int(d) for d in engine.get_tensor_shape(self._input))
        if min(declared) < 0:  # dynamic input: the range of optimization profile 0
            self._profile = tuple(tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(self._input, 0))
        else:
            self._profile = (declared, declared, declared)
        self._context = engine.create_execution_context()
        if self._context is None:
            raise ModelError(f"model {self.path}: TensorRT could not create an execution context (GPU memory?)")
        if stream is None:
            self._stream = int(self._cuda("cudaStreamCreate", self._cuda.rt.cudaStreamCreate()))
            self._owned_stream = True
        else:
            self._stream = int(stream)

    # -- the Backend protocol -------------------------------------------------

    @property
    def input_name(self) -> str:
        return self._input

    @property
    def input_shape(self) -> tuple:
        """Input shape as the engine declares it: ints, None for dynamic dims."""
        return tuple(None if int(d) < 0 else int(d) for d in self._engine.get_tensor_shape(self._input))

    @property
    def providers(self) -> list[str]:
        return [f"TensorRT {self._trt.__version__} ({self.gpu.name})"]

    @property
    def stream(self) -> int:
        return self._stream

    @property
    def precision(self) -> str:
        """The precision the engine was built with (its sidecar's build info)."""
        return self.build.precision

    @property
    def settings(self) -> dict[str, Any]:
        """The engine as it runs here (what a benchmark report states)."""
        return {"backend": self.name, "precision": self.precision, "threads": None, "spin": None,
                "gpu": self.gpu.name, "version": self._trt.__version__}

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run a float32 (N, 3, H, W) batch; returns float32 "prob" (N,1,h,w) and "score" (N,1).
        Batches beyond the profile's maximum run in chunks."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[0] == 0:
            raise ValueError(f"expected a non-empty (N, 3, H, W) batch, got {batch.shape}")
        lo, _, hi = self._profile
        for k in (1, 2, 3):
            if not lo[k] <= batch.shape[k] <= hi[k]:
                raise ModelError(f"model {self.path}: input dim {k} is {batch.shape[k]}, the engine's profile "
                                 f"allows {lo[k]}..{hi[k]}")
        step = hi[0]
        parts = [self._run_once(batch[k: k + step]) for k in range(0, batch.shape[0], step)]
        if len(parts) == 1:
            return parts[0]
        return {n: np.concatenate([p[n] for p in parts], axis=0) for n in CONTRACT}

    # -- internals ------------------------------------------------------------

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                del self._buffers[name]  # never freed twice, even if the new allocation fails
                self._cuda("cudaFree", self._cuda.rt.cudaFree(ptr))
            ptr = int(self._cuda("cudaMalloc", self._cuda.rt.cudaMalloc(max(nbytes, 1))))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _run_once(self, x: np.ndarray) -> dict[str, np.ndarray]:
        trt, rt, cuda = self._trt, self._cuda.rt, self._cuda
        x = np.ascontiguousarray(x, dtype=np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._input))))
        if not self._context.set_input_shape(self._input, tuple(x.shape)):
            raise ModelError(f"model {self.path}: TensorRT refused input shape {tuple(x.shape)}")
        ptr = self._device(self._input, x.nbytes)
        cuda("cudaMemcpyAsync (input)", rt.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes,
                                                          rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
        self._context.set_tensor_address(self._input, ptr)
        host: dict[str, np.ndarray] = {}
        for name in self._outputs:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            host[name] = np.empty(shape, dtype=np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))))
            self._context.set_tensor_address(name, self._device(name, host[name].nbytes))
        if not self._context.execute_async_v3(self._stream):
            raise ModelError(f"model {self.path}: TensorRT execution failed")
        for name, arr in host.items():
            cuda("cudaMemcpyAsync (output)", rt.cudaMemcpyAsync(arr.ctypes.data, self._buffers[name][0], arr.nbytes,
                                                               rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))
        cuda("cudaStreamSynchronize", rt.cudaStreamSynchronize(self._stream))
        prob = host["prob"].astype(np.float32, copy=False)
        score = host["score"].astype(np.float32, copy=False)
        n = x.shape[0]
        if prob.ndim != 4 or prob.shape[:2] != (n, 1):
            raise ModelError(f"model {self.path}: output prob has shape {prob.shape}, expected ({n}, 1, h, w)")
        if score.shape != (n, 1):
            raise ModelError(f"model {self.path}: output score has shape {score.shape}, expected ({n}, 1)")
        return {"prob": prob, "score": score}

    def close(self) -> None:
        """Free the device buffers and the backend's own stream (never a caller's stream)."""
        cuda = getattr(self, "_cuda", None)
        if cuda is None:
            return
        for ptr, _ in self._buffers.values():
            cuda.rt.cudaFree(ptr)
        self._buffers.clear()
        if self._owned_stream:
            cuda.rt.cudaStreamDestroy(self._stream)
            self._owned_stream = False

    def __enter__(self) -> "TensorRTBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the CUDA module may be gone
            pass

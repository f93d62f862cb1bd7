"""Inference backends: run a preprocessed NCHW batch through an artifact.

A backend takes a float32 (N, 3, H, W) batch and returns the contract outputs
``{"prob": (N, 1, h, w), "score": (N, 1)}`` as float32 arrays.  ``open_backend``
picks the backend from the artifact's suffix (``.onnx`` -> ``ort_backend``,
``.engine``/``.plan`` -> ``tensorrt_backend``).  Heavy libraries (onnxruntime,
TensorRT, cuda-python) are imported only when a backend is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from ..errors import BackendError

__all__ = ["Backend", "open_backend", "ONNX_SUFFIXES", "TENSORRT_SUFFIXES"]

ONNX_SUFFIXES = (".onnx",)
TENSORRT_SUFFIXES = (".engine", ".plan")


class Backend(Protocol):
    """What the predictor needs from a backend."""

    @property
    def input_name(self) -> str: ...

    @property
    def input_shape(self) -> tuple: ...

    @property
    def providers(self) -> list[str]: ...

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...


def open_backend(path: str | os.PathLike, providers: Sequence[str] | None = None, *,
                 stream: int | None = None, sidecar=None, threads: int | None = None,
                 session_options=None) -> Backend:
    """Open ``path`` with the backend for its suffix: ``.onnx`` -> onnxruntime (TensorRT,
    CUDA, CPU providers as available), ``.engine``/``.plan`` -> TensorRT through cuda-python.
    ``providers`` (onnxruntime execution providers), ``threads`` (onnxruntime intra-op
    threads) and ``session_options`` (an ``onnxruntime.SessionOptions``) apply to ONNX models
    only; ``stream`` is a caller's CUDA stream handle (an int) for a TensorRT engine;
    ``sidecar`` is the engine's sidecar when the caller has loaded it already."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        if stream is not None:
            raise BackendError(f"model {p}: a CUDA stream handle applies to TensorRT engines, not to ONNX models")
        from .ort_backend import OrtBackend

        return OrtBackend(p, providers=providers, threads=threads, session_options=session_options)
    if suffix in TENSORRT_SUFFIXES:
        if providers is not None:
            raise BackendError(f"model {p}: execution providers ({', '.join(providers)}) apply to ONNX models; "
                               f"a TensorRT engine runs on the GPU it was built for")
        if threads is not None or session_options is not None:
            raise BackendError(f"model {p}: threads and session_options configure onnxruntime, "
                               f"not a TensorRT engine")
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(p, stream=stream, sidecar=sidecar)
    raise BackendError(f"model {p}: unknown artifact type {p.suffix or '(no suffix)'!r}; "
                       f"expected one of {', '.join(ONNX_SUFFIXES + TENSORRT_SUFFIXES)}")

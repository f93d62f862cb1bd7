"""Inference backends: run a preprocessed NCHW batch through an artifact.

A backend takes a float32 (N, 3, H, W) batch and returns the contract outputs
``{"prob": (N, 1, h, w), "score": (N, 1)}`` as float32 arrays (``contract``). Three exist:

  onnxruntime  ``.onnx``: onnxruntime (TensorRT, CUDA, CPU providers as available)
  openvino     ``.onnx``: OpenVINO's CPU plugin, FP32 / BF16 / FP16 kernels, optionally with
               ranges of ops kept in FP32 (``openvino_backend``, ``openvino_segments``)
  tensorrt     ``.engine`` / ``.plan``: TensorRT through cuda-python (``tensorrt_backend``)

``open_backend(path, backend=...)`` opens one by name; ``"auto"`` (the default) takes a
TensorRT engine's backend for an engine, and for an ONNX file the choice ``runtime.tune``
wrote beside it (``MODEL.onnx.tune.json``) where that file was tuned on a machine with this
machine's fingerprint, else onnxruntime at the file's own precision (``resolve``).
``precision`` ("fp32", "bf16", "fp16", "int8") names the arithmetic; a backend that cannot
run it refuses in one line. Heavy libraries (onnxruntime, OpenVINO, TensorRT, cuda-python)
are imported only when a backend is opened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from ..errors import BackendError, RuntimeInputError
from .contract import PRECISIONS

__all__ = ["Backend", "Choice", "open_backend", "resolve", "BACKENDS", "PRECISIONS", "ONNX_SUFFIXES",
           "TENSORRT_SUFFIXES"]

ONNX_SUFFIXES = (".onnx",)
TENSORRT_SUFFIXES = (".engine", ".plan")
BACKENDS = ("onnxruntime", "openvino", "tensorrt", "auto")


class Backend(Protocol):
    """What the predictor needs from a backend."""

    name: str
    precision: str

    @property
    def input_name(self) -> str: ...

    @property
    def input_shape(self) -> tuple: ...

    @property
    def providers(self) -> list[str]: ...

    @property
    def settings(self) -> dict[str, Any]: ...

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Choice:
    """Which backend and precision run an artifact, and why."""

    backend: str
    precision: str | None  # None: what the artifact holds
    source: str  # "explicit" (the caller named it), "tune" (MODEL.onnx.tune.json), "default"
    reason: str
    fp32_ranges: tuple[tuple[int, int], ...] | None = None  # OpenVINO BF16/FP16 ops kept in FP32

    def to_dict(self) -> dict[str, Any]:
        out = {"backend": self.backend, "precision": self.precision, "source": self.source, "reason": self.reason}
        if self.fp32_ranges:
            out["fp32_ranges"] = [list(r) for r in self.fp32_ranges]
        return out


def _check_choice(backend: object, precision: object) -> None:
    if backend not in BACKENDS:
        raise RuntimeInputError(f"backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision is not None and precision not in PRECISIONS:
        raise RuntimeInputError(f"precision: must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def resolve(path: str | os.PathLike, backend: str = "auto", precision: str | None = None, *,
            sha256: str | None = None) -> Choice:
    """The backend and precision ``open_backend`` uses for ``path``. ``"auto"`` with no
    precision reads the tuning beside an ONNX file (``runtime.tune.load_tuned``: ignored when
    absent, for another file, or from a machine with another fingerprint); ``"auto"`` with a
    precision takes the first backend that runs it here (onnxruntime for the file's own
    precision, else OpenVINO). ``sha256``: the file's digest where the caller has checked it
    already (the Predictor, against the sidecar), so the tuning is matched without hashing the
    file again."""
    _check_choice(backend, precision)
    p = Path(path)
    engine = p.suffix.lower() in TENSORRT_SUFFIXES
    if backend != "auto":
        return Choice(backend, precision, "explicit", f"backend={backend!r} was asked for")
    if engine:
        return Choice("tensorrt", precision, "default", "a TensorRT engine runs on TensorRT")
    if precision is not None:
        if precision in ("bf16", "fp16"):
            return Choice("openvino", precision, "default", f"{precision} kernels on an FP32 file: OpenVINO")
        return Choice("onnxruntime", precision, "default", f"{precision}: onnxruntime")
    from ..tune import load_tuned

    tuned, why = load_tuned(p, sha256=sha256)
    if tuned is not None:
        choice = tuned["choice"]
        ranges = choice.get("fp32_ranges")
        return Choice(choice["backend"], choice["precision"], "tune", f"{why}",
                      tuple(tuple(r) for r in ranges) if ranges else None)
    return Choice("onnxruntime", None, "default", why)


def open_backend(path: str | os.PathLike, providers: Sequence[str] | None = None, *,
                 backend: str = "auto", precision: str | None = None, stream: int | None = None,
                 sidecar=None, threads: int | None = None, spin: bool | None = None,
                 session_options=None, fp32_ranges: Sequence[Sequence[int]] | None = None) -> Backend:
    """Open ``path`` with ``backend`` at ``precision`` (see the module's docstring and
    ``resolve``); ``fp32_ranges`` keeps those compute ops of an OpenVINO BF16 / FP16 model in
    FP32 (``openvino_backend``), in place of any the tuning names. ``providers`` (onnxruntime
    execution providers) and ``session_options`` (an ``onnxruntime.SessionOptions``) apply to
    onnxruntime only; ``threads`` (intra-op threads,
    default the physical cores) to onnxruntime and OpenVINO; ``spin`` (worker busy-waiting,
    default off) to onnxruntime (OpenVINO has no such setting); ``stream`` is a caller's CUDA
    stream handle (an int) for a TensorRT engine; ``sidecar`` is the artifact's sidecar when
    the caller has loaded it already (its precision is the artifact's)."""
    choice = resolve(path, backend, precision)
    if fp32_ranges is not None:
        choice = replace(choice, fp32_ranges=tuple(tuple(r) for r in fp32_ranges) or None)
    return open_choice(path, choice, providers, stream=stream, sidecar=sidecar,
                       threads=threads, spin=spin, session_options=session_options)


def artifact_precision(sidecar) -> str:
    """The arithmetic an artifact holds, from its sidecar: "fp32" unless export.precision /
    export.quantize (``variant["precision"]``) or a TensorRT build (``extra.tensorrt``) says."""
    if sidecar is None:
        return "fp32"
    build = sidecar.extra.get("tensorrt") if isinstance(sidecar.extra, dict) else None
    if isinstance(build, dict) and build.get("precision"):
        return str(build["precision"])
    return str(sidecar.variant.get("precision") or "fp32")


def open_choice(path: str | os.PathLike, choice: Choice, providers: Sequence[str] | None = None, *,
                stream: int | None = None, sidecar=None, threads: int | None = None, spin: bool | None = None,
                session_options=None) -> Backend:
    """Open ``path`` as ``choice`` says (``open_backend`` after ``resolve``)."""
    p = Path(path)
    suffix = p.suffix.lower()
    name, precision = choice.backend, choice.precision
    if suffix not in ONNX_SUFFIXES + TENSORRT_SUFFIXES:
        raise BackendError(f"model {p}: unknown artifact type {p.suffix or '(no suffix)'!r}; "
                           f"expected one of {', '.join(ONNX_SUFFIXES + TENSORRT_SUFFIXES)}")
    engine = suffix in TENSORRT_SUFFIXES
    if engine != (name == "tensorrt"):
        raise BackendError(f"model {p}: backend {name} runs "
                           f"{'TensorRT engines' if name == 'tensorrt' else 'ONNX files'}, not a {suffix} file")
    if choice.fp32_ranges and name != "openvino":
        raise BackendError(f"model {p}: fp32_ranges split a model across OpenVINO precisions, not {name}'s")
    if name != "onnxruntime":
        if providers is not None:
            raise BackendError(f"model {p}: execution providers ({', '.join(providers)}) apply to onnxruntime, "
                               f"not to {name}")
        if session_options is not None:
            raise BackendError(f"model {p}: session_options configure onnxruntime, not {name}")
    if stream is not None and name != "tensorrt":
        raise BackendError(f"model {p}: a CUDA stream handle applies to TensorRT engines, not to ONNX models")
    if name == "onnxruntime":
        from .ort_backend import OrtBackend

        return OrtBackend(p, providers=providers, threads=threads, session_options=session_options, spin=spin,
                          precision=precision, artifact_precision=artifact_precision(sidecar))
    if name == "openvino":
        held = artifact_precision(sidecar)
        if held != "fp32" and precision not in (None, "fp32"):
            raise BackendError(f"precision {precision}: {p.name} is a {held} artifact; OpenVINO's {precision} "
                               f"kernels run FP32 files (use the FP32 export)")
        from .openvino_backend import OpenVinoBackend

        return OpenVinoBackend(p, precision=precision, threads=threads, fp32_ranges=choice.fp32_ranges)
    if threads is not None or spin is not None:
        raise BackendError(f"model {p}: threads and spin configure CPU backends, not a TensorRT engine")
    held = artifact_precision(sidecar)
    if precision is not None and sidecar is not None and precision != held:
        raise BackendError(f"precision {precision}: engine {p.name} was built for {held}; build a {precision} "
                           f"engine (python -m export.tensorrt --precision {precision})")
    from .tensorrt_backend import TensorRTBackend

    return TensorRTBackend(p, stream=stream, sidecar=sidecar)

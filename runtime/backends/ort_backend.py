"""onnxruntime backend: run an ONNX artifact on the best execution provider available.

Provider preference: TensorRT, then CUDA, then CPU, restricted to what
``onnxruntime.get_available_providers()`` offers; a caller may pass its own list.
Threads: intra-op threads = ``threads`` or the physical cores this process may use
(``runtime.machine.physical_cores``), and worker spinning off (``spin=False``: the
``session.intra_op.allow_spinning`` / ``inter_op`` config entries "0"), so an idle session
leaves the cores to the embedding app and to other libraries' thread pools; ``spin=True``
lets onnxruntime's workers busy-wait between operators as its default does. An app may
instead hand over its own ``onnxruntime.SessionOptions`` (``session_options``, used as given,
not copied or changed; not with ``threads`` or ``spin``). Logging is error-only.
``profile_prefix`` turns on onnxruntime's profiler with the default options (its trace file
name starts with it; ``end_profiling`` returns it; ``python -m bench.ops`` reads it).

Precision: onnxruntime runs the arithmetic the ONNX file holds (an FP32 export, or the
FP16-mixed / INT8 Q/DQ artifacts of ``export.precision`` / ``export.quantize``);
``precision`` must be None or that precision, and the artifact's is taken from its sidecar.
onnxruntime is imported when an ``OrtBackend`` is created, not when this module is.
Named ``ort_backend`` so it never shadows the ``onnxruntime`` package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BackendError, ModelError, RuntimeInputError, one_line
from ..machine import physical_cores
from .contract import CONTRACT, checked_outputs, run_batch

__all__ = ["OrtBackend", "PREFERRED_PROVIDERS", "check_threads", "choose_providers"]

PREFERRED_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)


def choose_providers(available: Sequence[str], requested: Sequence[str] | None = None) -> list[str]:
    """Providers to use: ``requested`` (each must be available) or the preferred available ones."""
    if requested is not None:
        requested = list(requested)
        missing = [p for p in requested if p not in available]
        if not requested or missing:
            raise BackendError(f"onnxruntime provider(s) {', '.join(missing) or '(none given)'} "
                               f"not available; available: {', '.join(available)}")
        return requested
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    if not chosen:
        raise BackendError("onnxruntime offers none of "
                           f"{', '.join(PREFERRED_PROVIDERS)}; available: {', '.join(available)}")
    return chosen


def check_threads(threads: object) -> int | None:
    """``threads`` as a positive int, or None (the backend's default: one per physical core)."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise RuntimeInputError(f"threads: must be a positive integer, got {threads!r}")
    return threads


class OrtBackend:
    """An onnxruntime session over one ONNX file with the "prob"/"score" outputs."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None, *,
                 threads: int | None = None, session_options=None, spin: bool | None = None,
                 precision: str | None = None, artifact_precision: str = "fp32",
                 profile_prefix: str | os.PathLike | None = None):
        self.path = Path(path)
        threads = check_threads(threads)
        if session_options is not None and (threads is not None or spin is not None or profile_prefix is not None):
            raise RuntimeInputError("threads: give either threads/spin/profile_prefix or session_options (set "
                                    "session_options.intra_op_num_threads, its spinning config entries and "
                                    "enable_profiling instead)")
        if precision not in (None, artifact_precision):
            raise BackendError(f"precision {precision}: onnxruntime runs the arithmetic the ONNX file holds, "
                               f"and {self.path.name} is {artifact_precision} (export a {precision} artifact, "
                               f"or use backend='openvino' for bf16 / fp16 kernels on an FP32 file)")
        self.precision = artifact_precision
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("onnxruntime is not installed; install imlkit-runtime[cpu] "
                               "or a gpu extra (gpu-cu12, gpu-cu13)") from None
        if not self.path.is_file():
            raise ModelError(f"model {self.path}: file not found")
        chosen = choose_providers(ort.get_available_providers(), providers)
        if session_options is not None:
            if not isinstance(session_options, ort.SessionOptions):
                raise RuntimeInputError(f"session_options: expected an onnxruntime.SessionOptions, "
                                        f"got {type(session_options).__name__}")
            opts = session_options
        else:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3  # errors only; no provider-fallback chatter
            opts.intra_op_num_threads = threads or physical_cores()
            flag = "1" if spin else "0"
            opts.add_session_config_entry("session.intra_op.allow_spinning", flag)
            opts.add_session_config_entry("session.inter_op.allow_spinning", flag)
            if profile_prefix is not None:
                opts.enable_profiling = True
                opts.profile_file_prefix = str(profile_prefix)
        self._version = ort.__version__
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=chosen)
        except Exception as e:  # onnxruntime raises its own pybind11 exception types
            raise ModelError(f"model {self.path}: not a loadable ONNX model ({one_line(e)})") from None

        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"model {self.path}: expected one input, found "
                             f"{', '.join(i.name for i in inputs) or 'none'}")
        self._input = inputs[0]
        names = [o.name for o in self._session.get_outputs()]
        missing = [n for n in CONTRACT if n not in names]
        if missing:
            raise ModelError(f"model {self.path}: missing output(s) {', '.join(missing)} "
                             f"(has {', '.join(names) or 'none'})")

    @property
    def input_name(self) -> str:
        return self._input.name

    @property
    def input_shape(self) -> tuple:
        """Input shape as the model declares it: ints, or str/None for dynamic dims."""
        return tuple(self._input.shape)

    @property
    def providers(self) -> list[str]:
        """Providers the session actually uses, in priority order."""
        return list(self._session.get_providers())

    @property
    def settings(self) -> dict:
        """The session as configured (what a benchmark report states)."""
        opts = self._session.get_session_options()
        try:
            spin = opts.get_session_config_entry("session.intra_op.allow_spinning")
        except Exception:  # an app's own SessionOptions without the entry: onnxruntime's default, spinning
            spin = "1"
        return {"backend": self.name, "precision": self.precision, "threads": opts.intra_op_num_threads or None,
                "spin": spin != "0", "providers": self.providers, "version": self._version}

    @property
    def fixed_batch(self) -> int | None:
        b = self.input_shape[0] if self.input_shape else None
        return b if isinstance(b, int) and b > 0 else None

    def end_profiling(self) -> str:
        """Where session options with ``enable_profiling`` set made onnxruntime profile the
        runs: stop it and return the path of its trace (Chrome trace-event JSON)."""
        return self._session.end_profiling()

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run a float32 (N, 3, H, W) batch; returns float32 "prob" (N,1,h,w) and "score" (N,1)."""
        return run_batch(self.path, batch, self.fixed_batch, self._run_once)

    def _run_once(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        try:
            prob, score = self._session.run(list(CONTRACT), {self._input.name: batch})
        except Exception as e:
            raise ModelError(f"model {self.path}: inference failed ({one_line(e)})") from None
        return checked_outputs(self.path, prob, score, batch.shape[0])

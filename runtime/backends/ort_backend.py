"""onnxruntime backend: run an ONNX artifact on the best execution provider available.

Provider preference: TensorRT, then CUDA, then CPU, restricted to what
``onnxruntime.get_available_providers()`` offers; a caller may pass its own list.
An embedding app sets onnxruntime's intra-op thread count (``threads``) or hands over its
own ``onnxruntime.SessionOptions`` (``session_options``, used as given, not copied or
changed); by default the session uses onnxruntime's defaults with error-only logging.
onnxruntime is imported when an ``OrtBackend`` is created, not when this module is.
Named ``ort_backend`` so it never shadows the ``onnxruntime`` package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BackendError, ModelError, RuntimeInputError, one_line

__all__ = ["OrtBackend", "PREFERRED_PROVIDERS", "check_threads", "choose_providers"]

PREFERRED_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)
CONTRACT = ("prob", "score")


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
    """``threads`` as a positive int, or None (onnxruntime's default: one per physical core)."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise RuntimeInputError(f"threads: must be a positive integer, got {threads!r}")
    return threads


class OrtBackend:
    """An onnxruntime session over one ONNX file with the "prob"/"score" outputs."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None, *,
                 threads: int | None = None, session_options=None):
        self.path = Path(path)
        threads = check_threads(threads)
        if threads is not None and session_options is not None:
            raise RuntimeInputError("threads: give either threads or session_options "
                                    "(set session_options.intra_op_num_threads instead)")
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
            if threads is not None:
                opts.intra_op_num_threads = threads
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
    def fixed_batch(self) -> int | None:
        b = self.input_shape[0] if self.input_shape else None
        return b if isinstance(b, int) and b > 0 else None

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run a float32 (N, 3, H, W) batch; returns float32 "prob" (N,1,h,w) and "score" (N,1)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[0] == 0:
            raise RuntimeInputError(f"model {self.path}: expected a non-empty (N, 3, H, W) batch, got {batch.shape}")
        fixed = self.fixed_batch
        if fixed is not None and batch.shape[0] != fixed:
            if fixed != 1:
                raise ModelError(f"model {self.path}: fixed batch size {fixed} "
                                 f"cannot take a batch of {batch.shape[0]}")
            parts = [self._run_once(batch[k : k + 1]) for k in range(batch.shape[0])]
            return {n: np.concatenate([p[n] for p in parts], axis=0) for n in CONTRACT}
        return self._run_once(batch)

    def _run_once(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        try:
            prob, score = self._session.run(list(CONTRACT), {self._input.name: batch})
        except Exception as e:
            raise ModelError(f"model {self.path}: inference failed ({one_line(e)})") from None
        prob = np.asarray(prob, dtype=np.float32)
        score = np.asarray(score, dtype=np.float32)
        n = batch.shape[0]
        if prob.ndim != 4 or prob.shape[:2] != (n, 1):
            raise ModelError(f"model {self.path}: output prob has shape {prob.shape}, "
                             f"expected ({n}, 1, h, w)")
        if score.shape != (n, 1):
            raise ModelError(f"model {self.path}: output score has shape {score.shape}, "
                             f"expected ({n}, 1)")
        return {"prob": prob, "score": score}

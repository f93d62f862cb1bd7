"""Predictor: artifact + sidecar -> tamper probability map, mask and score for any image.

``Predictor(model_path)`` reads the sidecar next to the artifact
(``model.onnx`` -> ``model.onnx.json``), checks that the sidecar describes this
exact file (sha256), opens a backend, and then maps images of any size to a
``Prediction`` at the image's original resolution:

    load_image -> preprocess (resize, normalise) -> backend -> postprocess
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .backends import TENSORRT_SUFFIXES, Backend, open_choice, resolve
from .errors import ModelError, RuntimeInputError, SidecarError
from .io import ImageSource, load_image, source_name
from .preprocess import postprocess, preprocess
from .sidecar import Sidecar, sha256_file, sidecar_path

__all__ = ["Prediction", "Predictor", "checked_sidecar"]


@dataclass(frozen=True, eq=False)
class Prediction:
    """Result for one image, at the image's original size (compared by identity: it holds arrays)."""

    prob: np.ndarray  #: float32 (H, W) tamper probability
    mask: np.ndarray  #: bool (H, W), prob > threshold
    score: float  #: image-level tamper score in [0, 1]
    size: tuple[int, int]  #: (H, W) of the input image
    source: str  #: the input's path, or "<array>" / "<PIL image>"

    @property
    def tampered_fraction(self) -> float:
        """Share of pixels in the mask, in [0, 1]."""
        return float(self.mask.mean()) if self.mask.size else 0.0


class Predictor:
    """Run one exported artifact on images.

    ``backend`` ("onnxruntime", "openvino", "tensorrt", or "auto", the default) and
    ``precision`` ("fp32", "bf16", "fp16", "int8"; None: the backend's FP32 or what the
    artifact holds) pick what runs the artifact: "auto" uses ``runtime.tune``'s choice beside
    an ONNX file when it was tuned on a machine like this one, else onnxruntime
    (``runtime.backends.resolve``); ``self.choice`` says which and why. ``providers``
    overrides the onnxruntime provider choice; ``threshold`` overrides the sidecar's mask
    threshold; ``stream`` is an embedding app's CUDA stream handle (an int from pycuda, CuPy
    or torch) for a TensorRT engine. On the CPU backends ``threads`` sets the intra-op threads
    (default: the physical cores) and ``spin=True`` lets onnxruntime's workers busy-wait
    between operators (default off, for embedding); ``session_options`` hands over the app's
    own ``onnxruntime.SessionOptions`` instead (used as given).

    Every error raised on purpose is a ``RuntimeInputError`` (``runtime.errors``) with a
    one-line message.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        providers: Sequence[str] | None = None,
        threshold: float | None = None,
        stream: int | None = None,
        *,
        backend: str = "auto",
        precision: str | None = None,
        threads: int | None = None,
        spin: bool | None = None,
        session_options=None,
    ):
        threshold = _check_threshold(threshold)
        path = Path(model_path)
        sidecar = checked_sidecar(path)
        sc_path = sidecar_path(path)
        self.path = path
        self.sidecar = sidecar
        self.threshold = float(sidecar.threshold if threshold is None else threshold)
        self.choice = resolve(path, backend, precision, sha256=sidecar.artifact.sha256)
        self.backend: Backend = open_choice(path, self.choice, providers, stream=stream, sidecar=sidecar,
                                            threads=threads, spin=spin, session_options=session_options)

        size = tuple(sidecar.preprocess.size)
        declared = tuple(self.backend.input_shape[2:4])
        for axis, want, got in zip(("height", "width"), size, declared):
            if isinstance(got, int) and got != want:
                raise ModelError(f"model {path}: input {axis} is {got} but sidecar "
                                 f"{sc_path} preprocesses to {list(size)}")

    @property
    def providers(self) -> list[str]:
        return self.backend.providers

    def predict(self, image: ImageSource) -> Prediction:
        """Predict one image (path, PIL image or ndarray of any size)."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Iterable[ImageSource], batch_size: int = 8) -> list[Prediction]:
        """Predict several images; all are decoded (and validated) before inference."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise RuntimeInputError(f"batch_size: must be a positive integer, got {batch_size!r}")
        sources = list(images)
        arrays = [load_image(src, copy=False) for src in sources]
        out: list[Prediction] = []
        for start in range(0, len(arrays), batch_size):
            chunk = arrays[start : start + batch_size]
            out.extend(self._predict_arrays(chunk, [source_name(s) for s in sources[start : start + batch_size]]))
        return out

    def _predict_arrays(self, arrays: list[np.ndarray], names: list[str]) -> list[Prediction]:
        pre = self.sidecar.preprocess
        batch = preprocess(arrays, pre.size, pre.mean, pre.std, pre.scale)
        result = self.backend.run(batch)
        preds = []
        for k, (rgb, name) in enumerate(zip(arrays, names)):
            hw = (int(rgb.shape[0]), int(rgb.shape[1]))
            prob, mask = postprocess(result["prob"][k], hw, self.threshold)
            preds.append(Prediction(prob=prob, mask=mask, score=float(result["score"][k, 0]),
                                    size=hw, source=name))
        return preds


def _check_threshold(threshold: object) -> float | None:
    """``threshold`` as a float in [0, 1] (None: the sidecar's)."""
    if threshold is None:
        return None
    try:
        value = float(threshold)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RuntimeInputError(f"threshold: must be a number in [0, 1], got {threshold!r}") from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise RuntimeInputError(f"threshold: must be in [0, 1], got {threshold!r}")
    return value


def checked_sidecar(path: Path) -> Sidecar:
    """The sidecar of the artifact ``path``, checked to describe this exact file (format and
    sha256); one-line ``ModelError`` / ``SidecarError`` otherwise."""
    if not path.is_file():
        raise ModelError(f"model {path}: file not found")
    sc_path = sidecar_path(path)
    if not sc_path.is_file():
        raise SidecarError(f"model {path} has no sidecar: expected {sc_path}")
    sidecar = Sidecar.load(sc_path)
    expected_format = "tensorrt" if path.suffix.lower() in TENSORRT_SUFFIXES else "onnx"
    if sidecar.artifact.format != expected_format:
        raise ModelError(f"model {path}: sidecar {sc_path} describes a "
                         f"{sidecar.artifact.format} artifact, not {expected_format}")
    digest = sha256_file(path)
    if digest != sidecar.artifact.sha256:
        raise ModelError(f"model {path}: stale sidecar {sc_path}: artifact sha256 "
                         f"{digest[:12]}... differs from the sidecar's "
                         f"{sidecar.artifact.sha256[:12]}... (re-export the model)")
    return sidecar

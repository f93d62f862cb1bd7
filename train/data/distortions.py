"""Image distortions shared by the synthetic-forgery post-processing and the robustness
evaluation: JPEG recompression, Gaussian blur, Gaussian noise and resizing.

All take and return uint8 H x W x 3 arrays. The parameters are the ones the papers'
robustness tables sweep: JPEG quality, blur kernel size, noise standard deviation (in
0..255 grey levels) and resize factor.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.filters import gaussian


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Re-encode as JPEG at ``quality`` (1..95, PIL/libjpeg scale) and decode again."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB")).copy()


def kernel_sigma(kernel: int) -> float:
    """Standard deviation of a Gaussian blur given only its kernel size (OpenCV's
    ``getGaussianKernel`` rule, which the robustness protocols use): 0.3 ((k-1)/2 - 1) + 0.8."""
    return 0.3 * ((kernel - 1) * 0.5 - 1.0) + 0.8


def gaussian_blur(image: np.ndarray, kernel: int, sigma: float | None = None) -> np.ndarray:
    """Gaussian blur with an odd ``kernel`` x ``kernel`` support (sigma from the kernel
    size unless given); the kernel is truncated at radius kernel // 2."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"blur kernel must be an odd size >= 1, got {kernel}")
    if kernel == 1:
        return image.copy()
    sigma = kernel_sigma(kernel) if sigma is None else sigma
    out = gaussian(image.astype(np.float32), sigma=sigma, truncate=(kernel // 2) / sigma,
                   channel_axis=-1, preserve_range=True, mode="reflect")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add zero-mean Gaussian noise of standard deviation ``sigma`` grey levels, clip, round."""
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def resize(image: np.ndarray, factor: float, nearest: bool = False) -> np.ndarray:
    """Scale both sides by ``factor`` (bilinear; nearest for masks), at least 2 px a side."""
    if factor <= 0:
        raise ValueError(f"resize factor must be positive, got {factor}")
    h, w = image.shape[:2]
    size = (max(2, round(w * factor)), max(2, round(h * factor)))
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize(size, resample)).copy()


@dataclass(frozen=True)
class Distortion:
    """One named robustness condition: ``kind`` in {"none", "jpeg", "blur", "noise",
    "resize"} and its parameter (quality, kernel size, sigma, factor)."""

    kind: str = "none"
    value: float = 0.0

    KINDS = ("none", "jpeg", "blur", "noise", "resize")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown distortion {self.kind!r}; known: {', '.join(self.KINDS)}")

    @property
    def label(self) -> str:
        return "clean" if self.kind == "none" else f"{self.kind} {self.value:g}"

    def apply(self, image: np.ndarray, seed: int = 0) -> np.ndarray:
        """The distorted image (may change size for ``resize``; the caller maps the
        prediction back to the mask's size)."""
        if self.kind == "jpeg":
            return jpeg(image, int(self.value))
        if self.kind == "blur":
            return gaussian_blur(image, int(self.value))
        if self.kind == "noise":
            return gaussian_noise(image, self.value, np.random.default_rng(seed))
        if self.kind == "resize":
            return resize(image, self.value)
        return image

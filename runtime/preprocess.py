"""Pre- and post-processing between RGB images and model tensors (numpy + PIL only).

``preprocess``: uint8 HxWx3 RGB images -> float32 NCHW batch, each image resized
to the model size with PIL bilinear (``Image.resize(..., BILINEAR)``, which
antialiases when shrinking), then ``(pixel * scale - mean) / std`` per channel.

``postprocess``: one (1, h, w) probability map -> the map resized back to the
original HxW with PIL bilinear in mode ``F`` (float32), and the binary mask
``prob > threshold``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from .errors import RuntimeInputError

__all__ = ["preprocess", "postprocess", "resize_rgb"]


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear-resize a uint8 HxWx3 image to ``size`` = (H, W); no-op if already that size."""
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.Resampling.BILINEAR))


def preprocess(
    images: Sequence[np.ndarray],
    size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    scale: float = 1.0 / 255.0,
) -> np.ndarray:
    """Stack uint8 HxWx3 RGB images into a normalised float32 (N, 3, H, W) batch."""
    if len(images) == 0:
        raise RuntimeInputError("preprocess needs at least one image")
    h, w = int(size[0]), int(size[1])
    mean_a = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
    inv_std = (1.0 / np.asarray(std, dtype=np.float32)).reshape(1, 1, 3)
    batch = np.empty((len(images), 3, h, w), dtype=np.float32)
    for k, img in enumerate(images):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise RuntimeInputError(f"preprocess expects uint8 HxWx3 RGB, got {img.dtype} {img.shape}")
        x = resize_rgb(img, (h, w)).astype(np.float32) * np.float32(scale)
        batch[k] = ((x - mean_a) * inv_std).transpose(2, 0, 1)
    return batch


def postprocess(
    prob: np.ndarray, orig_hw: Sequence[int], threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Resize a (1, h, w) or (h, w) probability map to ``orig_hw`` and threshold it.

    Returns ``(prob_full, mask)``: float32 HxW and bool HxW (``prob_full > threshold``).
    """
    p = np.asarray(prob, dtype=np.float32)
    if p.ndim == 3 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 2:
        raise RuntimeInputError(f"postprocess expects a (1, h, w) or (h, w) map, got {p.shape}")
    H, W = int(orig_hw[0]), int(orig_hw[1])
    if p.shape == (H, W):
        full = np.array(p, dtype=np.float32)
    else:
        img = Image.fromarray(np.ascontiguousarray(p))  # float32 -> mode F
        full = np.asarray(img.resize((W, H), Image.Resampling.BILINEAR), dtype=np.float32).copy()
    return full, full > np.float32(threshold)

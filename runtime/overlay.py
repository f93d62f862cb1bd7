"""Visualisation: draw a predicted mask over its image (red tint plus outline).

Masked pixels are blended with pure red at ``alpha`` (default 0.45); the mask
boundary (masked pixels with an unmasked 4-neighbour, or on the image border)
is drawn in solid red so small regions stay visible.

The blend is computed once per channel value (a 256-entry table per channel, the same
float32 arithmetic and rounding as blending each pixel) and applied in bands of rows, so
an overlay costs one uint8 copy of the image plus a band's scratch, whatever the image
size: an 8000 x 8000 image does not need float copies of the whole image.
"""

from __future__ import annotations

import numpy as np

from .errors import ImageError

__all__ = ["overlay", "outline", "TINT", "ALPHA"]

TINT = (255, 0, 0)
ALPHA = 0.45
#: Rows per band (a band of an 8000-pixel-wide image is ~24 MB of uint8 RGB).
BAND_ROWS = 1024


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool HxW mask."""
    m = np.asarray(mask, dtype=bool)
    return _outline_rows(m, 0, m.shape[0])


def _outline_rows(m: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Boundary pixels of rows ``r0:r1`` of the bool mask ``m`` (neighbours outside the
    image count as unmasked)."""
    h, w = m.shape
    band = np.zeros((r1 - r0 + 2, w + 2), dtype=bool)
    lo, hi = max(r0 - 1, 0), min(r1 + 1, h)
    band[lo - (r0 - 1): hi - (r0 - 1), 1:-1] = m[lo:hi]
    interior = band[:-2, 1:-1] & band[2:, 1:-1] & band[1:-1, :-2] & band[1:-1, 2:]
    return band[1:-1, 1:-1] & ~interior


def _blend_tables(alpha: float, tint: tuple[int, int, int]) -> np.ndarray:
    """(3, 256) uint8: channel value v blended with the tint, rint(v * (1 - a) + t * a) in float32."""
    v = np.arange(256, dtype=np.float32)
    color = np.asarray(tint, dtype=np.float32)
    keep = np.float32(1.0 - alpha)
    return np.stack([np.rint(v * keep + color[c] * np.float32(alpha)) for c in range(3)]).astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = ALPHA,
            tint: tuple[int, int, int] = TINT) -> np.ndarray:
    """uint8 HxWx3 copy of ``image`` (uint8 HxWx3 RGB) with ``mask`` tinted and outlined."""
    image = np.asarray(image)
    m = np.asarray(mask, dtype=bool)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"overlay: expected a uint8 HxWx3 RGB image, got {image.dtype} {image.shape}")
    if image.shape[:2] != m.shape:
        raise ImageError(f"overlay: image {image.shape[:2]} and mask {m.shape} differ in size")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ImageError(f"overlay: alpha must be in [0, 1], got {alpha}")
    out = np.array(image, dtype=np.uint8, order="C")
    tables = _blend_tables(float(alpha), tint)
    solid = np.asarray(tint, dtype=np.uint8)
    for r0 in range(0, m.shape[0], BAND_ROWS):
        r1 = min(r0 + BAND_ROWS, m.shape[0])
        band_mask = m[r0:r1]
        if not band_mask.any():
            continue
        edge = _outline_rows(m, r0, r1)
        band = out[r0:r1]
        for c in range(3):
            channel = band[:, :, c]
            np.copyto(channel, tables[c][channel], where=band_mask)
            channel[edge] = solid[c]
    return out

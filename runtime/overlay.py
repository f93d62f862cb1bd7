"""Visualisation: draw a predicted mask over its image (red tint plus outline).

Masked pixels are blended with pure red at ``alpha`` (default 0.45); the mask
boundary (masked pixels with an unmasked 4-neighbour, or on the image border)
is drawn in solid red so small regions stay visible.
"""

from __future__ import annotations

import numpy as np

__all__ = ["overlay", "outline", "TINT", "ALPHA"]

TINT = (255, 0, 0)
ALPHA = 0.45


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool HxW mask."""
    m = np.asarray(mask, dtype=bool)
    p = np.pad(m, 1, mode="constant", constant_values=False)
    interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~interior


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = ALPHA,
            tint: tuple[int, int, int] = TINT) -> np.ndarray:
    """uint8 HxWx3 copy of ``image`` with ``mask`` tinted and outlined."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    out = image.astype(np.float32)
    m = np.asarray(mask, dtype=bool)
    color = np.asarray(tint, dtype=np.float32)
    out[m] = out[m] * (1.0 - alpha) + color * alpha
    out[outline(m)] = color
    return np.rint(out).astype(np.uint8)

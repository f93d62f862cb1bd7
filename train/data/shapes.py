"""Random forgery regions: rotated ellipses, star-shaped polygons and blobs (unions of
overlapping ellipses), sized to a target fraction of the image area."""
from __future__ import annotations

import numpy as np
from skimage.draw import ellipse, polygon

SHAPES = ("ellipse", "polygon", "blob")


def _ellipse(mask: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float) -> None:
    rr, cc = ellipse(cy, cx, max(ry, 1.0), max(rx, 1.0), shape=mask.shape, rotation=angle)
    mask[rr, cc] = True


def random_region(rng: np.random.Generator, height: int, width: int,
                  area: tuple[float, float] = (0.03, 0.25), kind: str | None = None) -> np.ndarray:
    """A bool mask with one connected-looking region of a random ``kind`` whose area is
    roughly a random fraction in ``area`` of the image, fully inside the image."""
    kind = kind or SHAPES[rng.integers(len(SHAPES))]
    if kind not in SHAPES:
        raise ValueError(f"unknown shape {kind!r}; known: {', '.join(SHAPES)}")
    target = rng.uniform(*area) * height * width
    mask = np.zeros((height, width), dtype=bool)
    radius = np.sqrt(target / np.pi)  # of the equal-area disc
    margin_y, margin_x = min(radius * 1.2, height / 2 - 1), min(radius * 1.2, width / 2 - 1)
    cy = rng.uniform(margin_y, height - margin_y)
    cx = rng.uniform(margin_x, width - margin_x)
    if kind == "ellipse":
        aspect = rng.uniform(0.5, 2.0)
        _ellipse(mask, cy, cx, radius * np.sqrt(aspect), radius / np.sqrt(aspect), rng.uniform(0, np.pi))
    elif kind == "polygon":
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = radius * rng.uniform(0.6, 1.5, n)
        polygon_rr, polygon_cc = polygon(cy + radii * np.sin(angles), cx + radii * np.cos(angles), shape=mask.shape)
        mask[polygon_rr, polygon_cc] = True
    else:  # blob: a few overlapping ellipses around the centre
        for _ in range(int(rng.integers(2, 5))):
            r = radius * rng.uniform(0.4, 0.8)
            _ellipse(mask, cy + rng.normal(0, radius / 3), cx + rng.normal(0, radius / 3),
                     r * rng.uniform(0.7, 1.3), r * rng.uniform(0.7, 1.3), rng.uniform(0, np.pi))
    if not mask.any():  # degenerate draw on a tiny canvas: fall back to the centre pixel
        mask[int(cy), int(cx)] = True
    return mask

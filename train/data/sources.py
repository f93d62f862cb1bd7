"""Natural photographs to forge from: the samples scikit-image ships inside its wheel
(no download), as uint8 RGB arrays, and random crops of them.

Only a dozen photographs ship, so the generator multiplies them with random crops at
random scales and flips; grey images are replicated to three channels.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image
from skimage import data as skdata

#: scikit-image samples that are photographs (or photo-like scans) and ship with the wheel.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "brick", "grass",
          "gravel", "hubble_deep_field", "immunohistochemistry", "retina", "clock", "cell", "page")


@lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """The named sample as uint8 H x W x 3 (read-only, cached)."""
    if name not in PHOTOS:
        raise KeyError(f"unknown sample photo {name!r}; known: {', '.join(PHOTOS)}")
    img = np.asarray(getattr(skdata, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = np.ascontiguousarray(img[..., :3].astype(np.uint8))
    img.setflags(write=False)
    return img


def random_crop(rng: np.random.Generator, size: int, name: str | None = None,
                scale: tuple[float, float] = (0.3, 1.0)) -> tuple[np.ndarray, str]:
    """A ``size`` x ``size`` crop of a random (or the named) photo: a square window whose
    side is a random fraction ``scale`` of the photo's shorter side, resized to ``size``
    (bicubic), randomly flipped left-right. Returns (uint8 image, photo name)."""
    name = name or PHOTOS[rng.integers(len(PHOTOS))]
    src = photo(name)
    h, w = src.shape[:2]
    side = max(8, int(min(h, w) * rng.uniform(*scale)))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = Image.fromarray(src[y:y + side, x:x + side]).resize((size, size), Image.Resampling.BICUBIC)
    out = np.asarray(crop)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out), name

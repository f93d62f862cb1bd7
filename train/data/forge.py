"""The synthetic forgery generator: splicing from another photo, copy-move within the
photo, removal by inpainting, and authentic copies with empty masks.

Every sample is a pure function of (seed, index): ``ForgeryGenerator(seed=s).sample(i)``
draws from ``numpy.random.default_rng([s, i])``, so any subset can be regenerated and
the dataset does not depend on how many samples are asked for.

A forged sample is built in four steps:
1. a base crop of a bundled photo (``sources.random_crop``);
2. a random region (``shapes.random_region``: ellipse, polygon or blob);
3. the region's new content: for a splice, a crop of a *different* photo; for
   copy-move, the same image displaced; both warped by a random scale and rotation about
   the region centre (skimage ``AffineTransform`` + ``warp``), splices also get a small
   gain/offset colour change; for removal, biharmonic inpainting of the region;
4. edge blending: the content is composited with a Gaussian-feathered alpha of the region,
   then the whole image is post-processed by a random chain of resize, blur, noise and
   JPEG recompression (``distortions``). The ground truth is the binary region (resized
   with nearest neighbour when the image is).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from skimage.filters import gaussian
from skimage.restoration import inpaint_biharmonic
from skimage.transform import AffineTransform, warp

from . import distortions
from .shapes import random_region
from .sources import PHOTOS, random_crop

KINDS = ("splice", "copymove", "removal", "authentic")


@dataclass(frozen=True)
class ForgeryConfig:
    """What the generator draws from (defaults in brackets are per-sample ranges)."""

    size: int = 256
    weights: tuple[float, float, float, float] = (0.3, 0.3, 0.15, 0.25)  # splice, copymove, removal, authentic
    area: tuple[float, float] = (0.03, 0.25)  # region area / image area
    scale: tuple[float, float] = (0.75, 1.33)  # scaling of pasted content
    max_rotation: float = 30.0  # degrees
    feather: tuple[float, float] = (0.3, 1.5)  # sigma of the edge-blending alpha, px
    gain: tuple[float, float] = (0.85, 1.15)  # splice colour gain
    offset: tuple[float, float] = (-12.0, 12.0)  # splice colour offset, grey levels
    p_resize: float = 0.2
    resize: tuple[float, float] = (0.6, 1.0)
    p_blur: float = 0.2
    blur: tuple[int, ...] = (3, 5)
    p_noise: float = 0.3
    noise: tuple[float, float] = (1.0, 6.0)
    p_jpeg: float = 0.5
    jpeg: tuple[int, int] = (60, 95)

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"size must be at least 16 px, got {self.size}")
        if len(self.weights) != len(KINDS) or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ValueError(f"weights must be {len(KINDS)} non-negative numbers ({', '.join(KINDS)})")


@dataclass
class Forgery:
    image: np.ndarray  # uint8 H x W x 3
    mask: np.ndarray  # bool H x W (all False for authentic)
    kind: str
    ops: dict[str, Any] = field(default_factory=dict)  # what was done, for the dataset's meta.json

    @property
    def label(self) -> int:
        return int(self.kind != "authentic")


def _warp_about(image: np.ndarray, centre: tuple[float, float], shift: tuple[float, float],
                scale: float, angle_deg: float) -> np.ndarray:
    """``image`` resampled so that the content around ``centre + shift`` appears at
    ``centre``, scaled by ``scale`` and rotated by ``angle_deg`` (x, y coordinates)."""
    c = np.asarray(centre)
    to_origin = AffineTransform(translation=-c)
    rot_scale = AffineTransform(scale=1.0 / scale, rotation=np.deg2rad(angle_deg))
    back = AffineTransform(translation=c + np.asarray(shift))
    out = warp(image, inverse_map=to_origin + rot_scale + back, order=1, mode="reflect", preserve_range=True)
    return out.astype(np.float32)


def _composite(base: np.ndarray, content: np.ndarray, mask: np.ndarray, feather: float) -> np.ndarray:
    alpha = gaussian(mask.astype(np.float32), sigma=feather) if feather > 0 else mask.astype(np.float32)
    alpha = np.maximum(alpha, mask * 0.5)[..., None]  # keep the region itself at least half pasted
    out = alpha * content + (1.0 - alpha) * base.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class ForgeryGenerator:
    """Deterministic synthetic forgeries: ``sample(index)`` (see the module docstring)."""

    def __init__(self, config: ForgeryConfig | None = None, seed: int = 0) -> None:
        self.config = config or ForgeryConfig()
        self.seed = int(seed)

    def sample(self, index: int) -> Forgery:
        cfg = self.config
        rng = np.random.default_rng([self.seed, int(index)])
        p = np.asarray(cfg.weights, dtype=float)
        kind = KINDS[rng.choice(len(KINDS), p=p / p.sum())]
        base, base_name = random_crop(rng, cfg.size)
        ops: dict[str, Any] = {"photo": base_name}
        if kind == "authentic":
            image, mask = base, np.zeros(base.shape[:2], dtype=bool)
        else:
            mask = random_region(rng, cfg.size, cfg.size, cfg.area)
            ops["region_area"] = round(float(mask.mean()), 4)
            image = self._forge(rng, kind, base, base_name, mask, ops)
        image, mask = self._postprocess(rng, image, mask, ops)
        return Forgery(image, mask, kind, ops)

    def _forge(self, rng: np.random.Generator, kind: str, base: np.ndarray, base_name: str,
               mask: np.ndarray, ops: dict[str, Any]) -> np.ndarray:
        cfg = self.config
        if kind == "removal":
            filled = inpaint_biharmonic(base, mask, channel_axis=-1) * 255.0
            feather = float(rng.uniform(*cfg.feather))
            ops["feather"] = round(feather, 3)
            return _composite(base, filled, mask, feather)
        rows, cols = np.nonzero(mask)
        centre = (float(cols.mean()), float(rows.mean()))  # (x, y)
        scale = float(np.exp(rng.uniform(*np.log(cfg.scale))))
        angle = float(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
        if kind == "splice":
            others = [n for n in PHOTOS if n != base_name]
            donor, donor_name = random_crop(rng, cfg.size, others[rng.integers(len(others))])
            shift = (0.0, 0.0)
            ops["donor"] = donor_name
        else:  # copymove: take the content from elsewhere in the same image
            donor = base
            radius = np.sqrt(mask.sum() / np.pi)
            shift = (0.0, 0.0)
            for _ in range(20):
                src = rng.uniform(0, cfg.size, 2)
                shift = (float(src[0] - centre[0]), float(src[1] - centre[1]))
                if np.hypot(*shift) > 1.5 * radius:
                    break
            ops["shift"] = [round(s, 1) for s in shift]
        content = _warp_about(donor, centre, shift, scale, angle)
        if kind == "splice":
            gain, offset = float(rng.uniform(*cfg.gain)), float(rng.uniform(*cfg.offset))
            content = content * gain + offset
            ops.update(gain=round(gain, 3), offset=round(offset, 2))
        feather = float(rng.uniform(*cfg.feather))
        ops.update(scale=round(scale, 3), rotation=round(angle, 2), feather=round(feather, 3))
        return _composite(base, content, mask, feather)

    def _postprocess(self, rng: np.random.Generator, image: np.ndarray, mask: np.ndarray,
                     ops: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        post: list[str] = []
        if rng.random() < cfg.p_resize:
            factor = float(rng.uniform(*cfg.resize))
            image = distortions.resize(image, factor)
            mask = distortions.resize(mask.astype(np.uint8) * 255, factor, nearest=True) > 127
            post.append(f"resize {factor:.2f}")
        if rng.random() < cfg.p_blur:
            k = int(cfg.blur[rng.integers(len(cfg.blur))])
            image = distortions.gaussian_blur(image, k)
            post.append(f"blur {k}")
        if rng.random() < cfg.p_noise:
            sigma = float(rng.uniform(*cfg.noise))
            image = distortions.gaussian_noise(image, sigma, rng)
            post.append(f"noise {sigma:.1f}")
        if rng.random() < cfg.p_jpeg:
            q = int(rng.integers(cfg.jpeg[0], cfg.jpeg[1] + 1))
            image = distortions.jpeg(image, q)
            post.append(f"jpeg {q}")
        ops["post"] = post
        return image, mask

    def describe(self) -> dict[str, Any]:
        return {"seed": self.seed, **asdict(self.config)}


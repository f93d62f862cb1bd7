"""Calibration and evaluation images for the precision tools (FP16 islands, INT8 Q/DQ).

A source is a dataset on disk, read by ``train.data`` (a ``Tp/`` + ``Gt/`` folder or a JSON
list of ``[image, mask]`` pairs, the IMDL-BenCo layouts), or ``"synthetic"``: forgeries
from the project's generator (``train.data.forge.ForgeryGenerator``: splices, copy-moves,
removals and authentic copies of scikit-image's bundled photos, deterministic per seed and
index). Calibration and evaluation draw disjoint index ranges of the generator
(:data:`EVAL_START`), so an evaluation never sees a calibration image.

Images become model input through the runtime's own preprocessing with the artifact's
sidecar values (``runtime.preprocess``), so calibration sees what deployment sees.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from runtime.preprocess import preprocess
from runtime.sidecar import PreprocessSpec
from train.data import DataError, load_pair, read_samples

SYNTHETIC = "synthetic"
EVAL_START = 1_000_000  # first generator index of evaluation images (calibration starts at 0)


class CalibrationError(ValueError):
    """A calibration source cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class LabeledImage:
    """One calibration / evaluation image with its ground-truth mask (all False: authentic)."""

    image: np.ndarray  # uint8 HxWx3 RGB
    mask: np.ndarray  # bool HxW, True = manipulated
    name: str


def load_images(source: str | Path | None, n: int, *, size: int = 256, seed: int = 0,
                start: int = 0) -> list[LabeledImage]:
    """``n`` images from ``source``: a dataset path, or ``"synthetic"``/None (generated at
    ``size`` x ``size`` from generator indices ``start .. start + n - 1``). For a dataset,
    ``start`` skips that many pairs."""
    if n < 1:
        raise CalibrationError(f"need at least one image, asked for {n}")
    if source is None or str(source) == SYNTHETIC:
        return synthetic_images(n, size=size, seed=seed, start=start)
    try:
        pairs = read_samples(source)[start:start + n]
        if not pairs:
            raise CalibrationError(f"{source}: no images left after skipping {start}")
        out = []
        for pair in pairs:
            image, mask = load_pair(pair)
            out.append(LabeledImage(image, mask, str(pair.image)))
        return out
    except DataError as err:
        raise CalibrationError(str(err)) from None


def synthetic_images(n: int, *, size: int = 256, seed: int = 0, start: int = 0) -> list[LabeledImage]:
    """Generated forgeries ``start .. start + n - 1`` of the project's generator."""
    from train.data.forge import ForgeryConfig, ForgeryGenerator

    gen = ForgeryGenerator(ForgeryConfig(size=size), seed=seed)
    out = []
    for index in range(start, start + n):
        f = gen.sample(index)
        out.append(LabeledImage(f.image, f.mask, f"synthetic-{seed}-{index}-{f.kind}"))
    return out


def input_batches(images: list[LabeledImage], pre: PreprocessSpec) -> list[np.ndarray]:
    """Each image as a float32 (1, 3, H, W) model input, preprocessed like the runtime does."""
    return [preprocess([s.image], pre.size, pre.mean, pre.std, pre.scale) for s in images]


def masks_at(images: list[LabeledImage], size: tuple[int, int]) -> list[np.ndarray]:
    """Ground-truth masks resized (nearest neighbour) to the model's output size (H, W)."""
    h, w = int(size[0]), int(size[1])
    return [np.asarray(Image.fromarray(s.mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)) > 127
            for s in images]

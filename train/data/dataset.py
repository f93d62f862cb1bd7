"""Torch side of the data: the training/validation ``ForgeryDataset``, the shared
preprocessing (resize + mean/std), and ``ResumableSampler``, which makes an epoch's order
a function of (seed, epoch) and can start an epoch part-way (exact resume).

Augmentation randomness (horizontal flip, the papers' only augmentation) is drawn from
``numpy.random.default_rng([seed, epoch, index])``: the sampler hands the dataset
``(index, epoch)`` keys, so a sample looks the same whichever worker loads it and
whether or not the run was resumed.
"""
from __future__ import annotations

from itertools import islice
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler

from .folders import Sample, load_pair


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 H x W x 3 -> size x size x 3 (bilinear, antialiased by PIL)."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """bool H x W -> size x size (nearest neighbour)."""
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)) > 127


def to_tensor(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 H x W x 3 -> normalised float32 (3, H, W)."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class ForgeryDataset(Dataset):
    """Pairs from ``read_samples`` as model inputs at ``size`` x ``size``.

    Item keys are an index, or ``(index, epoch)`` from ``ResumableSampler`` (then a
    training dataset, ``augment=True``, flips left-right with probability 0.5, drawn from
    (seed, epoch, index)). Items: ``image`` (3, S, S) normalised, ``mask`` (1, S, S) in
    {0, 1}, ``label`` () 1.0 when the full-resolution mask has a forged pixel, ``index``."""

    def __init__(self, samples: Sequence[Sample], size: int, mean: Sequence[float], std: Sequence[float],
                 augment: bool = False, seed: int = 0) -> None:
        self.samples = list(samples)
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.augment, self.seed = augment, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = (key, None) if isinstance(key, int) else key
        image, mask = load_pair(self.samples[index])
        label = float(mask.any())
        image, mask = resize_image(image, self.size), resize_mask(mask, self.size)
        if self.augment and epoch is not None:
            rng = np.random.default_rng([self.seed, epoch, index])
            if rng.random() < 0.5:
                image, mask = image[:, ::-1], mask[:, ::-1]
        return {"image": to_tensor(image, self.mean, self.std),
                "mask": torch.from_numpy(np.array(mask, dtype=np.float32))[None],
                "label": torch.tensor(label), "index": torch.tensor(index)}


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (per-epoch shuffle from seed + epoch, one shard per rank)
    that yields ``(index, epoch)`` keys and can skip the first ``skip`` samples of its
    shard (``set_position``), so a resumed run sees exactly the batches it had left."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.skip = 0

    def set_position(self, epoch: int, skip: int = 0) -> None:
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in islice(super().__iter__(), self.skip, None):
            yield int(index), self.epoch

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)

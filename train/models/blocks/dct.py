"""Fixed 2-D DCT-II basis images, built as constants (no FFT/DFT ops anywhere).

``MultiSpectralAttention`` is M2SFormer's channel attention over those bases; the frequency
table is FcaNet's "top16" selection (Qin et al., 2021), defined on a 7 x 7 grid and scaled
to the feature size.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

# FcaNet "top16" frequencies on a 7 x 7 grid (u: vertical, v: horizontal index).
FCA_TOP16_U = (0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2)
FCA_TOP16_V = (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2)


def dct_1d(freq: int, length: int) -> torch.Tensor:
    """Orthonormal DCT-II basis vector of frequency ``freq`` sampled at ``length`` points."""
    pos = torch.arange(length, dtype=torch.float64)
    vec = torch.cos(math.pi * freq * (pos + 0.5) / length) / math.sqrt(length)
    if freq != 0:
        vec = vec * math.sqrt(2.0)
    return vec


FREQUENCY_RULES = ("fcanet", "authors")


def top_frequencies(k: int = 16, height: int = 7, width: int = 7, rule: str = "fcanet") -> list[tuple[int, int]]:
    """The first ``k`` FcaNet top frequencies, rescaled from the 7 x 7 grid to ``height`` x ``width``.

    ``rule="fcanet"``: u * (height // 7), FcaNet's scaling (4u on a 32 x 32 map).
    ``rule="authors"``: (u * height) // 7, what M2SFormer's public code computes
    (``u * 32 // 7`` evaluated left to right; e.g. u = 6 gives 27, not 24)."""
    if not 1 <= k <= len(FCA_TOP16_U):
        raise ValueError(f"k must be in 1..{len(FCA_TOP16_U)}, got {k}")
    if rule not in FREQUENCY_RULES:
        raise ValueError(f"rule must be one of {FREQUENCY_RULES}, got {rule!r}")
    pairs = zip(FCA_TOP16_U[:k], FCA_TOP16_V[:k])
    if rule == "authors":
        return [((u * height) // 7, (v * width) // 7) for u, v in pairs]
    su, sv = max(height // 7, 1), max(width // 7, 1)
    return [(u * su, v * sv) for u, v in pairs]


def dct_basis(height: int, width: int, freqs: list[tuple[int, int]]) -> torch.Tensor:
    """Stack of 2-D DCT basis images, shape (len(freqs), height, width), float32."""
    images = [torch.outer(dct_1d(u, height), dct_1d(v, width)) for u, v in freqs]
    return torch.stack(images).to(torch.float32)


class MultiSpectralAttention(nn.Module):
    """Channel attention from fixed 2-D DCT basis images (M2SFormer Sec. 3.2, step 2).

    The (N, C, S, S) feature is multiplied by each of ``k`` basis images; each product is
    average- and max-pooled, both pooled vectors are averaged over the frequencies, and a
    shared bottleneck (C -> C/r -> C) scores them; sigmoid of the sum weights the channels.
    The average of a product with a basis image is that DCT coefficient, so the average
    branch is linear in the feature: with ``fold_average`` (set by the export rewrite
    ``constant_dct``) it is one MatMul with the mean basis image instead of ``k`` products
    and reductions. Same value either way; no FFT/DFT op on any path. ``frequency_rule``
    scales the frequency table to the map size (``top_frequencies``)."""

    def __init__(self, channels: int, size: int = 32, k: int = 16, reduction: int = 16,
                 frequency_rule: str = "fcanet") -> None:
        super().__init__()
        basis = dct_basis(size, size, top_frequencies(k, size, size, frequency_rule))
        self.register_buffer("basis", basis, persistent=False)  # (k, S, S)
        self.register_buffer("mean_basis", basis.mean(0).reshape(-1, 1) / (size * size), persistent=False)
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1, bias=False))
        self.fold_average = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if (h, w) != tuple(self.basis.shape[-2:]):
            raise ValueError(f"MultiSpectralAttention expects {tuple(self.basis.shape[-2:])} maps, got {(h, w)}")
        spectral = (x.unsqueeze(1) * self.basis[None, :, None]).flatten(3)  # (N, k, C, S*S)
        mx = spectral.amax(dim=3).mean(dim=1)
        if self.fold_average:
            avg = (x.flatten(2) @ self.mean_basis).squeeze(2)
        else:
            avg = spectral.mean(dim=3).mean(dim=1)
        weights = torch.sigmoid(self.mlp(avg[:, :, None, None]) + self.mlp(mx[:, :, None, None]))
        return x * weights

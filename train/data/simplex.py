"""Simplex noise (Perlin 2001; Gustavson's 2-D formulation), vectorised in torch, with
octaves, for DiffForensics' stage-1 diffusion (Algorithm 1: nu = 2^-6, N = 6, gamma = 0.8,
after AnoDDPM).

``simplex_noise(shape, generator)`` returns one noise field per (sample, channel): a
fresh permutation table ("randomly generate simplex seed") and a random offset per field,
octave o sampled at frequency nu 2^o (cycles per pixel) with amplitude gamma^o, summed,
then standardised per field to zero mean and unit variance (our choice: the DDPM
objective predicts epsilon and assumes unit variance; the paper does not say how the
octave sum is scaled).
"""
from __future__ import annotations

import math

import torch

_F2 = 0.5 * (math.sqrt(3.0) - 1.0)
_G2 = (3.0 - math.sqrt(3.0)) / 6.0
_GRADIENTS = torch.tensor([[1, 1], [-1, 1], [1, -1], [-1, -1], [1, 0], [-1, 0],
                           [0, 1], [0, -1], [1, 1], [-1, 1], [1, -1], [-1, -1]], dtype=torch.float32)


def simplex2d(x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """2-D simplex noise at points (x, y) of shape (F, H, W), in about [-1, 1]; ``perm``
    (F, 512) long holds one permutation of 0..255, repeated twice, per field."""
    s = (x + y) * _F2
    i, j = torch.floor(x + s), torch.floor(y + s)
    t = (i + j) * _G2
    x0, y0 = x - (i - t), y - (j - t)
    i1 = (x0 > y0).long()
    j1 = 1 - i1
    corners = ((x0, y0, 0, 0),
               (x0 - i1 + _G2, y0 - j1 + _G2, i1, j1),
               (x0 - 1.0 + 2.0 * _G2, y0 - 1.0 + 2.0 * _G2, 1, 1))
    ii, jj = i.long() & 255, j.long() & 255
    table = perm.reshape(perm.shape[0], -1)
    lookup = lambda idx: torch.gather(table, 1, idx.flatten(1)).reshape(idx.shape)  # noqa: E731
    grads = _GRADIENTS.to(x.device)
    total = torch.zeros_like(x)
    for cx, cy, di, dj in corners:
        g = grads[lookup(ii + di + lookup(jj + dj)) % 12]
        falloff = (0.5 - cx * cx - cy * cy).clamp_min(0.0)
        total = total + falloff ** 4 * (g[..., 0] * cx + g[..., 1] * cy)
    return 70.0 * total


def simplex_noise(shape: tuple[int, int, int, int], generator: torch.Generator | None = None,
                  frequency: float = 2.0 ** -6, octaves: int = 6, decay: float = 0.8,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Octave simplex noise of ``shape`` (N, C, H, W), standardised per (N, C) field.
    Random draws come from ``generator`` (CPU), so a seeded generator gives the same
    noise on any device."""
    n, c, h, w = shape
    fields = n * c
    perms = torch.argsort(torch.rand(fields, 256, generator=generator), dim=1)
    perms = torch.cat([perms, perms], dim=1).to(device)  # (fields, 512)
    offsets = (torch.rand(fields, 2, 1, 1, generator=generator) * 256.0).to(device)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device),
                            torch.arange(w, dtype=torch.float32, device=device), indexing="ij")
    out = torch.zeros(fields, h, w, device=device)
    for o in range(octaves):
        scale = frequency * 2.0 ** o
        out += decay ** o * simplex2d(xx * scale + offsets[:, 0], yy * scale + offsets[:, 1], perms)
    out = out.reshape(n, c, h, w)
    mean = out.mean(dim=(2, 3), keepdim=True)
    std = out.std(dim=(2, 3), keepdim=True, unbiased=False).clamp_min(1e-6)
    return (out - mean) / std

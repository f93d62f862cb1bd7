"""Positional and timestep encodings: 2-D sine encoding (DETR) and diffusion timestep
embedding (DDPM / Transformer sinusoid)."""
from __future__ import annotations

import math

import torch


def sine_position_2d(height: int, width: int, dim: int, temperature: float = 10000.0,
                     normalize: bool = True) -> torch.Tensor:
    """DETR's 2-D sine positional encoding, shape (dim, height, width).

    Half of the channels encode y, half encode x, each as interleaved sin/cos of the
    (optionally [0, 2*pi]-normalised) coordinate at geometric frequencies."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4, got {dim}")
    npf = dim // 2
    y = torch.arange(1, height + 1, dtype=torch.float32)[:, None].expand(height, width)
    x = torch.arange(1, width + 1, dtype=torch.float32)[None, :].expand(height, width)
    if normalize:
        eps, scale = 1e-6, 2 * math.pi
        y = y / (height + eps) * scale
        x = x / (width + eps) * scale
    dim_t = torch.arange(npf, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / npf)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=3).flatten(2)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=3).flatten(2)
    return torch.cat((py, px), dim=2).permute(2, 0, 1).contiguous()


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of diffusion timesteps ``t`` (shape (N,)), shape (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb

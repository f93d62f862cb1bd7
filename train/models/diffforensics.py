"""DiffForensics (CVPR 2024): a SegFormer encoder and a time-conditioned UNet decoder,
pre-trained as a DDPM denoiser (stage 1) and fine-tuned at a fixed timestep for forgery
localization and detection with edge cue enhancement (stage 2).

Paper: shared/papers/004_e030ba30863e5718.txt (no public code). What is built (Fig. 2):

- encoder E_phi: SegFormer MiT (ADE20K weights when the user has them, Sec. 3.1);
- decoder D_theta: UNet decoder blocks on the four MiT stages, each conditioned on the
  diffusion timestep through a sinusoidal embedding + MLP added inside DDPM ResBlocks;
- stage 1 (Algorithm 1, Eq. 1): a noise-prediction head, ``forward(x_t, t, stage=1)``;
- stage 2 (Sec. 3.2): localization head, image-level detection head and the Edge Cue
  Enhancement Module (ECEM, Eqs. 2-3) on the three decoder scales, at fixed t_f = 5
  (Table 6), ``forward(x, stage=2)``; ``predict`` bakes t_f in as a constant.

The paper publishes no parameter or FLOP count, so the spec has no figures. Simplex noise
(nu = 2^-6, 6 octaves, decay 0.8) belongs to the stage-1 data pipeline, not to the model.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks.backbones import MIT_ADE20K, SMALL_MIT, MiTEncoder
from .blocks.convs import conv_bn_act
from .blocks.heads import IMLModel
from .blocks.posenc import timestep_embedding
from .registry import ModelSpec, register


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with ``groups`` reduced, for small widths, to a divisor of ``channels``
    that leaves at least 2 channels per group (one channel per group would be instance
    norm, which erases the per-channel time shift of ``TimeResBlock``)."""
    return nn.GroupNorm(math.gcd(groups, max(channels // 2, 1)), channels)


class TimeResBlock(nn.Module):
    """DDPM residual block (Ho et al., 2020): GN-SiLU-conv3x3, + Linear(SiLU(temb)) added
    per channel, GN-SiLU-dropout-conv3x3, residual (1x1 conv when widths differ)."""

    def __init__(self, cin: int, cout: int, time_dim: int, dropout: float = 0.0, norm_groups: int = 32) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin, norm_groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(time_dim, cout)
        self.norm2, self.conv2 = group_norm(cout, norm_groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class UpBlock(nn.Module):
    """UNet decoder block: nearest upsampling to the skip's size (DDPM), concatenation with
    the encoder skip, ``depth`` time-conditioned ResBlocks."""

    def __init__(self, cin: int, skip: int, cout: int, time_dim: int, depth: int = 2, dropout: float = 0.0,
                 norm_groups: int = 32) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TimeResBlock(cin + skip if i == 0 else cout, cout, time_dim, dropout, norm_groups)
                                    for i in range(depth))

    def forward(self, x: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], dim=1)
        for block in self.blocks:
            x = block(x, temb)
        return x


def edge_cues(d: torch.Tensor) -> torch.Tensor:
    """Eq. 2, g = |V * |H * d||: absolute difference of horizontally adjacent pixels
    (H = [1, -1]), then of vertically adjacent pixels (V = [1, -1]^T) of that map; each
    difference is written to the current row/column, the last one gets 0 (replicate
    border, no spurious edge at the image border)."""
    h = (d[..., :, :-1] - d[..., :, 1:]).abs()
    h = F.pad(h, (0, 1))
    v = (h[..., :-1, :] - h[..., 1:, :]).abs()
    return F.pad(v, (0, 0, 0, 1))


class ECEM(nn.Module):
    """Edge Cue Enhancement Module (Eqs. 2-3): 3x3 conv of d - g to one channel. The module
    returns the logits; sigma and the upsampling U of Eq. 3 are applied by the caller
    (upsampled logits, so a BCE/Dice-with-logits loss can be used)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return self.conv(d - edge_cues(d))


class DiffForensics(IMLModel):
    """DiffForensics.

    ``forward(x_t, t, stage=1)`` -> ``{"noise": (N, 3, H, W)}`` (epsilon prediction for the
    DDPM objective of Eq. 1; ``t`` an int or (N,) tensor in [0, T]).
    ``forward(x, stage=2)`` -> ``{"mask": (N, 1, H, W) logits, "edges": [3 x (N, 1, H, W)
    logits], "cls": (N, 1) logit}`` at t = ``t_infer`` (pass ``t`` to override).
    ``predict(x)`` -> (sigmoid(mask), sigmoid(cls)); t_infer is a constant in the graph and
    neither the ECEM nor the noise head runs.

    Paper-given: SegFormer encoder (ADE20K weights: ``pretrained=True`` loads
    ``nvidia/segformer-<variant>-finetuned-ade-512-512``, or give a local path; off by
    default, no download; frozen in stage 1:
    ``freeze_encoder``), UNet decoder with time embedding, three decoder scales each with
    an ECEM, localization and detection heads, ``t_infer=5``, ``diffusion_steps=1000``.

    Our choices (arguments): ``encoder="b2"`` (the paper does not name the variant; MiT-B2
    is the size forensic SegFormer models use, e.g. TruFor, and SegFormer-B2 has an ADE20K
    512 x 512 checkpoint matching the paper's 512 x 512 input); ``decoder_channels=(256,
    128, 64)`` at strides 16/8/4 with ``blocks_per_scale=2`` ResBlocks each, nearest
    upsampling, GroupNorm(32), ``dropout=0``; sinusoid width = finest decoder width and
    ``time_dim`` = 4 x that (DDPM's ratio); the noise head (GN-SiLU-conv3x3 after bilinear
    upsampling of the stride-4 map to the input size, DDPM's output layer) and the
    localization head (3x3 conv-BN-ReLU + 1x1 conv at stride 4, logits upsampled
    bilinearly) read the last decoder block; the detection head is global average pooling
    of that block + a 2-layer MLP; ``edges[k-1]`` is f_k^e with k = 1 the finest scale,
    so Eq. 7's weights 1/2^(k-1) give the finest edges the largest weight, as the text
    says. The DDPM schedule of ``q_sample`` is DDPM's linear beta 1e-4..0.02.
    """

    def __init__(self, encoder: str | dict[str, Any] = "b2", pretrained: bool | str = False,
                 decoder_channels: Sequence[int] = (256, 128, 64), blocks_per_scale: int = 2,
                 time_dim: int | None = None, norm_groups: int = 32, dropout: float = 0.0,
                 t_infer: int = 5, diffusion_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 drop_path_rate: float = 0.1) -> None:
        super().__init__()
        if len(decoder_channels) != 3:
            raise ValueError("DiffForensics has three decoder scales (strides 16, 8, 4)")
        self.encoder = MiTEncoder(encoder, pretrained, in_channels=3, drop_path_rate=drop_path_rate,
                                  default_checkpoint=MIT_ADE20K)
        self.encoder_frozen = False  # freeze_encoder()
        enc = self.encoder.channels
        self.t_infer = t_infer
        self.freq_dim = decoder_channels[-1]
        time_dim = time_dim or 4 * self.freq_dim
        self.time_mlp = nn.Sequential(nn.Linear(self.freq_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        ins = [enc[3], *decoder_channels[:-1]]
        skips = [enc[2], enc[1], enc[0]]
        self.up = nn.ModuleList(UpBlock(i, s, o, time_dim, blocks_per_scale, dropout, norm_groups)
                                for i, s, o in zip(ins, skips, decoder_channels))
        fine = decoder_channels[-1]
        # stage 1: epsilon prediction at the input size
        self.noise_head = nn.Sequential(group_norm(fine, norm_groups), nn.SiLU(), nn.Conv2d(fine, 3, 3, padding=1))
        # stage 2
        self.loc_head = nn.Sequential(conv_bn_act(fine, fine, 3), nn.Conv2d(fine, 1, 1))
        self.cls_head = nn.Sequential(nn.Linear(fine, fine), nn.ReLU(inplace=True), nn.Linear(fine, 1))
        self.ecem = nn.ModuleList(ECEM(c) for c in reversed(list(decoder_channels)))  # k = 1 finest
        betas = torch.linspace(beta_start, beta_end, diffusion_steps, dtype=torch.float64)
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, 0).float(), persistent=False)

    # --- training helpers -------------------------------------------------------------
    def freeze_encoder(self, frozen: bool = True) -> None:
        """Stage 1 freezes the (ADE20K) encoder (Sec. 3.1); stage 2 trains everything.
        A frozen encoder gets no gradients and stays in eval mode whatever ``train()`` is
        called with, so its stochastic depth and dropout are off: it computes the same
        features for the same image, as the pre-trained network it stands for."""
        self.encoder.requires_grad_(not frozen)
        self.encoder_frozen = frozen
        self.encoder.train(self.training and not frozen)

    def train(self, mode: bool = True) -> "DiffForensics":
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward diffusion x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps (Algorithm 1, line 6);
        ``t`` (N,) integer steps in [1, T] (a_t indexed at t - 1)."""
        a = self.alphas_cumprod[t.long() - 1].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise

    # --- network ------------------------------------------------------------------------
    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(timestep_embedding(t, self.freq_dim))

    def _decode(self, x: torch.Tensor, temb: torch.Tensor) -> list[torch.Tensor]:
        """Decoder outputs d at strides 16, 8, 4 (coarse to fine)."""
        feats = self.encoder(x)
        d, outs = feats[3], []
        for up, skip in zip(self.up, (feats[2], feats[1], feats[0])):
            d = up(d, skip, temb)
            outs.append(d)
        return outs

    def _fixed_temb(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding of t_infer, (1, time_dim): built from constants only (no time input in
        an exported graph), broadcast over the batch."""
        return self.time_embedding(torch.full((1,), float(self.t_infer), device=x.device))

    def _localize(self, d: torch.Tensor, size: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        mask = F.interpolate(self.loc_head(d), size=size, mode="bilinear", align_corners=False)
        return mask, self.cls_head(d.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor, t: torch.Tensor | int | None = None, stage: int = 2) -> dict[str, Any]:
        size = x.shape[-2:]
        if stage == 1:
            if t is None:
                raise ValueError("stage 1 (denoising pre-training) needs the timestep t")
            t = torch.as_tensor(t, device=x.device).float().reshape(-1).expand(x.shape[0])
            d = self._decode(x, self.time_embedding(t))[-1]
            d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
            return {"noise": self.noise_head(d)}
        if stage != 2:
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        if t is None:
            temb = self._fixed_temb(x)
        else:
            temb = self.time_embedding(torch.as_tensor(t, device=x.device).float().reshape(-1).expand(x.shape[0]))
        ds = self._decode(x, temb)
        mask, cls = self._localize(ds[-1], size)
        edges = [F.interpolate(ecem(d), size=size, mode="bilinear", align_corners=False)
                 for ecem, d in zip(self.ecem, reversed(ds))]
        return {"mask": mask, "edges": edges, "cls": cls}

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self._decode(x, self._fixed_temb(x))[-1]
        mask, cls = self._localize(d, x.shape[-2:])
        return torch.sigmoid(mask), torch.sigmoid(cls)



register(ModelSpec(
    name="diffforensics",
    title="DiffForensics",
    paper="004_e030ba30863e5718.txt",
    builder=DiffForensics,
    input_size=512,
    training_outputs={
        "noise": "stage 1 only (forward(x_t, t, stage=1)): predicted noise (N, 3, H, W) for the DDPM "
                 "objective of Eq. 1",
        "mask": "stage 2: localization logits (N, 1, H, W) at the input size (weighted BCE + Dice, Eqs. 4-6)",
        "edges": "stage 2: list of 3 ECEM edge logits (N, 1, H, W), finest scale first (Dice with weights "
                 "1/2^(k-1), Eq. 7)",
        "cls": "stage 2: image-level detection logit (N, 1) (weighted BCE, Eq. 8)",
    },
    figures=(),  # the paper publishes no params / FLOPs
    small={"encoder": SMALL_MIT, "decoder_channels": (32, 16, 16), "blocks_per_scale": 2},
    small_size=64,
))

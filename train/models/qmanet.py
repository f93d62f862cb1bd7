"""QMA-Net (ICLR 2026 submission): query-driven multi-stage alternating feature extraction
and interaction for image manipulation localization.

Paper: shared/papers/001_bd9dd0a124116c4e.txt (no public code). The pipeline (Fig. 2):

1. MNFM (Sec. 3.2): SRM + BayarConv + a NoisePrint++-style DnCNN, fused by a convolution
   into a 3-channel noise view X_noise.
2. Two SegFormer MiT encoders, GAE on RGB and LAE on X_noise, run stage by stage (Eq. 1);
   after every stage cross-modal feature alignment and the DFCM (Eqs. 2-4: channel
   recalibration, group-conv Q/K/V projections, bidirectional cross-attention, residual)
   produce (R_i, N_i), which feed the next stage of each encoder.
3. Tamper-aware queries refined per level by the MFAM (Eqs. 5-6: cross-attention to R_i,
   cross-attention to N_i, self-attention; an MLP hands them to the next level).
4. QMFD (Eq. 7, App. A.2): DCM dilated-conv fusion of (R_i, N_i), query-weighted features,
   concatenation of the four levels, 1 x 1 prediction head.
5. Edge supervision heads on R_1..R_4 (Sec. 3.4), training only.

The paper gives no widths, head counts, group numbers or dilation rates. Everything it leaves
open is a constructor argument; the docstring of ``QMANet`` lists which defaults are ours.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks.attention import EncoderLayer, scaled_attention
from .blocks.backbones import SMALL_MIT, MiTEncoder
from .blocks.convs import DnCNN, conv_bn_act
from .blocks.filters import BayarConv, SRMConv
from .blocks.heads import IMLModel, score_from_map
from .registry import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, PaperFigure, register


class MNFM(nn.Module):
    """Multi-domain Noise-sensitive Fusion Module (Sec. 3.2): SRM residuals (3 maps),
    BayarConv (3 maps) and a NoisePrint++ DnCNN (1 map) concatenated and fused by one
    convolution into the 3-channel noise view.

    SRM and BayarConv see the network input (normalised, as in MVSS-Net / IMDL-BenCo);
    the DnCNN sees the image de-normalised back to [0, 1], the range NoisePrint++ is
    trained on in TruFor (our choice, so converted NoisePrint++ weights apply as they are)."""

    def __init__(self, denoiser_depth: int = 17, denoiser_width: int = 64, bayar_kernel: int = 5,
                 fusion_kernel: int = 3, out_channels: int = 3,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.srm = SRMConv(3)
        self.bayar = BayarConv(3, 3, bayar_kernel)
        self.noiseprint = DnCNN(3, 1, depth=denoiser_depth, width=denoiser_width)
        self.fusion = nn.Conv2d(3 + 3 + 1, out_channels, fusion_kernel, padding=fusion_kernel // 2)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noiseprint = self.noiseprint(x * self.std + self.mean)
        return self.fusion(torch.cat([self.srm(x), self.bayar(x), noiseprint], dim=1))


NOISEPRINT_WARNING = (
    "QMA-Net built without noiseprint_weights: its NoisePrint++ branch is a randomly initialised, trainable "
    "DnCNN (not the paper's fixed, pre-trained NoisePrint++), and that branch is {share} of the model's "
    "compute; pass noiseprint_weights=PATH (NoisePrint++ converted to this DnCNN layout) to use the real one")
_noiseprint_warned = False


def warn_random_noiseprint(share: str = "63% (146.1 of 233.6 GMACs at 512 x 512)") -> bool:
    """Warn, once per process, that the NoisePrint++ branch is a random DnCNN; True if it warned."""
    global _noiseprint_warned
    if _noiseprint_warned:
        return False
    _noiseprint_warned = True
    warnings.warn(NOISEPRINT_WARNING.format(share=share), UserWarning, stacklevel=3)
    return True


class ChannelRecalibration(nn.Module):
    """Gamma in Eq. 3: adaptive average pooling, a projection head (1x1 conv, ReLU, 1x1 conv,
    sigmoid; squeeze-excitation form, our choice) and channel-wise reweighting."""

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, min_hidden)
        self.head = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.head(x.mean(dim=(2, 3), keepdim=True))


class DFCM(nn.Module):
    """Cross-modal feature alignment + Dual-modal Feature Cross-guided Module (Eqs. 2-4).

    delta (alignment) is a 1x1 conv taking the RGB features into the noise features' space;
    delta^-1 (another 1x1 conv) takes the RGB attention output back before the residual
    ("after being aligned back to the original feature space"): our reading of Sec. 3.2.
    Q/K/V projections G are 1x1 group convolutions (``groups``), one set per modality; with
    ``heads == groups`` every attention head sees exactly one channel group. Keys and values
    are average-pooled by ``sr_ratio`` first (our choice, as the MiT backbone's own
    attention reduces its keys; ``sr_ratio=1`` gives full attention). Full attention in
    every DFCM (``QMANet(dfcm_sr_ratios=(1, 1, 1, 1))``) costs 310.4 fvcore GMACs at
    512 x 512 instead of 233.6 (the four DFCMs 79.6 GMACs instead of 2.8; its attention
    over the 128 x 128 stage-1 tokens alone holds most of that), with no parameter more.

    The attention is built on ``scaled_attention``; ``fused_attn`` switches it between the
    SDPA and the explicit MatMul-Softmax-MatMul path (``set_fused_attention``). ``kernel``
    (None by default), as in ``MultiHeadAttention``: a callable ``(q, k, v, heads) -> out`` on
    (B, tokens, C) tensors that replaces that core (the export's onnxruntime attention);
    inference only."""

    def __init__(self, channels: int, groups: int = 8, heads: int | None = None, reduction: int = 16,
                 sr_ratio: int = 1) -> None:
        super().__init__()
        heads = heads or groups
        if channels % groups or channels % heads:
            raise ValueError(f"DFCM: {channels} channels are not divisible by groups {groups} / heads {heads}")
        self.heads, self.sr_ratio = heads, sr_ratio
        self.align = nn.Conv2d(channels, channels, 1)
        self.align_back = nn.Conv2d(channels, channels, 1)
        self.recal_rgb = ChannelRecalibration(channels, reduction)
        self.recal_noise = ChannelRecalibration(channels, reduction)

        def gcm() -> nn.Conv2d:
            return nn.Conv2d(channels, channels, 1, groups=groups)

        self.q_rgb, self.k_rgb, self.v_rgb = gcm(), gcm(), gcm()
        self.q_noise, self.k_noise, self.v_noise = gcm(), gcm(), gcm()
        self.fused_attn = True
        self.kernel: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, heads, hw, C/heads)
        b, c = x.shape[:2]
        return x.reshape(b, self.heads, c // self.heads, -1).transpose(-2, -1)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.kernel is not None:  # (B, C, h, w) -> (B, hw, C): channel c = head * C/heads + j, as _tokens
            out = self.kernel(*(x.flatten(2).transpose(1, 2) for x in (q, k, v)), self.heads)
            return out.transpose(1, 2).reshape(q.shape)
        out = scaled_attention(self._tokens(q), self._tokens(k), self._tokens(v), self.fused_attn)
        return out.transpose(-2, -1).reshape(q.shape)

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.sr_ratio) if self.sr_ratio > 1 else x

    def forward(self, rgb: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb_mid = self.recal_rgb(self.align(rgb))  # Eq. 3: Gamma^R(delta(R^init))
        noise_mid = self.recal_noise(noise)  # Eq. 3: Gamma^N(N^init)
        rgb_kv, noise_kv = self._reduce(rgb_mid), self._reduce(noise_mid)
        # Eq. 4: each modality queries the other.
        from_noise = self._attend(self.q_rgb(rgb_mid), self.k_noise(noise_kv), self.v_noise(noise_kv))
        from_rgb = self._attend(self.q_noise(noise_mid), self.k_rgb(rgb_kv), self.v_rgb(rgb_kv))
        return rgb + self.align_back(from_noise), noise + from_rgb


class MFAM(nn.Module):
    """Multi-domain Feature Aggregation Module (Eqs. 5-6): three transformer blocks, the
    queries cross-attend to the RGB tokens, then to the noise tokens, then self-attend.
    (The extraction garbled Eq. 6's K/V arguments; the text says blocks 1-2 cross-attend to
    "both modalities" and block 3 is self-attention, which is what is built.)"""

    def __init__(self, dim: int, heads: int = 8, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        ffn = int(dim * mlp_ratio)
        self.from_rgb = EncoderLayer(dim, heads, ffn, dropout)  # cross-attention: memory=rgb
        self.from_noise = EncoderLayer(dim, heads, ffn, dropout)  # cross-attention: memory=noise
        self.refine = EncoderLayer(dim, heads, ffn, dropout)

    def forward(self, queries: torch.Tensor, rgb: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        queries = self.from_rgb(queries, memory=rgb.flatten(2).transpose(1, 2))
        queries = self.from_noise(queries, memory=noise.flatten(2).transpose(1, 2))
        return self.refine(queries)


class DCM(nn.Module):
    """Dilated Convolution Module of the QMFD (App. A.2, after Wang et al. 2018): a 1x1
    conv-BN-ReLU fuses the concatenated (R_i, N_i), then a hybrid-dilated-convolution stack
    of 3x3 conv-BN-ReLU layers (rates ``dilations``, default 1-2-5, the gridding-free HDC
    pattern of that paper) enlarges the receptive field. Output width = input width."""

    def __init__(self, channels: int, dilations: Sequence[int] = (1, 2, 5)) -> None:
        super().__init__()
        self.reduce = conv_bn_act(2 * channels, channels, 1)
        self.body = nn.Sequential(*[conv_bn_act(channels, channels, 3, dilation=d) for d in dilations])

    def forward(self, rgb: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.body(self.reduce(torch.cat([rgb, noise], dim=1)))


class QMANet(IMLModel):
    """QMA-Net. ``forward(x)`` returns ``{"mask": logits (N,1,H,W), "edges": [4 x (N,1,H,W)
    logits]}``; ``predict(x)`` returns (sigmoid(mask), max of the map) and does not run the
    edge heads (the paper has no image-level head, so the score is ``score_from_map``).

    Paper-given: two SegFormer MiT encoders (variant not stated; ``encoder="b3"``: two
    MiT-B3 encoders, 88.1M, are the variant consistent with the published 114.0M params),
    16 queries (App. A.7), MFAM = 2 cross-attention + 1 self-attention blocks, QMFD with a
    1x1 prediction head, MNFM from SRM + BayarConv + NoisePrint++ + a fusion conv, edge
    supervision on the RGB features of every stage.

    Our choices (arguments): query width follows the stage width (App. A.2: "each query
    shares the same length as the pixel's feature vector"; the inter-level MLP maps
    C_i -> C_{i+1}); ``mfam_heads=8``, ``mfam_mlp_ratio=4``, ``dropout=0``;
    ``dfcm_groups=8`` (= heads), ``dfcm_reduction=16`` (SE default), ``dfcm_sr_ratios=(8, 4,
    2, 1)`` (MiT's); ``dcm_dilations=(1, 2, 5)``; ``bayar_kernel=5``; ``fusion_kernel=3``;
    NoisePrint++ as a 17-layer, 64-channel DnCNN (TruFor), ``noiseprint_weights`` a local
    state-dict file, frozen (and kept in eval mode) when weights are given unless
    ``freeze_noiseprint`` says otherwise. Without weights the DnCNN is random and trainable,
    not NoisePrint++, and the model warns once per process: at 512 x 512 that stand-in is
    146.1 of the model's 233.6 fvcore GMACs (63%) while the paper's NoisePrint++ is a fixed,
    pre-trained extractor; edge heads 3x3 conv-BN-ReLU (``edge_channels``)
    + 1x1 conv; logits are upsampled bilinearly to the input size; ``pretrained``: True for
    the ImageNet ``nvidia/mit-<variant>`` encoders (both), or a local path / hub id; off by
    default (no download).
    """

    def __init__(self, encoder: str | dict[str, Any] = "b3", pretrained: bool | str = False,
                 num_queries: int = 16, noiseprint_weights: str | None = None,
                 freeze_noiseprint: bool | None = None, denoiser_depth: int = 17, denoiser_width: int = 64,
                 bayar_kernel: int = 5, fusion_kernel: int = 3, dfcm_groups: int = 8,
                 dfcm_heads: int | None = None, dfcm_reduction: int = 16,
                 dfcm_sr_ratios: Sequence[int] = (8, 4, 2, 1), mfam_heads: int = 8, mfam_mlp_ratio: float = 4.0,
                 dropout: float = 0.0, dcm_dilations: Sequence[int] = (1, 2, 5), edge_channels: int = 64,
                 drop_path_rate: float = 0.1) -> None:
        super().__init__()
        self.mnfm = MNFM(denoiser_depth, denoiser_width, bayar_kernel, fusion_kernel)
        if noiseprint_weights:
            self.mnfm.noiseprint.load_weights(noiseprint_weights)
        else:
            warn_random_noiseprint()
        self.freeze_noiseprint = bool(noiseprint_weights) if freeze_noiseprint is None else freeze_noiseprint
        if self.freeze_noiseprint:
            self.mnfm.noiseprint.requires_grad_(False)
        self.gae = MiTEncoder(encoder, pretrained, in_channels=3, drop_path_rate=drop_path_rate)
        self.lae = MiTEncoder(encoder, pretrained, in_channels=3, drop_path_rate=drop_path_rate)
        widths = self.gae.channels
        self.dfcm = nn.ModuleList(DFCM(c, dfcm_groups, dfcm_heads, dfcm_reduction, sr)
                                  for c, sr in zip(widths, dfcm_sr_ratios))
        self.queries = nn.Parameter(torch.randn(num_queries, widths[0]) * 0.02)  # Q_tag
        self.mfam = nn.ModuleList(MFAM(c, mfam_heads, mfam_mlp_ratio, dropout) for c in widths)
        self.query_mlp = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.ReLU(inplace=True), nn.Linear(b, b))
                                       for a, b in zip(widths[:-1], widths[1:]))
        self.dcm = nn.ModuleList(DCM(c, dcm_dilations) for c in widths)
        self.head = nn.Conv2d(len(widths) * num_queries, 1, 1)
        self.edge_heads = nn.ModuleList(nn.Sequential(conv_bn_act(c, edge_channels, 3), nn.Conv2d(edge_channels, 1, 1))
                                        for c in widths)

    def train(self, mode: bool = True) -> "QMANet":
        super().train(mode)
        if self.freeze_noiseprint:
            self.mnfm.noiseprint.eval()
        return self

    def _encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Multi-stage alternating extraction and interaction (Eqs. 1-4)."""
        rgb, noise = x, self.mnfm(x)
        rgbs, noises = [], []
        for i, dfcm in enumerate(self.dfcm):
            rgb, noise = dfcm(self.gae.stage(i, rgb), self.lae.stage(i, noise))
            rgbs.append(rgb)
            noises.append(noise)
        return rgbs, noises

    def _decode(self, rgbs: list[torch.Tensor], noises: list[torch.Tensor]) -> torch.Tensor:
        """Query aggregation (Eqs. 5-6) and QMFD (Eq. 7); logits at the stage-1 resolution."""
        q = self.queries.unsqueeze(0).expand(rgbs[0].shape[0], -1, -1)
        size = rgbs[0].shape[-2:]
        maps = []
        for i, (rgb, noise) in enumerate(zip(rgbs, noises)):
            q = self.mfam[i](q if i == 0 else self.query_mlp[i - 1](q), rgb, noise)
            fused = self.dcm[i](rgb, noise)  # F_i^fin (B, C_i, h, w)
            b, c, h, w = fused.shape
            weighted = (q @ fused.reshape(b, c, h * w)).reshape(b, -1, h, w)  # Q_i (x) F_i^fin
            if i:
                weighted = F.interpolate(weighted, size=size, mode="bilinear", align_corners=False)
            maps.append(weighted)
        return self.head(torch.cat(maps, dim=1))

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        size = x.shape[-2:]
        rgbs, noises = self._encode(x)
        mask = F.interpolate(self._decode(rgbs, noises), size=size, mode="bilinear", align_corners=False)
        edges = [F.interpolate(head(rgb), size=size, mode="bilinear", align_corners=False)
                 for head, rgb in zip(self.edge_heads, rgbs)]
        return {"mask": mask, "edges": edges}

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgbs, noises = self._encode(x)
        logits = F.interpolate(self._decode(rgbs, noises), size=x.shape[-2:], mode="bilinear", align_corners=False)
        prob = torch.sigmoid(logits)
        return prob, score_from_map(prob)



register(ModelSpec(
    name="qmanet",
    title="QMA-Net",
    paper="001_bd9dd0a124116c4e.txt",
    builder=QMANet,
    input_size=512,
    training_outputs={
        "mask": "tampered-region logits (N, 1, H, W) at the input size (Dice loss, weight alpha=0.2)",
        "edges": "list of 4 tamper-boundary logits (N, 1, H, W), one per stage's RGB features, upsampled to "
                 "the input size (Dice loss, weight beta=0.8)",
    },
    figures=(
        PaperFigure("QMA-Net paper, Table 10", 512, 114.0, 230.0,
                    note="batch 1; counting tool not named (trained and evaluated on IMDL-BenCo, whose "
                         "complexity script uses fvcore, i.e. GMACs); of ours, the NoisePrint++ DnCNN "
                         "holds 146.1 GMACs, full DFCM attention would be 310.4"),
    ),
    small={"encoder": SMALL_MIT, "num_queries": 4, "denoiser_depth": 3, "denoiser_width": 8, "dfcm_groups": 4,
           "mfam_heads": 2, "edge_channels": 8},
    small_size=64,
))

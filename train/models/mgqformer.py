"""MGQFormer (Zeng et al., AAAI 2024): a mask-guided query-based transformer for image
manipulation localization. Two ViT-B/16 encoders (RGB and BayarConv noise view), SCAM
spatial + channel attention fusion, a query decoder with two learnable query tokens
(authentic / forged) and cosine-similarity masks; in training only, guiding query tokens
encoded from the point-noised ground-truth mask go through the same decoder.

Paper: shared/papers/000_4389a517b31529c3.txt (no official code). Sections named below are
the paper's ("Multi-Branch Feature Extractor", "Mask Transformer Decoder", "Mask-Guided
Training"). Choices the paper leaves open are constructor arguments, marked "(our choice)".

Inference path (``predict``, exported):
  X -> BayarConv -> X_n; ViT(X), ViT'(X_n) -> patch tokens (cls dropped, after the ViT's
  final LayerNorm) -> concat Z_c (2D channels) -> conv -> Z_m (D channels) -> SCAM:
  Z_f = CAM(Z_m) + SAM(Z_m) + Z_m (Eq. 1-3) -> linear to the decoder width -> joint
  transformer layers over [Z_f; LQT] -> M* = norm(proj(Z_f*)) norm(proj(LQT*))^T (Eq. 4),
  cosine similarities per patch and class -> class norm (Eq. 5's "norm", see below) ->
  softmax over the 2 classes -> bilinear upsample to the input size (Eq. 5); prob = the
  forged-class channel, score = ``score_from_map``.

Training-only path (``forward(x, gt_mask)``; never run by ``predict``):
  the GT mask gets point noise (a fraction mu = 0.01 of the pixels, chosen at random, is
  inverted; "Mask-Guided Training") -> a small conv net -> 2 maps on the patch grid,
  flattened, so each guiding token is a length-N map ("GQT in R^{2 x N}", which keeps the
  mask's location and shape) -> linear N -> decoder width -> GQT. GQT goes through the same
  decoder; the auxiliary mask M_aux is computed from Z_f* and GQT* exactly as M is from
  LQT*. The losses (L_loc and L_aux cross-entropy, L_guide = 1 - cos(LQT*, GQT*) with
  lambda = 0.5, Eq. 6-8) belong to training code; ``forward`` returns what they need.

Choices of ours (the paper does not give them):
- SCAM: one set of Q/K/V 1x1 projections shared by CAM and SAM ("nearly the same as channel
  attention, except for transposed Q and K"), separate output 1x1 convs; the channel
  attention normalises each output channel's weights (DANet's CAM: softmax over the key
  channels), and both attentions are scaled by 1/sqrt(d) (``scam_scale``; the equations
  show no scale, which saturates the softmax at d = 768). ``fuse_kernel`` = 1 for the
  conv that maps Z_c (2D) to Z_m (D).
- decoder: Segmenter's mask transformer, which Eq. 4-5 follow: a linear from D to
  ``dec_dim`` (768), ``dec_layers`` = 6 (paper), 12 heads, FFN 4 x dim, dropout 0.1,
  pre-norm blocks with a final LayerNorm (``norm_first``; False uses the DETR post-norm
  ``EncoderLayer``), queries and decoder weights truncated-normal initialised (paper).
- mask scores = ``logit_scale`` x cosine similarity (default 1, fixed: Eq. 4 has no
  temperature; ``learn_scale=True`` makes it a learnable parameter), then the "norm" of
  Eq. 5, ``class_norm=True`` (the paper's; off by default, see below): Segmenter's
  ``mask_norm``, a LayerNorm over the class dimension with a learnable scale and shift (Segmenter applies it to the scores,
  before the softmax; the equation's norm(softmax(.)) order would not leave probabilities,
  so Segmenter's order is built). Without it (``class_norm=False``) the cosine scores
  bound the forged probability to [sigmoid(-2), sigmoid(2)] = [0.12, 0.88], so the score
  never exceeds 0.881. With two classes the LayerNorm maps the score pair (a, b) to
  +-(a - b) / sqrt((a - b)^2 + 4 eps) ~ +-1, then scale and shift: the class decision
  comes from the features, the confidence from the learned affine (initialised to 1 and
  0: forged probability sigmoid(+-2) at start, as without it). Near a tie the norm
  amplifies score differences by up to 1 / (2 sqrt(eps)) ~ 158 (eps 1e-5): float rounding
  between attention paths or runtimes shows ~100x larger in the mask, and the gradient
  to the features is small away from a tie. Why it is off by default (measured on the
  small configuration): with it, the mixed-precision FP16 export differs from FP32 by
  0.014 in probability on unseen images (the project's FP16 tolerance is 0.01; 1.2e-4
  without it), fused and explicit attention by 2.5e-5 instead of 2e-7. A user who wants
  Eq. 5 as printed sets ``class_norm=True`` (or ``learn_scale=True`` for a learnable
  temperature, which also lifts the 0.881 bound).
- guiding path: ``guide_channels`` (4 stride-2 3x3 conv + BN + ReLU stages, so stride 16 =
  the patch size), then a 1x1 conv to 2 maps, adaptive average pooling to the configured
  patch grid (so any input size works) and a linear grid -> ``dec_dim``;
  ``guide_mode`` "joint" is the paper's (the method section, "Mask-Guided Training":
  "the GQT together with image features Z_f and LQT are sent to the transformer
  decoder", one pass over [Z_f; LQT; GQT], where GQT "interact[s] with other queries and
  assists the decoder in refining the LQT"); "separate" (default, our choice) runs two
  passes, [Z_f; LQT] -> M exactly as at inference and [Z_f; GQT] -> M_aux (the
  abstract's "feed GQT and LQT ... respectively" also reads this way). Joint without an
  attention mask lets Z_f and LQT read tokens encoded from the ground truth, so the mask
  that L_loc trains on sees the answer that inference never has (DN-DETR masks such
  attention for this reason); "separate" avoids that leak without a mask, hence the default. The guiding path runs whenever ``gt_mask`` is given; point noise
  only in training mode.
"""
from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks.attention import EncoderLayer, FeedForward, MultiHeadAttention, scaled_attention
from .blocks.filters import BayarConv
from .blocks.heads import IMLModel, score_from_map
from .registry import ModelSpec, register

AUTHENTIC, FORGED = 0, 1


def point_noise(mask: torch.Tensor, mu: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Invert round(mu * H * W) randomly chosen pixels of each binary mask (N, 1, H, W)
    ("Mask-Guided Training": point noise as in DN-DETR's box noise)."""
    n, _, h, w = mask.shape
    count = int(round(mu * h * w))
    if count == 0:
        return mask
    scores = torch.rand(n, h * w, generator=generator, device=mask.device)
    idx = scores.topk(count, dim=1).indices
    flip = torch.zeros(n, h * w, device=mask.device, dtype=torch.bool).scatter_(1, idx, True)
    flat = mask.reshape(n, h * w)
    return torch.where(flip, 1.0 - flat, flat).reshape(mask.shape)


class SCAM(nn.Module):
    """Spatial and Channel Attention Module (Eq. 1-3) on an NCHW map Z_m:
    Z_f = CAM(Z_m) + SAM(Z_m) + Z_m, single head, 1x1-conv projections."""

    def __init__(self, dim: int, scaled: bool = True) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Conv2d(dim, dim, 1) for _ in range(3))
        self.proj_channel = nn.Conv2d(dim, dim, 1)
        self.proj_spatial = nn.Conv2d(dim, dim, 1)
        self.scaled = scaled
        self.fused = True

    def set_fused(self, fused: bool) -> None:
        self.fused = fused

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if not self.scaled:  # cancel scaled_attention's 1/sqrt(d)
            q = q * (q.shape[-1] ** 0.5)
        return scaled_attention(q, k, v, self.fused)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n, c, h, w = z.shape
        # channel-first sequences (N, 1, c, hw): rows are channels
        q, k, v = (p(z).reshape(n, 1, c, h * w) for p in (self.q, self.k, self.v))
        # Eq. 1, CAM: channel-to-channel attention softmax(Q K) (c x c) mixing value channels
        cam = self._attend(q, k, v).reshape(n, c, h, w)
        # Eq. 2, SAM: position-to-position attention softmax(Q^T K^T) (hw x hw) on V
        qt, kt, vt = (t.transpose(-2, -1) for t in (q, k, v))
        sam = self._attend(qt, kt, vt).transpose(-2, -1).reshape(n, c, h, w)
        return self.proj_channel(cam) + self.proj_spatial(sam) + z  # Eq. 3


class JointBlock(nn.Module):
    """Pre-norm transformer layer over the joint sequence [patches; queries] (Segmenter's
    mask transformer block): x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, attn_drop=dropout, proj_drop=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn, dropout, act=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class GuideEncoder(nn.Module):
    """Noised GT mask (N, 1, H, W) -> guiding query tokens (N, 2, dim): a conv net to two
    maps on the patch grid, each flattened into a token of length N = gh * gw ("GQT in
    R^{2 x N}"), then a linear N -> dim."""

    def __init__(self, grid: tuple[int, int], dim: int, channels: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for cout in channels:
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
            cin = cout
        layers.append(nn.Conv2d(cin, 2, 1))
        self.body = nn.Sequential(*layers)
        self.grid = tuple(grid)
        self.embed = nn.Linear(self.grid[0] * self.grid[1], dim)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        maps = F.adaptive_avg_pool2d(self.body(mask), self.grid)  # (N, 2, gh, gw)
        return self.embed(maps.flatten(2))


class MGQFormer(IMLModel):
    """MGQFormer (see the module docstring for the data flow and our choices).

    Args:
        vit: timm ViT name for both encoders (paper: ViT-B/16 at 384, AugReg weights).
        img_size: input size given to timm (position-embedding grid); the paper's 384.
        pretrained: timm ImageNet weights for both encoders (off: no downloads).
        vit_kwargs: more ``timm.create_model`` options (e.g. ``depth`` for tests,
            ``dynamic_img_size=True`` for inputs other than ``img_size``).
        bayar_kernel: BayarConv kernel size (5, as in Bayar & Stamm and MVSS-Net).
        fuse_kernel: kernel of the conv Z_c (2D) -> Z_m (D) (our choice 1).
        scam_scale: 1/sqrt(d) scaling in SCAM (our choice True).
        dec_dim, dec_layers, dec_heads, dec_ffn, dec_dropout: decoder width 768 (our
            choice), 6 layers (paper), 12 heads, FFN 4 x width, dropout 0.1 (our choices,
            Segmenter's / ViT-B's values); ``dec_ffn`` None means 4 x ``dec_dim``.
        norm_first: pre-norm joint blocks (Segmenter, default) or DETR post-norm.
        logit_scale, learn_scale: temperature on the cosine similarities (paper: 1, fixed).
        class_norm: Eq. 5's norm over the classes (Segmenter's LayerNorm; the paper's;
            default False, see the module docstring for the measured reason).
        guide_channels: widths of the guiding conv net (our choice).
        guide_mode: "separate" (default, no ground-truth leak into M) or "joint" (the
            paper's single pass, its method section; see the module docstring).
        noise_mu: fraction of GT pixels inverted before guiding (paper: 0.01, Fig. 4).

    ``img_size`` follows the input size wherever the kit builds the model (train, export,
    profile: ``train.checkpoint.ModelBuild`` sets ``input_size_option`` from ``--size``), and
    sizes must be multiples of the patch (``size_multiple``).
    """

    input_size_option = "img_size"

    def __init__(self, vit: str = "vit_base_patch16_384", img_size: int = 384, pretrained: bool = False,
                 vit_kwargs: dict[str, Any] | None = None, bayar_kernel: int = 5, fuse_kernel: int = 1,
                 scam_scale: bool = True, dec_dim: int = 768, dec_layers: int = 6, dec_heads: int = 12,
                 dec_ffn: int | None = None, dec_dropout: float = 0.1, norm_first: bool = True,
                 logit_scale: float = 1.0, learn_scale: bool = False, class_norm: bool = False,
                 guide_channels: tuple[int, ...] = (32, 64, 128, 256), guide_mode: str = "separate",
                 noise_mu: float = 0.01) -> None:
        super().__init__()
        if guide_mode not in ("joint", "separate"):
            raise ValueError(f"guide_mode must be 'joint' or 'separate', got {guide_mode!r}")
        kwargs = {"img_size": img_size, "num_classes": 0, **(vit_kwargs or {})}
        self.bayar = BayarConv(3, 3, bayar_kernel)
        self.rgb_encoder = timm.create_model(vit, pretrained=pretrained, **kwargs)
        self.noise_encoder = timm.create_model(vit, pretrained=pretrained, **kwargs)
        dim = self.rgb_encoder.embed_dim
        self.patch = self.rgb_encoder.patch_embed.patch_size[0]
        self.size_multiple = self.patch
        grid = tuple(self.rgb_encoder.patch_embed.grid_size)
        self.fuse = nn.Conv2d(2 * dim, dim, fuse_kernel, padding=fuse_kernel // 2)
        self.scam = SCAM(dim, scaled=scam_scale)
        # mask transformer decoder ("Mask Transformer Decoder", Eq. 4-5)
        dec_ffn = dec_ffn or 4 * dec_dim
        self.proj_dec = nn.Linear(dim, dec_dim)
        self.queries = nn.Parameter(torch.zeros(1, 2, dec_dim))  # LQT: authentic, forged
        if norm_first:
            self.decoder = nn.ModuleList(JointBlock(dec_dim, dec_heads, dec_ffn, dec_dropout)
                                         for _ in range(dec_layers))
            self.decoder_norm: nn.Module = nn.LayerNorm(dec_dim)
        else:
            self.decoder = nn.ModuleList(EncoderLayer(dec_dim, dec_heads, dec_ffn, dec_dropout)
                                         for _ in range(dec_layers))
            self.decoder_norm = nn.Identity()
        self.proj_patch = nn.Linear(dec_dim, dec_dim)
        self.proj_classes = nn.Linear(dec_dim, dec_dim)
        scale = torch.tensor(float(logit_scale))
        if learn_scale:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)
        self.class_norm: nn.Module = nn.LayerNorm(2) if class_norm else nn.Identity()  # Eq. 5 "norm"
        # training-only guiding path ("Mask-Guided Training")
        self.guide = GuideEncoder(grid, dec_dim, tuple(guide_channels))
        self.guide_mode = guide_mode
        self.noise_mu = noise_mu
        self._init_decoder()

    def _init_decoder(self) -> None:
        nn.init.trunc_normal_(self.queries, std=0.02)
        for module in (self.proj_dec, self.decoder, self.proj_patch, self.proj_classes, self.guide.embed):
            for m in module.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)

    # -- shared by predict and forward ---------------------------------------------------
    def _tokens(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """ViT patch tokens of the last block (after its final norm), NCHW (N, D, h, w)."""
        tokens = encoder.forward_features(x)[:, encoder.num_prefix_tokens:]
        n, _, d = tokens.shape
        return tokens.transpose(1, 2).reshape(n, d, x.shape[-2] // self.patch, x.shape[-1] // self.patch)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Fused image feature tokens Z_f projected to the decoder width, (N, hw, dec_dim)."""
        z_c = torch.cat([self._tokens(self.rgb_encoder, x), self._tokens(self.noise_encoder, self.bayar(x))], 1)
        z_f = self.scam(self.fuse(z_c))
        return self.proj_dec(z_f.flatten(2).transpose(1, 2))

    def decode(self, z: torch.Tensor, *queries: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Joint transformer layers over [Z_f; queries...]; returns Z_f* and each query set*."""
        x = torch.cat([z, *queries], dim=1)
        for layer in self.decoder:
            x = layer(x)
        x = self.decoder_norm(x)
        n = z.shape[1]
        out, start = [], n
        for q in queries:
            out.append(x[:, start:start + q.shape[1]])
            start = start + q.shape[1]  # not +=: under tracing ``start`` is a tensor aliasing n
        return x[:, :n], out

    def mask_logits(self, z: torch.Tensor, q: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Eq. 4: logit_scale x cos(proj(Z_f*), proj(Q*)), then Eq. 5's class norm,
        reshaped to (N, 2, h, w)."""
        patches = F.normalize(self.proj_patch(z), dim=-1)
        classes = F.normalize(self.proj_classes(q), dim=-1)
        cos = patches @ classes.transpose(1, 2)  # (N, hw, 2)
        scores = self.class_norm(self.logit_scale * cos)
        return scores.transpose(1, 2).reshape(z.shape[0], 2, *size)

    def _upsample(self, probs: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(probs, size=size, mode="bilinear", align_corners=False)  # Eq. 5

    # -- contract ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, gt_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        grid = (x.shape[-2] // self.patch, x.shape[-1] // self.patch)
        z = self.features(x)
        lqt = self.queries.expand(x.shape[0], -1, -1)
        out: dict[str, torch.Tensor] = {}
        if gt_mask is None:
            z_star, (lqt_star,) = self.decode(z, lqt)
        else:
            gt = gt_mask.to(x.dtype).reshape(x.shape[0], 1, *x.shape[-2:])
            noised = point_noise(gt, self.noise_mu) if self.training else gt
            gqt = self.guide(noised)
            if self.guide_mode == "joint":
                z_star, (lqt_star, gqt_star) = self.decode(z, lqt, gqt)
                z_aux = z_star
            else:
                z_star, (lqt_star,) = self.decode(z, lqt)
                z_aux, (gqt_star,) = self.decode(z, gqt)
            aux = self.mask_logits(z_aux, gqt_star, grid)
            out["aux_logits"] = aux
            out["aux_mask"] = self._upsample(aux.softmax(1), x.shape[-2:])
            out["lqt"], out["gqt"] = lqt_star, gqt_star
            out["noised_mask"] = noised
        logits = self.mask_logits(z_star, lqt_star, grid)
        out["logits"] = logits
        out["mask"] = self._upsample(logits.softmax(1), x.shape[-2:])
        return out

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = (x.shape[-2] // self.patch, x.shape[-1] // self.patch)
        z_star, (lqt_star,) = self.decode(self.features(x), self.queries.expand(x.shape[0], -1, -1))
        probs = self._upsample(self.mask_logits(z_star, lqt_star, grid).softmax(1), x.shape[-2:])
        prob = probs[:, FORGED:FORGED + 1]
        return prob, score_from_map(prob)


register(ModelSpec(
    name="mgqformer",
    title="MGQFormer",
    paper="000_4389a517b31529c3.txt",
    builder=MGQFormer,
    input_size=384,
    # the paper's encoders are AugReg ViTs (Steiner et al. 2021), trained with mean = std = 0.5
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    training_outputs={
        "logits": "class scores (N, 2, H/16, W/16) on the patch grid: logit_scale x cosine "
                  "similarity of pixel features and the refined LQT* (class-normed with "
                  "class_norm=True, Eq. 5) (channel 0 authentic, 1 forged)",
        "mask": "M = bilinear upsample of softmax(logits) to the input size, (N, 2, H, W), "
                "class probabilities: L_loc is the pixel cross-entropy of M with the GT",
        "aux_logits": "only with gt_mask: the same scores from the refined GQT* (N, 2, H/16, W/16)",
        "aux_mask": "only with gt_mask: M_aux (N, 2, H, W) class probabilities; L_aux is the "
                    "cross-entropy of M_aux with the clean (un-noised) GT, Eq. 6",
        "lqt": "only with gt_mask: refined learnable query tokens LQT* (N, 2, dec_dim), rows "
               "authentic / forged; L_guide = 1 - cos(LQT*, GQT*) row by row, weight 0.5 (Eq. 7-8)",
        "gqt": "only with gt_mask: refined guiding query tokens GQT* (N, 2, dec_dim), rows as lqt",
        "noised_mask": "only with gt_mask: the point-noised GT that the guiding tokens encode (N, 1, H, W)",
    },
    figures=(),  # the paper publishes no parameter / FLOP / speed figures
    small={"vit": "vit_tiny_patch16_224", "img_size": 64, "vit_kwargs": {"depth": 2}, "dec_dim": 32,
           "dec_layers": 2, "dec_heads": 2, "dec_ffn": 64, "guide_channels": (4, 8, 8, 16)},
    small_size=64,
))

"""TransForensics (Hao et al., ICCV 2021): a ResNet-50 FCN, one DETR-style transformer
encoder per scale C2..C5, and dense correction modules that fuse the branches' predictions
coarse to fine by multiplication, with deep supervision on every branch.

Paper: shared/papers/003_151b28ec671b4df9.txt (no official code). Section references are to
the paper; choices the paper leaves open are constructor arguments and marked "(our choice)".

Architecture (Fig. 2, Sec. 3.1-3.3), per branch k in 5, 4, 3, 2 (strides 32, 16, 8, 4):

- backbone stage output C_k (256/512/1024/2048 channels for ResNet-50);
- 1x1 conv C -> d (d = 256), plus a 2-D sine positional encoding added once, before the
  encoder ("we supplement the features with a sine positional encoding before passing
  them into transformer encoders", Sec. 3.1), into a transformer encoder of 6 layers
  (8 heads, FFN 2048, dropout 0.1), giving E_k;
- dense correction (Sec. 3.3, Fig. 5): "a 1x1 convolution is used to change the dimension
  of features from different branches" -> every branch has a 1x1 conv d -> 1 giving its raw
  prediction A_k = conv1x1(E_k). The coarsest branch's output is y5 = A_5. For a finer
  branch k, B = y_{k+1} (the adjacent coarser branch's corrected prediction, "the semantic
  prediction [that] can help to correct A") is upsampled to A_k's size, passed through a
  sigmoid and thresholded at 0.5 to give the fusing weights w; the fusion is C = A_k * w
  and "the final mask prediction is computed by a 3x3 convolution with stride 1 and
  padding 1": y_k = conv3x3(C). So the chain runs C5 -> C4 -> C3 -> C2.

Network pruning (Sec. 3.2, Fig. 4, Tables 4-5): ``output_branch`` picks the branch whose
prediction is the model's output. A model built for branch Ck contains no projection,
encoder, head or correction module of any finer branch (the backbone keeps all its stages,
since C5 needs them), so its parameters, exported graph and FLOPs shrink. C2 is the full
model (the paper's main results, Tables 1-3, are the C2 branch; Table 4).

Gradients through the 0.5 threshold: the fusing weight 1[sigmoid(up(y_{k+1})) > 0.5] is a
step function, with zero gradient almost everywhere. The forward pass always uses the hard
0/1 weight, as the paper does. ``weight_grad`` decides the backward pass (our choice):
"ste" (default) is a straight-through estimator, the weight's gradient is that of the
sigmoid, so a finer branch's loss also trains the coarser branches ("the features with
low-spatial resolution can get feedback including edges from low-level high-resolution
features", Sec. 4.4); "none" detaches the weight, each branch then learns from its own
deep-supervision loss only. Export and ``predict`` never see the estimator: in eval mode
the weight is the plain comparison. The comparison is computed as ``up(y) > 0``, which is
the same set as ``sigmoid(up(y)) > 0.5`` (sigmoid is monotonic, sigmoid(0) = 0.5) and
keeps ONNX Runtime and PyTorch from disagreeing at the threshold through sigmoid rounding.

Other choices of ours: ``pos_every_layer=True`` adds the encoding to queries and keys in
every encoder layer instead (DETR's arrangement; not the paper's); nearest upsampling between branches and to the output (the paper names 'nearest'
interpolation in Sec. 3.4 and calls the C3 output "block-wise", Sec. 4.4; ``upsample``);
8 heads (the paper gives none; reimplementations use DETR's 8). The paper's Table 6
"addition" fusion ablation is not built (the paper does not say what is added).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks.attention import EncoderLayer
from .blocks.backbones import timm_features
from .blocks.heads import IMLModel, score_from_map
from .blocks.posenc import sine_position_2d
from .registry import ModelSpec, PaperFigure, register

BRANCHES = ("c2", "c3", "c4", "c5")  # fine to coarse; timm ResNet feature index = level - 1


class ScaleEncoder(nn.Module):
    """Sec. 3.1 for one scale: 1x1 conv C -> d, sine positional encoding, a stack of
    DETR post-norm encoder layers over the h*w feature points. NCHW in, NCHW out."""

    def __init__(self, in_channels: int, dim: int, layers: int, heads: int, ffn: int, dropout: float,
                 pos_every_layer: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.pos_every_layer = pos_every_layer
        self.proj = nn.Conv2d(in_channels, dim, 1)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn, dropout) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        n, c, h, w = x.shape
        pos = sine_position_2d(h, w, c).to(device=x.device, dtype=x.dtype).flatten(1).t().unsqueeze(0)
        tokens = x.flatten(2).transpose(1, 2)  # (N, h*w, d)
        if not self.pos_every_layer:
            tokens, pos = tokens + pos, None
        for layer in self.layers:
            tokens = layer(tokens, pos)
        return tokens.transpose(1, 2).reshape(n, c, h, w)


class TransForensics(IMLModel):
    """TransForensics with a selectable output branch (see the module docstring).

    Args:
        output_branch: "c2" (full model, default) .. "c5"; finer branches are not built.
        backbone: timm ResNet name (paper: ResNet-50). ``backbone_kwargs`` go to
            ``timm.create_model`` (e.g. ``channels`` / ``stem_width`` for small test configs).
        pretrained: load timm ImageNet weights (off by default: no downloads).
        dim, layers, heads, ffn, dropout: encoder width 256, 6 layers, 8 heads (our choice,
            see module docstring), FFN 2048, dropout 0.1 (Sec. 3.1).
        weight_grad: "ste" (default, our choice) or "none": backward pass of the 0.5
            threshold weights (module docstring).
        upsample: interpolation mode between branches and to the output ("nearest", paper).
        pos_every_layer: False (default, the paper, Sec. 3.1: added once to the encoder
            input) or True (added to Q/K in every layer, DETR's arrangement).
    """

    def __init__(self, output_branch: str = "c2", backbone: str = "resnet50", pretrained: bool = False,
                 backbone_kwargs: dict[str, Any] | None = None, dim: int = 256, layers: int = 6,
                 heads: int = 8, ffn: int = 2048, dropout: float = 0.1, weight_grad: str = "ste",
                 upsample: str = "nearest", pos_every_layer: bool = False) -> None:
        super().__init__()
        if output_branch not in BRANCHES:
            raise ValueError(f"output_branch must be one of {BRANCHES}, got {output_branch!r}")
        if weight_grad not in ("ste", "none"):
            raise ValueError(f"weight_grad must be 'ste' or 'none', got {weight_grad!r}")
        self.output_branch = output_branch
        self.weight_grad = weight_grad
        self.upsample = upsample
        lowest = int(output_branch[1])
        # coarse to fine: the order of dense correction
        self.branches = tuple(f"c{level}" for level in range(5, lowest - 1, -1))
        out_indices = tuple(level - 1 for level in range(lowest, 6))  # ascending stride
        self.backbone = timm_features(backbone, pretrained=pretrained, out_indices=out_indices,
                                      **(backbone_kwargs or {}))
        channels = dict(zip(BRANCHES[lowest - 2:], self.backbone.feature_info.channels()))
        self.encoders = nn.ModuleDict({b: ScaleEncoder(channels[b], dim, layers, heads, ffn, dropout,
                                                       pos_every_layer) for b in self.branches})
        # Sec. 3.3: per-branch 1x1 conv d -> 1 (raw prediction A_k) ...
        self.heads = nn.ModuleDict({b: nn.Conv2d(dim, 1, 1) for b in self.branches})
        # ... and, below C5, the 3x3 conv (stride 1, padding 1) after multiplicative fusion
        self.corrections = nn.ModuleDict({b: nn.Conv2d(1, 1, 3, padding=1) for b in self.branches[1:]})

    def _resize(self, x: torch.Tensor, size) -> torch.Tensor:
        if self.upsample == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode=self.upsample, align_corners=False)

    def _fusing_weight(self, coarse: torch.Tensor, size) -> torch.Tensor:
        """1[sigmoid(up(coarse)) > 0.5], with the straight-through backward when training."""
        up = self._resize(coarse, size)
        hard = (up > 0).to(up.dtype)
        if not self.training:
            return hard
        if self.weight_grad == "none":
            return hard.detach()
        soft = torch.sigmoid(up)
        return hard + (soft - soft.detach())

    def branch_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Corrected prediction logits y_k of every built branch at its own stride."""
        features = dict(zip(BRANCHES[int(self.output_branch[1]) - 2:], self.backbone(x)))
        out: dict[str, torch.Tensor] = {}
        previous = None
        for b in self.branches:  # C5 first, then finer
            a = self.heads[b](self.encoders[b](features[b]))
            if previous is None:
                y = a
            else:
                y = self.corrections[b](a * self._fusing_weight(previous, a.shape[-2:]))
            out[b] = previous = y
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        branches = self.branch_logits(x)
        out = {"logits": self._resize(branches[self.output_branch], x.shape[-2:])}
        out.update({f"logits_{b}": y for b, y in branches.items()})
        return out

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.branch_logits(x)[self.output_branch]
        prob = torch.sigmoid(self._resize(logits, x.shape[-2:]))
        return prob, score_from_map(prob)


_SMALL = {"backbone": "resnet26", "backbone_kwargs": {"channels": (16, 32, 64, 128), "stem_width": 16},
          "dim": 32, "layers": 2, "heads": 2, "ffn": 64}

register(ModelSpec(
    name="transforensics",
    title="TransForensics",
    paper="003_151b28ec671b4df9.txt",
    builder=TransForensics,
    input_size=512,
    training_outputs={
        "logits": "output-branch logits upsampled to the input size (N, 1, H, W)",
        "logits_c5": "C5 branch logits y5 at stride 32 (N, 1, H/32, W/32): deep supervision (Dice + Focal)",
        "logits_c4": "C4 branch corrected logits y4 at stride 16 (absent when output_branch='c5')",
        "logits_c3": "C3 branch corrected logits y3 at stride 8 (absent when output_branch is 'c4' or 'c5')",
        "logits_c2": "C2 branch corrected logits y2 at stride 4 (only when output_branch='c2')",
    },
    figures=(
        PaperFigure("M2SFormer paper, Table 6 (cited)", 256, 27.6, 22.4,
                    note="cited for 'TransForensic' by another paper; the encoder TransForensics "
                         "describes (4 scales x 6 layers, d=256, FFN 2048) is larger"),
        PaperFigure("TransForensics paper, Table 5", 512,
                    note="GPU memory / inference time by output branch (batch 1, Tesla V100): "
                         "C2 6687 MB 0.11 s; C3 774 MB 0.09 s; C4 368 MB 0.08 s; C5 353 MB 0.07 s"),
    ),
    small=_SMALL,
    small_size=64,
    variants={b: {"output_branch": b} for b in BRANCHES},
))

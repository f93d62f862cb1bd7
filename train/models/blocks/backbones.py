"""Backbone access: timm feature extractors and SegFormer MiT encoders (Hugging Face
``transformers``), with the same pretrained-weights behaviour everywhere: off by default
(no downloads); a user with the weights passes ``pretrained=True`` (timm) or a local path /
hub id (MiT) on their own machine.
"""
from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn as nn

from .attention import scaled_attention

# MiT-B0..B5 (Xie et al., 2021, Table 6): stage depths and widths; heads 1/2/5/8,
# spatial-reduction ratios 8/4/2/1 and MLP ratio 4 are shared by all variants.
MIT_VARIANTS: dict[str, dict[str, Any]] = {
    "b0": {"depths": [2, 2, 2, 2], "hidden_sizes": [32, 64, 160, 256]},
    "b1": {"depths": [2, 2, 2, 2], "hidden_sizes": [64, 128, 320, 512]},
    "b2": {"depths": [3, 4, 6, 3], "hidden_sizes": [64, 128, 320, 512]},
    "b3": {"depths": [3, 4, 18, 3], "hidden_sizes": [64, 128, 320, 512]},
    "b4": {"depths": [3, 8, 27, 3], "hidden_sizes": [64, 128, 320, 512]},
    "b5": {"depths": [3, 6, 40, 3], "hidden_sizes": [64, 128, 320, 512]},
}

# The small test configurations' MiT: MiT's topology (4 stages, overlapping patch
# embeddings, spatial-reduction attention) at one block per stage and narrow widths.
SMALL_MIT: dict[str, Any] = {"depths": [1, 1, 1, 1], "hidden_sizes": [16, 32, 64, 128],
                             "num_attention_heads": [1, 2, 2, 4]}

EXPLICIT_ATTENTION = "iml_explicit"


def hf_query_at_default_scale(query: torch.Tensor, attention_mask, scaling: float | None, path: str) -> torch.Tensor:
    """For a transformers attention function whose core scales by 1/sqrt(head_dim): ``query``
    (B, heads, N, d) rescaled so that the core applies ``scaling``; refuses a mask."""
    if attention_mask is not None:
        raise ValueError(f"the {path} attention path does not take an attention mask")
    if scaling is not None and abs(scaling - query.shape[-1] ** -0.5) > 1e-12:
        query = query * (scaling * query.shape[-1] ** 0.5)
    return query


def _explicit_hf_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention interface: scale folded into Q, MatMul -> Softmax -> MatMul."""
    query = hf_query_at_default_scale(query, attention_mask, scaling, "explicit")
    out = scaled_attention(query, key, value, fused=False, dropout_p=dropout if module.training else 0.0)
    return out.transpose(1, 2).contiguous(), None


def _register_hf_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(EXPLICIT_ATTENTION, _explicit_hf_attention)


def timm_features(name: str, pretrained: bool = False, out_indices: tuple[int, ...] = (0, 1, 2, 3),
                  **kwargs: Any) -> nn.Module:
    """A timm model as a multi-scale feature extractor (``features_only``)."""
    return timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=out_indices, **kwargs)


MIT_IMAGENET = "nvidia/mit-{variant}"  # ImageNet-1k encoder weights
MIT_ADE20K = "nvidia/segformer-{variant}-finetuned-ade-512-512"  # ADE20K semantic segmentation


def mit_checkpoint(variant: str | dict[str, Any], pretrained: bool | str | None,
                   default: str = MIT_IMAGENET) -> str | None:
    """The SegFormer checkpoint ``pretrained`` names: None for False / None, ``default`` with
    the variant filled in for True (a named variant "b0".."b5" only), a given string as is."""
    if not pretrained:
        return None
    if pretrained is True:
        if not isinstance(variant, str):
            raise ValueError("pretrained=True needs a named MiT variant (b0..b5); pass a checkpoint path instead")
        return default.format(variant=variant)
    return str(pretrained)


class MiTEncoder(nn.Module):
    """SegFormer Mix-Transformer encoder from ``transformers``, exposed stage by stage.

    ``variant`` is "b0".."b5" or a dict of SegformerConfig fields (small test configs).
    ``pretrained`` is False / None (random init), True (``default_checkpoint`` for the
    variant: ``MIT_IMAGENET`` unless the model says otherwise) or a local path / hub id of a
    SegFormer checkpoint (ImageNet ``nvidia/mit-b3``, ADE20K ``MIT_ADE20K``); see
    ``mit_checkpoint``.
    ``stage(i, x)`` runs stage ``i`` on an NCHW map and returns an NCHW map, so callers can
    interleave work between stages (QMA-Net); ``forward`` returns all four stage maps.
    """

    def __init__(self, variant: str | dict[str, Any] = "b2", pretrained: bool | str | None = False,
                 in_channels: int = 3, drop_path_rate: float = 0.1, default_checkpoint: str = "") -> None:
        super().__init__()
        from transformers import SegformerConfig, SegformerModel

        _register_hf_attention()
        fields = MIT_VARIANTS[variant] if isinstance(variant, str) else dict(variant)
        pretrained = mit_checkpoint(variant, pretrained, default_checkpoint or MIT_IMAGENET)
        if pretrained:
            model = SegformerModel.from_pretrained(pretrained)
            if model.config.num_channels != in_channels:
                raise ValueError(f"checkpoint {pretrained} expects {model.config.num_channels} input channels")
        else:
            config = SegformerConfig(num_channels=in_channels, drop_path_rate=drop_path_rate, **fields)
            model = SegformerModel(config)
        model.config._attn_implementation = "sdpa"
        self.config = model.config
        self.stages = model.stages
        self.channels = list(model.config.hidden_sizes)
        self.reductions = [4, 8, 16, 32]

    def set_fused(self, fused: bool) -> None:
        self.config._attn_implementation = "sdpa" if fused else EXPLICIT_ATTENTION

    def stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.stages[index](x)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

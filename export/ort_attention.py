"""An attention rewrite for graphs that only onnxruntime will run: the core of each of our
``MultiHeadAttention`` layers exported as one ``com.microsoft::MultiHeadAttention`` node
instead of MatMul -> Softmax -> MatMul.

onnxruntime's CPU kernel of that contrib op computes attention block by block without
materialising the score matrix, so memory stays linear in the tokens: TransForensics' C2
branch at 512 x 512 (16384 tokens, 8 heads, six layers) runs in well under a GiB of
attention memory instead of ~19 GiB for the explicit graph. The graph then holds an op
outside the ONNX standard that TensorRT does not parse (``export.check`` rejects it): engines
are built from the default, explicit export. Third-party attention (timm's ViT / PVT,
transformers' MiT) is left explicit; its token counts at the papers' sizes are small.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from train.models.blocks.attention import MultiHeadAttention

from .rewrites import set_on_all

DOMAIN = "com.microsoft"
OP = "MultiHeadAttention"


class _OrtMultiHeadAttention(torch.autograd.Function):
    """Eager: scaled dot-product attention on (B, N, C) projections split into ``heads``.
    Traced by the TorchScript exporter: one onnxruntime ``MultiHeadAttention`` node (its
    default scale is 1/sqrt(C / heads), the same as ours)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        def split(x: torch.Tensor) -> torch.Tensor:
            b, n, c = x.shape
            return x.reshape(b, n, heads, c // heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        b, _, n, d = out.shape
        return out.transpose(1, 2).reshape(b, n, heads * d)

    @staticmethod
    def symbolic(g, q, k, v, heads: int):
        out = g.op(f"{DOMAIN}::{OP}", q, k, v, num_heads_i=heads)
        out.setType(q.type())
        return out


def ort_attention_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    return _OrtMultiHeadAttention.apply(q, k, v, heads)


def use_ort_attention(model: nn.Module) -> int:
    """Route every ``MultiHeadAttention`` of ``model`` through the onnxruntime op; returns how
    many layers changed."""
    return set_on_all(model, MultiHeadAttention, kernel=ort_attention_kernel)

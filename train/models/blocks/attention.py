"""Attention and transformer layers shared by the models.

One multi-head attention serves self- and cross-attention. It has two numerically
equivalent paths: ``fused`` (``F.scaled_dot_product_attention``, fast for training) and
explicit (scale folded into Q, then MatMul -> Softmax -> MatMul: the pattern TensorRT's
MHA fusion recognises and that exports with opset 17 ops only). ``set_fused_attention``
flips every attention module of a model, ours and timm's, between the two.

``MultiHeadAttention.kernel`` lets an exporter replace the attention core of our layers (the
step from projected (B, N, C) queries, keys and values to the (B, N, C) result) with a fused
operator of one runtime, e.g. onnxruntime's ``MultiHeadAttention`` (``export.ort_attention``).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def scaled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fused: bool,
                     dropout_p: float = 0.0) -> torch.Tensor:
    """Softmax attention over (..., N, d) tensors, scale 1/sqrt(d)."""
    if fused:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    q = q * (q.shape[-1] ** -0.5)
    attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    if dropout_p:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate Q/K/V projections (so keys and values may come
    from another sequence, with or without positional terms). Tensors are (B, N, C).

    ``kernel`` (None by default): a callable ``(q, k, v, heads) -> out`` on the projected
    (B, N, C) tensors that replaces the split-attend-merge core; inference only (no
    attention dropout)."""

    def __init__(self, dim: int, heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, kv_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        kv_dim = kv_dim or dim
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(kv_dim, dim, bias=qkv_bias)
        self.v = nn.Linear(kv_dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        self.fused = True
        self.kernel: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None,
                value: torch.Tensor | None = None) -> torch.Tensor:
        key = query if key is None else key
        value = key if value is None else value
        q, k, v = self.q(query), self.k(key), self.v(value)
        if self.kernel is not None:
            return self.proj_drop(self.proj(self.kernel(q, k, v, self.heads)))
        out = scaled_attention(self._split(q), self._split(k), self._split(v), self.fused,
                               self.attn_drop if self.training else 0.0)
        b, _, n, _ = out.shape
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, -1)))


class FeedForward(nn.Sequential):
    """Linear -> activation -> dropout -> Linear -> dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__(nn.Linear(dim, hidden), act(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))


class EncoderLayer(nn.Module):
    """DETR-style transformer encoder layer (post-norm); ``pos`` is added to queries and keys.
    With ``memory`` the attention reads keys and values from that sequence instead (a
    cross-attention block of the same layout; ``pos`` then applies to the queries only)."""

    def __init__(self, dim: int, heads: int = 8, ffn: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, attn_drop=dropout)
        self.drop = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn, dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None,
                memory: torch.Tensor | None = None) -> torch.Tensor:
        q = x if pos is None else x + pos
        k, v = (q, x) if memory is None else (memory, memory)
        x = self.norm1(x + self.drop(self.attn(q, k, v)))
        return self.norm2(x + self.ffn(x))


class DecoderLayer(nn.Module):
    """Query decoder layer (post-norm): self-attention among queries, cross-attention to a
    memory sequence, feed-forward. ``query_pos`` / ``memory_pos`` are added to Q / K."""

    def __init__(self, dim: int, heads: int = 8, ffn: int = 2048, dropout: float = 0.1,
                 memory_dim: int | None = None) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads, attn_drop=dropout)
        self.cross_attn = MultiHeadAttention(dim, heads, attn_drop=dropout, kv_dim=memory_dim)
        self.drop = nn.Dropout(dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn, dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, query_pos: torch.Tensor | None = None,
                memory_pos: torch.Tensor | None = None) -> torch.Tensor:
        q = x if query_pos is None else x + query_pos
        x = self.norm1(x + self.drop(self.self_attn(q, q, x)))
        q = x if query_pos is None else x + query_pos
        k = memory if memory_pos is None else memory + memory_pos
        x = self.norm2(x + self.drop(self.cross_attn(q, k, memory)))
        return self.norm3(x + self.ffn(x))


def set_fused_attention(model: nn.Module, fused: bool) -> int:
    """Switch every attention module in ``model`` (ours and timm's ``fused_attn`` ones)
    between the fused SDPA path and the explicit MatMul-Softmax-MatMul path. Modules with
    a ``set_fused(bool)`` method (wrappers of third-party attention) are switched too.
    Returns how many modules were switched."""
    count = 0
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.fused = fused
            count += 1
        elif isinstance(getattr(module, "fused_attn", None), bool):
            module.fused_attn = fused
            count += 1
        elif callable(getattr(module, "set_fused", None)):  # e.g. MiTEncoder (transformers)
            module.set_fused(fused)
            count += 1
    return count

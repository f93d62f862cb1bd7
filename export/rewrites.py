"""Named export-time rewrites: module-level changes applied before ``torch.onnx.export``
so the graph holds only what TensorRT and a lean runtime handle well. Each rewrite keeps
the model's outputs (tested) and leaves a property the graph checks can verify.

- ``explicit_attention``: every attention (ours, timm's, transformers') as
  Mul(Q, scale) -> MatMul -> Softmax -> MatMul instead of SDPA / an ``Attention`` op.
- ``constant_dct``: DCT channel attention's average branch as one MatMul with a constant
  basis (the DCT is constant-basis arithmetic everywhere: no DFT op can appear).
- ``where_difficulty``: M2SFormer's per-image easy/hard word choice as a ``Where`` over the
  two stored vectors instead of a table gather.
- ``bayar_plain_conv``: BayarConv layers replaced by plain convolutions holding the
  constrained weight (one Conv with a constant weight in the graph).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from train.models.blocks.attention import set_fused_attention
from train.models.blocks.dct import MultiSpectralAttention
from train.models.blocks.filters import BayarConv
from train.models.m2sformer import DifficultyText


@dataclass(frozen=True)
class Rewrite:
    name: str
    summary: str
    apply: Callable[[nn.Module], int]  # returns how many places it changed


def _explicit_attention(model: nn.Module) -> int:
    return set_fused_attention(model, False)


def set_on_all(model: nn.Module, cls: type, **attrs) -> int:
    """Set ``attrs`` on every ``cls`` module of ``model``; returns how many modules."""
    count = 0
    for module in model.modules():
        if isinstance(module, cls):
            for name, value in attrs.items():
                setattr(module, name, value)
            count += 1
    return count


def _constant_dct(model: nn.Module) -> int:
    return set_on_all(model, MultiSpectralAttention, fold_average=True)


def _where_difficulty(model: nn.Module) -> int:
    return set_on_all(model, DifficultyText, mode="where")


def _bayar_plain_conv(model: nn.Module) -> int:
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BayarConv):
                setattr(parent, name, child.to_conv())
                count += 1
    return count


REWRITES: dict[str, Rewrite] = {r.name: r for r in (
    Rewrite("explicit_attention", "attention as Mul(Q,scale)->MatMul->Softmax->MatMul", _explicit_attention),
    Rewrite("constant_dct", "DCT attention average branch as one constant-basis MatMul", _constant_dct),
    Rewrite("where_difficulty", "easy/hard word vector chosen by one Where", _where_difficulty),
    Rewrite("bayar_plain_conv", "BayarConv as a plain Conv with the constrained weight", _bayar_plain_conv),
)}


def apply_rewrites(model: nn.Module, names: list[str] | None = None) -> dict[str, int]:
    """Apply the named rewrites (all by default) in place; returns {name: places changed}."""
    chosen = list(REWRITES) if names is None else names
    unknown = [n for n in chosen if n not in REWRITES]
    if unknown:
        raise KeyError(f"unknown rewrite(s) {unknown}; known: {', '.join(REWRITES)}")
    return {name: REWRITES[name].apply(model) for name in chosen}

"""An attention rewrite for graphs that only onnxruntime will run: the core of each of our
``MultiHeadAttention`` layers exported as one ``com.microsoft::MultiHeadAttention`` node
instead of MatMul -> Softmax -> MatMul.

onnxruntime's CPU kernel of that contrib op computes attention block by block without
materialising the score matrix, so memory stays linear in the tokens: TransForensics' C2
branch at 512 x 512 (16384 tokens, 8 heads, six layers) runs in well under a GiB of
attention memory instead of ~19 GiB for the explicit graph. The graph then holds an op
outside the ONNX standard that TensorRT does not parse (``export.check`` rejects it): engines
are built from the default, explicit export. timm's PVT v2 attention (M2SFormer's encoder:
spatial-reduction attention, queries over every token, keys and values over the reduced map)
takes the same op: on full-size M2SFormer at 256 that is 19 more attention cores in one
kernel each (``use_ort_attention``). So do the SegFormer MiT encoders of ``transformers``
(QMA-Net's two, DiffForensics', M2SFormer's MiT variant), through an attention function
registered with transformers (``HF_ORT_ATTENTION``), and QMA-Net's cross-modal DFCM attention
(its ``kernel``). Profiling full-size QMA-Net at 512 on onnxruntime had shown those cores as
MatMul / Softmax / MatMul with a Transpose on either side (about 12% of the run: 56 MiT and 8
DFCM cores, the stage-1 ones over 16384 queries). timm's ViT attention is left explicit; its
token counts at the papers' sizes are small.

The kernel is the torch custom op ``imlkit::ort_mha`` (eager: scaled dot-product attention),
so both exporters see one opaque call: the TorchScript exporter through the symbolic
registered here, the dynamo exporter through ``CUSTOM_OP``'s onnxscript translation.
"""
from __future__ import annotations

import onnxscript
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnxscript import FLOAT, opset18
from torch.onnx import symbolic_helper

from train.models.blocks.attention import MultiHeadAttention
from train.models.blocks.backbones import hf_query_at_default_scale
from train.models.qmanet import DFCM

from .exporters import CustomOp
from .rewrites import set_on_all

DOMAIN = "com.microsoft"
OP = "MultiHeadAttention"
HF_ORT_ATTENTION = "iml_ort"  # the name of our attention function in transformers' registry


@torch.library.custom_op("imlkit::ort_mha", mutates_args=())
def ort_mha(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Scaled dot-product attention on (B, N, C) projections split into ``heads``; onnxruntime's
    op has the same default scale, 1/sqrt(C / heads)."""
    def split(x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, heads, c // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    b, _, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, heads * d).contiguous()


@ort_mha.register_fake
def _ort_mha_shape(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]))


@symbolic_helper.parse_args("v", "v", "v", "i")
def _torchscript_symbolic(g, q, k, v, heads: int):
    out = g.op(f"{DOMAIN}::{OP}", q, k, v, num_heads_i=heads)
    out.setType(q.type())
    return out


torch.onnx.register_custom_op_symbolic("imlkit::ort_mha", _torchscript_symbolic, 1)

_MS = onnxscript.values.Opset(DOMAIN, 1)


@onnxscript.script(onnxscript.values.Opset("imlkit.export", 1), default_opset=opset18)
def _dynamo_translation(q: FLOAT, k: FLOAT, v: FLOAT, heads: int) -> FLOAT:
    out = _MS.MultiHeadAttention(q, k, v, num_heads=heads)
    return out


CUSTOM_OP = CustomOp(torch.ops.imlkit.ort_mha.default, _dynamo_translation, DOMAIN, 1)


def ort_attention_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    return ort_mha(q, k, v, heads)


def _pvt_attention_forward(self, x: torch.Tensor, feat_size) -> torch.Tensor:
    """timm ``pvt_v2.Attention.forward`` with its attention core as ``imlkit::ort_mha``: the
    same projections, reduction and scale (1/sqrt(head_dim)); ``kv``'s output holds K's
    channels, then V's (timm reshapes it to (B, M, 2, heads, head_dim))."""
    b, n, c = x.shape
    h, w = feat_size
    q = self.q(x)
    src = x
    if self.sr is not None:  # spatial reduction (and, for linear attention, pooling first)
        src = x.permute(0, 2, 1).reshape(b, c, h, w)
        if self.pool is not None:
            src = self.pool(src)
        src = self.norm(self.sr(src).reshape(b, c, -1).permute(0, 2, 1))
        if self.act is not None:
            src = self.act(src)
    k, v = self.kv(src).chunk(2, dim=-1)
    return self.proj_drop(self.proj(ort_mha(q, k, v, self.num_heads)))


def _hf_ort_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function: (B, heads, N, d) Q/K/V merged to (B, N, heads * d),
    attended by ``imlkit::ort_mha``, returned as (B, N, heads, d) with no weights.
    onnxruntime's optimiser cancels most of the Transposes this adds against the model's own
    (QMA-Net at 512 runs 158 Transpose kernels instead of 362 with the explicit cores)."""
    query = hf_query_at_default_scale(query, attention_mask, scaling, "onnxruntime")
    b, heads, n, d = query.shape

    def merge(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(b, x.shape[2], heads * d)

    return ort_mha(merge(query), merge(key), merge(value), heads).reshape(b, n, heads, d), None


def use_ort_attention(model: nn.Module) -> int:
    """Route every ``MultiHeadAttention`` and DFCM of ``model``, every timm PVT v2 attention and
    every transformers SegFormer attention through the onnxruntime op; returns how many
    layers changed."""
    from types import MethodType

    from timm.models.pvt_v2 import Attention as PvtAttention
    from transformers import AttentionInterface
    from transformers.models.segformer.modeling_segformer import SegformerAttention

    pvt = [m for m in model.modules() if isinstance(m, PvtAttention)]
    for module in pvt:
        module.forward = MethodType(_pvt_attention_forward, module)
    segformer = [m for m in model.modules() if isinstance(m, SegformerAttention)]
    if segformer:
        AttentionInterface.register(HF_ORT_ATTENTION, _hf_ort_attention)
    for module in segformer:  # the config is the encoder's, shared by its layers
        module.config._attn_implementation = HF_ORT_ATTENTION
    ours = set_on_all(model, MultiHeadAttention, kernel=ort_attention_kernel)
    return ours + set_on_all(model, DFCM, kernel=ort_attention_kernel) + len(pvt) + len(segformer)

"""Shared building blocks: BayarConv constraint, SRM, DCT bases, Sobel derivatives and
curvature, positional encodings, attention (against torch's own MultiheadAttention)."""
import math

import pytest
import torch
import torch.nn as nn

from train.models.blocks.attention import MultiHeadAttention, scaled_attention, set_fused_attention
from train.models.blocks.dct import MultiSpectralAttention, dct_basis, top_frequencies
from train.models.blocks.filters import BayarConv, Sobel, SRMConv
from train.models.blocks.posenc import sine_position_2d, timestep_embedding


def test_bayar_constraint_holds_after_training_steps():
    torch.manual_seed(0)
    conv = BayarConv(3, 4, 5)
    opt = torch.optim.SGD(conv.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        conv(torch.randn(2, 3, 16, 16)).pow(2).mean().backward()
        opt.step()
    w = conv.constrained_weight().detach()
    centre = w[:, :, 2, 2]
    assert torch.allclose(centre, torch.full_like(centre, -1.0))
    assert torch.allclose(w.sum(dim=(2, 3)), torch.zeros(4, 3), atol=1e-5)  # rest sums to +1


def test_bayar_to_conv_is_the_same_function():
    conv = BayarConv(3, 3, 5)
    x = torch.randn(1, 3, 20, 24)
    plain = conv.to_conv()
    assert isinstance(plain, nn.Conv2d)
    assert torch.allclose(plain(x), conv(x), atol=1e-6)


def test_bayar_rejects_even_kernel():
    with pytest.raises(ValueError):
        BayarConv(kernel_size=4)


def test_srm_is_high_pass():
    srm = SRMConv()
    flat = torch.full((1, 3, 12, 12), 0.7)
    assert srm(flat)[..., 2:-2, 2:-2].abs().max() < 1e-6
    assert srm(torch.randn(1, 3, 12, 12)).abs().max() > 0.1


def test_dct_basis_is_orthonormal():
    n = 8
    freqs = [(u, v) for u in range(n) for v in range(n)]
    basis = dct_basis(n, n, freqs).reshape(len(freqs), -1).double()
    assert torch.allclose(basis @ basis.t(), torch.eye(len(freqs), dtype=torch.float64), atol=1e-6)


def test_top_frequencies_scale_with_size():
    assert top_frequencies(16, 7, 7)[2] == (6, 0)
    assert top_frequencies(16, 32, 32)[2] == (24, 0)  # scaled by 32 // 7
    with pytest.raises(ValueError):
        top_frequencies(17)


def test_spectral_attention_average_is_a_dct_coefficient():
    torch.manual_seed(0)
    att = MultiSpectralAttention(8, size=14, k=4, reduction=2).eval()
    x = torch.randn(2, 8, 14, 14)
    ref = att(x)
    att.fold_average = True
    assert torch.allclose(att(x), ref, atol=1e-6)
    # the folded average equals the mean of the DCT coefficients / (S*S)
    coeffs = torch.einsum("nchw,khw->nck", x, att.basis).mean(-1) / 14 ** 2
    folded = (x.flatten(2) @ att.mean_basis).squeeze(-1)
    assert torch.allclose(folded, coeffs, atol=1e-6)


def test_spectral_attention_rejects_other_sizes():
    with pytest.raises(ValueError):
        MultiSpectralAttention(8, size=14)(torch.randn(1, 8, 16, 16))


def test_sobel_gradient_of_a_ramp():
    y, x = torch.meshgrid(torch.arange(10.0), torch.arange(12.0), indexing="ij")
    gx, gy = Sobel().gradients((3 * x + 2 * y)[None, None])
    assert torch.allclose(gx[0, 0, 1:-1, 1:-1], torch.full((8, 10), 24.0))  # Sobel = 8 x slope
    assert torch.allclose(gy[0, 0, 1:-1, 1:-1], torch.full((8, 10), 16.0))


def test_sobel_curvature_of_circles():
    # level sets of x^2 + y^2 are circles: curvature 1/r; Sobel scales it by 8 (8^4 / 8^3)
    y, x = torch.meshgrid(torch.arange(-20.0, 21.0), torch.arange(-20.0, 21.0), indexing="ij")
    k = Sobel().curvature((x * x + y * y)[None, None].double(), eps=0.0)[0, 0]
    r = torch.sqrt(x * x + y * y)
    inner = (r > 3) & (r < 15)
    assert torch.allclose(k[inner], 8.0 / r[inner].double(), rtol=1e-6)


def test_sine_position_2d_matches_formula():
    pe = sine_position_2d(5, 7, 16)
    assert pe.shape == (16, 5, 7)
    # channel 0: sin of normalised y at the lowest frequency; channel 8: sin of x
    y_norm = 3 / (5 + 1e-6) * 2 * math.pi  # row index 2 -> coordinate 3
    x_norm = 5 / (7 + 1e-6) * 2 * math.pi  # column index 4 -> coordinate 5
    assert pe[0, 2, 4].item() == pytest.approx(math.sin(y_norm), abs=1e-5)
    assert pe[8, 2, 4].item() == pytest.approx(math.sin(x_norm), abs=1e-5)
    assert pe[9, 2, 4].item() == pytest.approx(math.cos(x_norm), abs=1e-5)


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0, 5]), 8)
    assert emb.shape == (2, 8)
    assert torch.allclose(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert emb[1, 0].item() == pytest.approx(math.cos(5.0))


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = MultiHeadAttention(32, heads=4).eval()
    ref = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.k.weight, ours.v.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.k.bias, ours.v.bias]))
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    expected = ref(q, kv, kv, need_weights=False)[0]
    for fused in (True, False):
        ours.fused = fused
        assert torch.allclose(ours(q, kv), expected, atol=1e-5)


def test_explicit_and_fused_attention_agree():
    q, k, v = torch.randn(3, 2, 4, 7, 8).unbind(0)
    assert torch.allclose(scaled_attention(q, k, v, True), scaled_attention(q, k, v, False), atol=1e-5)


def test_set_fused_attention_switches_timm_modules():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32)
    assert set_fused_attention(vit, False) == len(vit.blocks)
    assert all(not blk.attn.fused_attn for blk in vit.blocks)


def test_sobel_curvature_is_finite_for_half_precision_input():
    x = torch.zeros(1, 1, 12, 12)
    x[..., 6:] = 1.0  # a step: flat regions on both sides
    k = Sobel().curvature(x.half())
    assert k.dtype == torch.float32 and torch.isfinite(k).all()
    assert torch.allclose(k, Sobel().curvature(x))


def test_mit_pretrained_argument_means_the_same_in_every_model():
    """pretrained=False / None: random init; True: the model's default checkpoint for the
    named variant (ImageNet for M2SFormer's MiT and QMA-Net, ADE20K for DiffForensics, as
    its paper says); a string: that path / hub id."""
    import inspect

    from train.models.blocks.backbones import MIT_ADE20K, mit_checkpoint
    from train.models.diffforensics import DiffForensics
    from train.models.m2sformer import M2SFormer
    from train.models.qmanet import QMANet

    assert mit_checkpoint("b2", False) is None and mit_checkpoint("b2", None) is None
    assert mit_checkpoint("b3", True) == "nvidia/mit-b3"
    assert mit_checkpoint("b2", True, MIT_ADE20K) == "nvidia/segformer-b2-finetuned-ade-512-512"
    assert mit_checkpoint({"hidden_sizes": [8]}, "/weights/segformer") == "/weights/segformer"
    with pytest.raises(ValueError, match="named MiT variant"):
        mit_checkpoint({"hidden_sizes": [8]}, True)
    for cls in (M2SFormer, QMANet, DiffForensics):
        assert inspect.signature(cls).parameters["pretrained"].default is False

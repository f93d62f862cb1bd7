"""TransForensics (small config): output shapes per branch, dense correction semantics,
branch pruning, gradient flow through the threshold weights, attention paths, export."""
from __future__ import annotations


import onnx
import pytest
import torch
import torch.nn.functional as F

from small_exports import small_export
from runtime.sidecar import Sidecar, sidecar_path
from train.models import build_model, get_spec
from train.models.blocks.attention import set_fused_attention
from train.models.transforensics import BRANCHES, TransForensics

SPEC = get_spec("transforensics")
S = SPEC.small_size
STRIDES = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}


def small(**options) -> TransForensics:
    torch.manual_seed(0)
    return build_model("transforensics", small=True, **options)


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("size", [(S, S), (S, S + 32)])
def test_forward_and_predict_shapes(branch, size):
    m = small(output_branch=branch).eval()
    h, w = size
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        out = m(x)
        prob, score = m.predict(x)
    built = BRANCHES[BRANCHES.index(branch):]
    assert set(out) == {"logits"} | {f"logits_{b}" for b in built}
    assert out["logits"].shape == (2, 1, h, w)
    for b in built:
        assert out[f"logits_{b}"].shape == (2, 1, h // STRIDES[b], w // STRIDES[b])
    assert prob.shape == (2, 1, h, w) and score.shape == (2, 1)
    assert prob.min() >= 0 and prob.max() <= 1 and score.min() >= 0 and score.max() <= 1
    torch.testing.assert_close(prob, torch.sigmoid(out["logits"]))
    torch.testing.assert_close(score, prob.flatten(1).amax(1, keepdim=True))
    # the output is the chosen branch's prediction, nearest-upsampled
    torch.testing.assert_close(out["logits"], F.interpolate(out[f"logits_{branch}"], size=size, mode="nearest"))


def test_pruned_models_contain_no_finer_branch():
    params = {}
    for branch in BRANCHES:
        m = small(output_branch=branch)
        finer = BRANCHES[:BRANCHES.index(branch)]
        assert set(m.encoders) == set(m.heads) == set(BRANCHES[BRANCHES.index(branch):])
        assert "c5" not in m.corrections and set(m.corrections) == set(m.heads) - {"c5"}
        for key in m.state_dict():
            assert not any(f".{b}." in key for b in finer), key
        params[branch] = sum(p.numel() for p in m.parameters())
    assert params["c2"] > params["c3"] > params["c4"] > params["c5"]


@pytest.mark.parametrize("branch", ["c3", "c4", "c5"])
def test_pruned_branch_matches_full_model_branch(branch):
    """Pruning removes work, not function: with the full model's weights, the pruned model
    predicts exactly the full model's branch output."""
    full = small(output_branch="c2").eval()
    pruned = small(output_branch=branch).eval()
    missing, unexpected = pruned.load_state_dict(full.state_dict(), strict=False)
    assert not missing
    assert unexpected and all(any(f".{b}." in k for b in BRANCHES[:BRANCHES.index(branch)]) for k in unexpected)
    x = torch.rand(1, 3, S, S)
    with torch.no_grad():
        ref = full(x)[f"logits_{branch}"]
        prob, _ = pruned.predict(x)
    torch.testing.assert_close(prob, torch.sigmoid(F.interpolate(ref, size=(S, S), mode="nearest")))


def test_dense_correction_fuses_thresholded_coarse_prediction():
    """y_k = conv3x3(A_k * 1[sigmoid(up(y_{k+1})) > 0.5]), with A_k the branch's 1x1 output."""
    m = small(output_branch="c2").eval()
    raw = {}
    for b, head in m.heads.items():
        head.register_forward_hook(lambda mod, inp, out, b=b: raw.__setitem__(b, out))

    def centre(mod, inp, out):  # mixed-sign coarse predictions: weights neither all 0 nor all 1
        return out - out.flatten(1).median(dim=1).values.view(-1, 1, 1, 1) + 1e-3

    m.heads["c5"].register_forward_hook(centre)
    for b in ("c4", "c3"):
        m.corrections[b].register_forward_hook(centre)
    x = torch.rand(2, 3, 2 * S, 2 * S)
    with torch.no_grad():
        out = m(x)
    torch.testing.assert_close(out["logits_c5"], raw["c5"] - raw["c5"].flatten(1).median(1).values.view(-1, 1, 1, 1) + 1e-3)
    for fine, coarse in zip(BRANCHES[:3], BRANCHES[1:]):
        a, y = raw[fine], out[f"logits_{coarse}"]
        up = y.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest x2
        weight = (torch.sigmoid(up) > 0.5).float()
        assert 0 < weight.mean() < 1  # the check below sees both gated and kept pixels
        conv = m.corrections[fine]
        expected = F.conv2d(a * weight, conv.weight, conv.bias, padding=1)
        if fine != "c2":
            expected = centre(None, None, expected)
        torch.testing.assert_close(out[f"logits_{fine}"], expected)


@pytest.mark.parametrize("bias, all_masked", [(-50.0, True), (50.0, False)])
def test_coarse_branch_gates_the_finer_one(bias, all_masked):
    m = small(output_branch="c4").eval()
    x = torch.rand(1, 3, S, S)
    with torch.no_grad():
        m.heads["c5"].bias.fill_(bias)  # C5 says "all authentic" / "all forged"
        y4 = m(x)["logits_c4"]
        a4 = m.heads["c4"](m.encoders["c4"](m.backbone(x)[0]))
    conv = m.corrections["c4"]
    if all_masked:  # weights 0: only the 3x3 conv's bias is left
        torch.testing.assert_close(y4, torch.full_like(y4, conv.bias.item()))
    else:  # weights 1: the 3x3 conv of the branch's own prediction
        torch.testing.assert_close(y4, F.conv2d(a4, conv.weight, conv.bias, padding=1))


@pytest.mark.parametrize("weight_grad", ["ste", "none"])
def test_gradients_through_threshold(weight_grad):
    m = small(output_branch="c2", weight_grad=weight_grad, dropout=0.0).train()
    with torch.no_grad():
        for b in ("c5", "c4", "c3"):
            (m.heads[b] if b == "c5" else m.corrections[b]).bias.fill_(0.0)
    x = torch.rand(2, 3, S, S)
    out = m(x)
    # a loss on the C2 branch only
    loss = F.binary_cross_entropy_with_logits(out["logits_c2"], torch.ones_like(out["logits_c2"]))
    loss.backward()
    grad = m.heads["c5"].weight.grad
    if weight_grad == "ste":
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    else:
        assert grad is None or grad.abs().sum() == 0
    assert m.heads["c2"].weight.grad.abs().sum() > 0


def test_deep_supervision_loss_reaches_every_parameter():
    m = small(output_branch="c2").train()
    x = torch.rand(2, 3, S, S)
    gt = (torch.rand(2, 1, S, S) > 0.5).float()
    out = m(x)
    loss = sum(F.binary_cross_entropy_with_logits(out[f"logits_{b}"],
                                                  F.interpolate(gt, size=out[f"logits_{b}"].shape[-2:]))
               for b in BRANCHES)
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    for b in BRANCHES:
        assert m.encoders[b].layers[0].attn.q.weight.grad.abs().sum() > 0


def test_straight_through_only_in_training():
    m = small(output_branch="c3", dropout=0.0)
    x = torch.rand(1, 3, S, S)
    m.eval()
    with torch.no_grad():
        eval_out = m(x)["logits_c3"]
    m.train()
    for mod in m.modules():  # same forward values as eval except batch norm statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.eval()
    train_out = m(x)["logits_c3"]
    torch.testing.assert_close(train_out.detach(), eval_out)
    assert train_out.requires_grad


def test_fused_and_explicit_attention_agree():
    m = small(output_branch="c2").eval()
    x = torch.rand(2, 3, S, S)
    assert set_fused_attention(m, True) == 4 * 2  # 4 scales x 2 layers in the small config
    with torch.no_grad():
        fused = m(x)
        p_fused, _ = m.predict(x)
    set_fused_attention(m, False)
    with torch.no_grad():
        explicit = m(x)
        p_explicit, _ = m.predict(x)
    for key in fused:
        torch.testing.assert_close(fused[key], explicit[key], atol=1e-5, rtol=0)
    torch.testing.assert_close(p_fused, p_explicit, atol=1e-5, rtol=0)


def test_spec_and_variants():
    assert SPEC.input_size == 512
    assert set(SPEC.variants) == set(BRANCHES)
    for name, options in SPEC.variants.items():
        assert build_model("transforensics", small=True, **options).output_branch == name
    assert TransForensics.__init__.__defaults__[0] == "c2"
    assert SPEC.small["backbone"] != "resnet50"
    cited = [f for f in SPEC.figures if f.params_m is not None]
    assert cited and cited[0].input_size == 256


def test_small_export_is_the_c2_branch():
    """The default export (parity checked by the exporter) is the full C2 model: it holds
    the C2 projection and the 0.5-threshold fusion of every finer branch."""
    graph = onnx.load(str(small_export("transforensics")))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("Greater") == 3  # dense correction C5->C4->C3->C2
    assert Sidecar.load(sidecar_path(small_export("transforensics"))).variant.get("output_branch", "c2") == "c2"

def test_positional_encoding_is_added_once_before_the_encoder():
    """Sec. 3.1: the sine encoding is added to the features before the encoders. With no
    encoder layer the output is exactly proj(x) + PE; with one layer, the layer sees
    tokens + PE and no positional term (pos_every_layer=True: tokens, PE on Q/K)."""
    from train.models.blocks.posenc import sine_position_2d
    from train.models.transforensics import ScaleEncoder

    torch.manual_seed(0)
    x = torch.randn(1, 8, 3, 4)
    bare = ScaleEncoder(8, 16, layers=0, heads=2, ffn=32, dropout=0.0).eval()
    pe = sine_position_2d(3, 4, 16)[None]
    with torch.no_grad():
        torch.testing.assert_close(bare(x), bare.proj(x) + pe)
        every = ScaleEncoder(8, 16, layers=0, heads=2, ffn=32, dropout=0.0, pos_every_layer=True).eval()
        every.load_state_dict(bare.state_dict())
        torch.testing.assert_close(every(x), bare.proj(x))
        once = ScaleEncoder(8, 16, layers=1, heads=2, ffn=32, dropout=0.0).eval()
        tokens = once.proj(x).flatten(2).transpose(1, 2)
        pos = pe.flatten(2).transpose(1, 2)
        expected = once.layers[0](tokens + pos, None).transpose(1, 2).reshape(1, 16, 3, 4)
        torch.testing.assert_close(once(x), expected)
        other = once.layers[0](tokens, pos).transpose(1, 2).reshape(1, 16, 3, 4)
        assert (once(x) - other).abs().max() > 1e-3
    assert TransForensics.__init__.__defaults__ is not None and not small().encoders["c5"].pos_every_layer

"""MGQFormer (small config): output shapes, the cosine-similarity mask, SCAM equations, the
training-only guiding path (point noise, GQT, auxiliary mask, loss-ready tokens) and its
absence from predict, attention paths, export."""
from __future__ import annotations


import onnx
import pytest
import torch
import torch.nn.functional as F

from small_exports import small_export
from train.models import build_model, get_spec
from train.models.blocks.attention import set_fused_attention
from train.models.mgqformer import SCAM, MGQFormer, point_noise

SPEC = get_spec("mgqformer")
S = SPEC.small_size


def small(**options) -> MGQFormer:
    torch.manual_seed(0)
    return build_model("mgqformer", small=True, **options)


def gt_masks(n: int, h: int = S, w: int = S) -> torch.Tensor:
    g = torch.zeros(n, 1, h, w)
    g[:, :, h // 4: h // 2, w // 4: 3 * w // 4] = 1.0
    return g


def test_forward_and_predict_shapes():
    m = small().eval()
    x = torch.rand(2, 3, S, S)
    with torch.no_grad():
        out = m(x)
        prob, score = m.predict(x)
    assert set(out) == {"logits", "mask"}
    assert out["logits"].shape == (2, 2, S // 16, S // 16)
    assert out["mask"].shape == (2, 2, S, S)
    torch.testing.assert_close(out["mask"].sum(1), torch.ones(2, S, S))
    assert prob.shape == (2, 1, S, S) and score.shape == (2, 1)
    assert prob.min() >= 0 and prob.max() <= 1 and score.min() >= 0 and score.max() <= 1
    torch.testing.assert_close(prob, out["mask"][:, 1:2])
    torch.testing.assert_close(score, prob.flatten(1).amax(1, keepdim=True))


def test_training_outputs_with_gt_mask():
    m = small().train()
    x = torch.rand(2, 3, S, S)
    out = m(x, gt_masks(2))
    dec = SPEC.small["dec_dim"]
    expected = {"logits": (2, 2, S // 16, S // 16), "mask": (2, 2, S, S), "aux_logits": (2, 2, S // 16, S // 16),
                "aux_mask": (2, 2, S, S), "lqt": (2, 2, dec), "gqt": (2, 2, dec), "noised_mask": (2, 1, S, S)}
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert set(expected) == set(SPEC.training_outputs)


def test_non_square_input():
    m = small(vit_kwargs={"depth": 2, "dynamic_img_size": True}).eval()
    x = torch.rand(1, 3, S, S + 32)
    with torch.no_grad():
        out = m(x, gt_masks(1, S, S + 32))
        prob, _ = m.predict(x)
    assert out["logits"].shape == (1, 2, S // 16, (S + 32) // 16)
    assert out["aux_mask"].shape == (1, 2, S, S + 32)
    assert prob.shape == (1, 1, S, S + 32)


def test_mask_is_scaled_cosine_similarity():
    for scale in (1.0, 3.0):
        m = small(logit_scale=scale, class_norm=False).eval()
        with torch.no_grad():
            logits = m(torch.rand(2, 3, S, S))["logits"]
        assert logits.abs().max() <= scale + 1e-5
    # without Eq. 5's class norm, scale 1 bounds the forged probability by softmax(+-1)
    m = small(class_norm=False).eval()
    with torch.no_grad():
        prob, _ = m.predict(torch.rand(2, 3, S, S))
    lo, hi = torch.sigmoid(torch.tensor(-2.0)), torch.sigmoid(torch.tensor(2.0))
    assert prob.min() >= lo - 1e-6 and prob.max() <= hi + 1e-6
    assert isinstance(small(learn_scale=True).logit_scale, torch.nn.Parameter)
    assert "logit_scale" not in dict(m.named_parameters())


def test_mask_logits_match_eq4():
    m = small(class_norm=False).eval()
    x = torch.rand(1, 3, S, S)
    with torch.no_grad():
        z = m.features(x)
        z_star, (q_star,) = m.decode(z, m.queries)
        logits = m(x)["logits"]
        a = m.proj_patch(z_star)[0]
        b = m.proj_classes(q_star)[0]
        cos = (a @ b.t()) / (a.norm(dim=1, keepdim=True) * b.norm(dim=1)[None])  # (hw, 2)
    torch.testing.assert_close(logits[0].flatten(1).t(), cos, atol=1e-5, rtol=0)


def test_scam_follows_eq1_to_3():
    torch.manual_seed(0)
    scam = SCAM(8).eval()
    z = torch.randn(2, 8, 3, 5)
    with torch.no_grad():
        out = scam(z)
        q, k, v = (p(z).flatten(2) for p in (scam.q, scam.k, scam.v))  # (N, c, hw)
        hw, c = 15, 8
        a_channel = torch.softmax(torch.einsum("nih,njh->nij", q, k) / hw ** 0.5, dim=-1)  # (c, c)
        cam = torch.einsum("nij,njh->nih", a_channel, v).reshape(2, 8, 3, 5)
        a_spatial = torch.softmax(torch.einsum("nch,ncg->nhg", q, k) / c ** 0.5, dim=-1)  # (hw, hw)
        sam = torch.einsum("nhg,ncg->nch", a_spatial, v).reshape(2, 8, 3, 5)
        expected = scam.proj_channel(cam) + scam.proj_spatial(sam) + z
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    unscaled = SCAM(8, scaled=False)
    unscaled.load_state_dict(scam.state_dict())
    with torch.no_grad():
        assert (unscaled(z) - out).abs().max() > 1e-4


def test_point_noise_flips_mu_fraction():
    g = gt_masks(3, 40, 50)
    noised = point_noise(g, 0.01)
    flipped = (noised != g).flatten(1).sum(1)
    assert torch.equal(flipped, torch.full((3,), 20))  # round(0.01 * 40 * 50)
    assert set(noised.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(point_noise(g, 0.0), g)


def test_noise_only_in_training():
    x, g = torch.rand(1, 3, S, S), gt_masks(1)
    m = small(noise_mu=0.05)
    with torch.no_grad():
        assert torch.equal(m.eval()(x, g)["noised_mask"], g)
        assert (m.train()(x, g)["noised_mask"] != g).sum() == round(0.05 * S * S)


def test_aux_mask_depends_on_gt():
    m = small(noise_mu=0.0).eval()
    x = torch.rand(1, 3, S, S)
    with torch.no_grad():
        a = m(x, gt_masks(1))["aux_logits"]
        b = m(x, 1.0 - gt_masks(1))["aux_logits"]
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["joint", "separate"])
def test_guide_mode(mode):
    """"separate" keeps the LQT path exactly as at inference; "joint" lets GQT take part."""
    m = small(guide_mode=mode).eval()
    x = torch.rand(1, 3, S, S)
    with torch.no_grad():
        plain = m(x)["logits"]
        guided = m(x, gt_masks(1))["logits"]
    if mode == "separate":
        torch.testing.assert_close(guided, plain)
    else:
        assert (guided - plain).abs().max() > 1e-6


@pytest.mark.parametrize("mode", ["joint", "separate"])
def test_losses_backpropagate_through_guiding_path(mode):
    m = small(guide_mode=mode).train()
    x, g = torch.rand(2, 3, S, S), gt_masks(2)
    out = m(x, g)
    target = g[:, 0].long()
    l_loc = F.nll_loss(torch.log(out["mask"].clamp_min(1e-8)), target)
    l_aux = F.nll_loss(torch.log(out["aux_mask"].clamp_min(1e-8)), target)
    l_guide = (1 - F.cosine_similarity(out["lqt"], out["gqt"], dim=-1)).mean()
    (l_loc + l_aux + 0.5 * l_guide).backward()
    for name, p in m.guide.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert m.queries.grad.abs().sum() > 0 and torch.isfinite(m.queries.grad).all()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_guide_loss_alone_reaches_guide_and_queries():
    m = small().train()
    out = m(torch.rand(2, 3, S, S), gt_masks(2))
    (1 - F.cosine_similarity(out["lqt"], out["gqt"], dim=-1)).mean().backward()
    assert m.guide.embed.weight.grad.abs().sum() > 0
    assert m.queries.grad.abs().sum() > 0


def test_predict_never_runs_the_guiding_path():
    m = small().eval()
    calls = []
    for name, module in m.guide.named_modules():
        module.register_forward_hook(lambda mod, inp, out, name=name: calls.append(name))
    x = torch.rand(1, 3, S, S)
    with torch.no_grad():
        m.predict(x)
        m(x)
    assert calls == []
    with torch.no_grad():
        m(x, gt_masks(1))
    assert calls  # the hooks do fire when the path runs


@pytest.mark.parametrize("class_norm, atol", [(False, 1e-5), (True, 1e-4)])
def test_fused_and_explicit_attention_agree(class_norm, atol):
    """The two attention paths differ by float rounding only (~2e-7 in the scores). Eq. 5's
    class norm, a LayerNorm over two values, amplifies differences near a tie by up to
    1 / (2 sqrt(eps)) ~ 158, hence the looser tolerance with it (measured ~2.5e-5)."""
    m = small(class_norm=class_norm).eval()
    x = torch.rand(2, 3, S, S)
    n = set_fused_attention(m, True)
    # 2 ViTs x 2 blocks (timm) + SCAM + 2 decoder layers (ours)
    assert n == 2 * 2 + 1 + 2
    with torch.no_grad():
        fused = m(x, gt_masks(2))
        p_fused, _ = m.predict(x)
    set_fused_attention(m, False)
    with torch.no_grad():
        explicit = m(x, gt_masks(2))
        p_explicit, _ = m.predict(x)
    for key in fused:
        torch.testing.assert_close(fused[key], explicit[key], atol=atol, rtol=0)
    torch.testing.assert_close(p_fused, p_explicit, atol=atol, rtol=0)


def test_spec():
    assert SPEC.input_size == 384
    assert SPEC.figures == ()
    m = build_model("mgqformer", small=True)
    assert m.rgb_encoder is not m.noise_encoder
    assert MGQFormer.__init__.__defaults__[0] == "vit_base_patch16_384"


def test_small_export_holds_no_guiding_path():
    """The exported graph (parity checked by the exporter) carries none of the training-only
    guiding path's weights."""
    graph = onnx.load(str(small_export("mgqformer")))
    assert not [i.name for i in graph.graph.initializer if "guide" in i.name]
    assert {i.name for i in graph.graph.input} == {"image"}

def test_class_norm_of_eq5_by_hand():
    """proj = identity, Z_f* = e_2, LQT* = (e_1, e_2): cosines (0, 1). Segmenter's LayerNorm
    over the two classes gives -+ 1 / sqrt(1 + 4 eps), then its scale and shift. With scale
    1 the forged probability is sigmoid(2 / sqrt(1 + 4e-5)) (0.881, as without the norm);
    with scale 3 it is sigmoid(6): 0.9975, beyond the 0.881 that cosines alone can reach."""
    assert isinstance(small().class_norm, torch.nn.Identity)  # off by default (module docstring)
    m = small(class_norm=True).eval()
    d = m.proj_patch.in_features
    with torch.no_grad():
        for proj in (m.proj_patch, m.proj_classes):
            proj.weight.copy_(torch.eye(d))
            proj.bias.zero_()
        z = torch.zeros(1, 1, d)
        z[0, 0, 1] = 1.0
        q = torch.zeros(1, 2, d)
        q[0, 0, 0] = q[0, 1, 1] = 1.0
        logits = m.mask_logits(z, q, (1, 1))
        v = 1 / (1 + 4e-5) ** 0.5
        torch.testing.assert_close(logits.flatten(), torch.tensor([-v, v]))
        assert logits.softmax(1)[0, 1].item() == pytest.approx(float(torch.sigmoid(torch.tensor(2 * v))))
        m.class_norm.weight.fill_(3.0)
        forged = m.mask_logits(z, q, (1, 1)).softmax(1)[0, 1].item()
    assert forged == pytest.approx(float(torch.sigmoid(torch.tensor(6 * v))), rel=1e-6) and forged > 0.99
    assert isinstance(m.class_norm, torch.nn.LayerNorm) and m.class_norm.normalized_shape == (2,)


def test_joint_guiding_pass_lets_the_ground_truth_reach_lqt():
    """The paper's joint pass ([Z_f; LQT; GQT] through one decoder) makes LQT* depend on the
    GT mask; the default separate passes keep M exactly what inference computes."""
    x = torch.rand(1, 3, S, S)
    a, b = gt_masks(1), 1.0 - gt_masks(1)
    for mode in ("joint", "separate"):
        m = small(guide_mode=mode).eval()
        with torch.no_grad():
            out_a, out_b = m(x, gt_mask=a), m(x, gt_mask=b)
            prob, _ = m.predict(x)
        moved = (out_a["lqt"] - out_b["lqt"]).abs().max().item()
        if mode == "joint":
            assert moved > 1e-4
        else:
            assert moved == 0.0
            torch.testing.assert_close(out_a["mask"][:, 1:], prob)

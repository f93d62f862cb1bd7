"""DiffForensics (train/models/diffforensics.py): both training stages, the export
contract with the fixed timestep, ECEM, and attention-path equivalence, on the small
configuration."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from small_exports import small_export
from train.models import build_model, get_spec
from train.models.blocks.attention import set_fused_attention
from train.models.diffforensics import DiffForensics, edge_cues

SPEC = get_spec("diffforensics")
S = SPEC.small_size


@pytest.fixture(scope="module")
def model() -> DiffForensics:
    torch.manual_seed(0)
    return build_model("diffforensics", small=True).eval()


def dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # Eq. 6
    p, t = prob.flatten(1), target.flatten(1)
    return (1 - 2 * (p * t).sum(1) / (p.square().sum(1) + t.square().sum(1) + 1e-6)).mean()


def test_spec():
    assert SPEC.input_size == 512
    assert SPEC.figures == ()  # the paper publishes no params / FLOPs
    assert set(SPEC.training_outputs) == {"noise", "mask", "edges", "cls"}


@pytest.mark.parametrize("size", [(S, S), (S, S + 32)])
def test_stage2_and_predict_shapes(model, size):
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = model(x)
        prob, score = model.predict(x)
    assert out["mask"].shape == (2, 1, *size) and out["cls"].shape == (2, 1)
    assert len(out["edges"]) == 3 and all(e.shape == (2, 1, *size) for e in out["edges"])
    assert prob.shape == (2, 1, *size) and score.shape == (2, 1)
    assert 0 <= prob.min() and prob.max() <= 1 and 0 <= score.min() and score.max() <= 1
    assert torch.allclose(prob, torch.sigmoid(out["mask"]), atol=1e-6)
    assert torch.allclose(score, torch.sigmoid(out["cls"]), atol=1e-6)


def test_stage1_denoising_objective_trains_decoder_only():
    """Algorithm 1: x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, loss ||eps - eps_hat||^2, encoder
    frozen (Sec. 3.1)."""
    torch.manual_seed(1)
    m = build_model("diffforensics", small=True).train()
    m.freeze_encoder()
    x0 = torch.rand(2, 3, S, S + 32) * 2 - 1
    t = torch.tensor([1, 1000])
    eps = torch.randn_like(x0)
    out = m(m.q_sample(x0, t, eps), t, stage=1)
    assert set(out) == {"noise"} and out["noise"].shape == x0.shape
    F.mse_loss(out["noise"], eps).backward()
    assert all(p.grad is None for p in m.encoder.parameters())
    for name, module in [("up", m.up), ("time_mlp", m.time_mlp), ("noise_head", m.noise_head)]:
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    for module in (m.loc_head, m.cls_head, m.ecem):  # stage-2 heads take no part
        assert all(p.grad is None for p in module.parameters())
    m.freeze_encoder(False)
    assert all(p.requires_grad for p in m.encoder.parameters())


def test_stage2_losses_backpropagate():
    """Eq. 9 with the paper's weights: alpha (L_seg + L_edg) + beta L_clf."""
    torch.manual_seed(2)
    m = build_model("diffforensics", small=True).train()
    x = torch.rand(2, 3, S, S)
    gt = (torch.rand(2, 1, S, S) > 0.7).float()
    edge_gt = (torch.rand(2, 1, S, S) > 0.9).float()
    label = torch.tensor([[1.0], [0.0]])
    out = m(x)
    w = torch.where(gt > 0, torch.tensor(2.0), torch.tensor(0.5))  # lambda_1^s, lambda_2^s
    seg = 0.1 * F.binary_cross_entropy_with_logits(out["mask"], gt, weight=w) + 0.9 * dice(torch.sigmoid(out["mask"]), gt)
    edg = sum(dice(torch.sigmoid(e), edge_gt) / 2 ** k for k, e in enumerate(out["edges"]))  # Eq. 7
    clf = F.binary_cross_entropy_with_logits(out["cls"], label)
    (0.8 * (seg + edg) + 0.1 * clf).backward()
    for name, module in [("encoder", m.encoder), ("up", m.up), ("loc_head", m.loc_head), ("cls_head", m.cls_head),
                         ("ecem", m.ecem), ("time_mlp", m.time_mlp)]:
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    assert all(p.grad is None for p in m.noise_head.parameters())


def test_fused_and_explicit_attention_agree(model):
    x = torch.rand(1, 3, S, S + 16)
    assert set_fused_attention(model, True) >= 1
    with torch.no_grad():
        fused = model.predict(x)
        set_fused_attention(model, False)
        explicit = model.predict(x)
        set_fused_attention(model, True)
    assert torch.allclose(fused[0], explicit[0], atol=1e-5) and torch.allclose(fused[1], explicit[1], atol=1e-5)


def test_predict_runs_no_training_branch(model):
    calls = {"ecem": 0, "noise": 0}
    hooks = [e.register_forward_hook(lambda *a: calls.__setitem__("ecem", calls["ecem"] + 1)) for e in model.ecem]
    hooks.append(model.noise_head.register_forward_hook(lambda *a: calls.__setitem__("noise", calls["noise"] + 1)))
    x = torch.rand(1, 3, S, S)
    with torch.no_grad():
        model.predict(x)
        assert calls == {"ecem": 0, "noise": 0}
        model(x)
        assert calls == {"ecem": 3, "noise": 0}
        model(x, 10, stage=1)
        assert calls == {"ecem": 3, "noise": 1}
    for h in hooks:
        h.remove()


def test_fixed_timestep_is_t_infer(model):
    x = torch.rand(1, 3, S, S)
    with torch.no_grad():
        prob = model.predict(x)[0]
        at5 = torch.sigmoid(model(x, t=torch.tensor([5]))["mask"])
        logits5, logits500 = model(x)["mask"], model(x, t=500)["mask"]
    assert model.t_infer == 5
    assert torch.allclose(prob, at5, atol=1e-6)
    assert (logits5 - logits500).abs().max() > 1e-3  # the decoder really is time-conditioned


def test_export_has_no_time_input():
    """t is a constant of the exported graph (parity checked by the exporter): the only
    input is the image."""
    graph = onnx.load(str(small_export("diffforensics")))
    assert [i.name for i in graph.graph.input] == ["image"]


def test_edge_cues_match_the_definition():
    """Eq. 2 computed here pixel by pixel: g = |V * |H * d|| with H = [1, -1], V = [1, -1]^T,
    the difference written to the current row/column, zero past the last one."""
    torch.manual_seed(3)
    d = torch.randn(2, 3, 5, 7)
    h = torch.zeros_like(d)
    for j in range(6):
        h[..., j] = (d[..., j] - d[..., j + 1]).abs()
    g = torch.zeros_like(d)
    for i in range(4):
        g[..., i, :] = (h[..., i, :] - h[..., i + 1, :]).abs()
    assert torch.allclose(edge_cues(d), g)
    assert edge_cues(torch.full((1, 1, 4, 4), 3.0)).abs().max() == 0  # flat map: no edge cue


def test_ecem_order_finest_first(model):
    sizes = []
    hooks = [e.register_forward_pre_hook(lambda mod, args: sizes.append(tuple(args[0].shape[-2:])))
             for e in model.ecem]
    with torch.no_grad():
        model(torch.rand(1, 3, S, S))
    for h in hooks:
        h.remove()
    assert sizes == [(S // 4, S // 4), (S // 8, S // 8), (S // 16, S // 16)]


def test_q_sample_follows_the_linear_schedule(model):
    betas = np.linspace(1e-4, 0.02, 1000)
    x0, eps = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    t = torch.tensor([1, 500, 1000])
    got = model.q_sample(x0, t, eps)
    for i, step in enumerate(t.tolist()):
        a = float(np.prod(1 - betas[:step]))
        assert torch.allclose(got[i], a ** 0.5 * x0[i] + (1 - a) ** 0.5 * eps[i], atol=1e-5)


def test_batch_items_are_independent(model):
    x = torch.rand(2, 3, S, S)
    with torch.no_grad():
        both = model.predict(x)
        one = [model.predict(x[i:i + 1]) for i in range(2)]
    assert torch.allclose(both[0], torch.cat([o[0] for o in one]), atol=1e-5)
    assert torch.allclose(both[1], torch.cat([o[1] for o in one]), atol=1e-5)


def test_full_config_builds():
    m = DiffForensics()
    assert m.encoder.config.depths == [3, 4, 6, 3]  # MiT-B2
    assert [u.blocks[-1].conv2.out_channels for u in m.up] == [256, 128, 64]
    params = sum(p.numel() for p in m.parameters()) / 1e6
    assert 24.2 < params < 40  # MiT-B2 encoder (24.2M) plus the decoder


def test_frozen_encoder_stays_in_eval_mode_in_stage1():
    """Stage 1 freezes the encoder: no gradients, and stochastic depth / dropout off, so two
    identical training-mode forwards agree exactly (they differ while it is trainable)."""
    torch.manual_seed(3)
    m = build_model("diffforensics", small=True)
    assert m.encoder.config.drop_path_rate > 0  # stochastic depth is there to switch off
    x, t = torch.rand(2, 3, S, S), torch.tensor([10, 500])
    m.train()
    with torch.no_grad():
        a, b = m(x, t, stage=1)["noise"], m(x, t, stage=1)["noise"]
    assert (a - b).abs().max() > 1e-6  # trainable encoder: drop-path differs between calls
    m.freeze_encoder()
    m.train()  # what the trainer calls before every step
    assert not m.encoder.training and m.up.training
    with torch.no_grad():
        a, b = m(x, t, stage=1)["noise"], m(x, t, stage=1)["noise"]
    assert torch.equal(a, b)
    m.freeze_encoder(False)
    assert m.encoder.training and all(p.requires_grad for p in m.encoder.parameters())


def test_stage1_objective_keeps_the_encoder_in_eval_mode():
    from train.losses import get_objective

    m = build_model("diffforensics", small=True)
    get_objective("diffforensics_stage1").prepare(m)
    m.train()
    assert not m.encoder.training and not any(p.requires_grad for p in m.encoder.parameters())

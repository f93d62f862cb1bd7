"""QMA-Net (train/models/qmanet.py): output contract, training paths, attention-path
equivalence, and the model's own invariants, on the small configuration."""
from __future__ import annotations

import onnx
import pytest
import torch

from small_exports import small_export
from train.models import build_model, get_spec
from train.models.blocks.attention import set_fused_attention
from train.models.blocks.convs import DnCNN
from train.models.qmanet import DFCM, QMANet

SPEC = get_spec("qmanet")
S = SPEC.small_size


@pytest.fixture(scope="module")
def model() -> QMANet:
    torch.manual_seed(0)
    return build_model("qmanet", small=True).eval()


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def test_spec_records_paper_figures():
    assert SPEC.input_size == 512
    fig = SPEC.figures[0]
    assert (fig.params_m, fig.gflops, fig.input_size) == (114.0, 230.0, 512)
    assert set(SPEC.training_outputs) == {"mask", "edges"}


@pytest.mark.parametrize("size", [(S, S), (S, S + 32)])
def test_shapes_and_ranges(model, size):
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = model(x)
        prob, score = model.predict(x)
    assert out["mask"].shape == (2, 1, *size)
    assert len(out["edges"]) == 4 and all(e.shape == (2, 1, *size) for e in out["edges"])
    assert prob.shape == (2, 1, *size) and score.shape == (2, 1)
    assert prob.min() >= 0 and prob.max() <= 1 and score.min() >= 0 and score.max() <= 1
    assert torch.allclose(prob, torch.sigmoid(out["mask"]), atol=1e-6)
    assert torch.allclose(score, prob.flatten(1).amax(1, keepdim=True))


def test_training_losses_backpropagate():
    torch.manual_seed(1)
    m = build_model("qmanet", small=True).train()
    x = torch.rand(2, 3, S, S)
    gt = (torch.rand(2, 1, S, S) > 0.7).float()
    out = m(x)
    loss = 0.2 * dice_loss(out["mask"], gt) + 0.8 * sum(dice_loss(e, gt) for e in out["edges"])  # Eq. 8
    loss.backward()
    for name, module in [("edge_heads", m.edge_heads), ("head", m.head), ("mfam", m.mfam), ("dcm", m.dcm),
                         ("dfcm", m.dfcm), ("mnfm.fusion", m.mnfm.fusion), ("bayar", m.mnfm.bayar)]:
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    assert m.queries.grad is not None and m.queries.grad.abs().sum() > 0


def test_fused_and_explicit_attention_agree(model):
    x = torch.rand(1, 3, S, S + 16)
    n = set_fused_attention(model, True)
    assert n >= 2 + 4 + 4 * 3  # two MiT encoders, four DFCMs, three attention blocks per MFAM
    assert all(d.fused_attn for d in model.dfcm)
    with torch.no_grad():
        fused = model.predict(x)[0]
        set_fused_attention(model, False)
        assert not any(d.fused_attn for d in model.dfcm)
        explicit = model.predict(x)[0]
        set_fused_attention(model, True)
    assert torch.allclose(fused, explicit, atol=1e-5)


def test_predict_skips_edge_heads(model):
    calls = []
    hooks = [h.register_forward_hook(lambda *a: calls.append(1)) for h in model.edge_heads]
    x = torch.rand(1, 3, S, S)
    with torch.no_grad():
        model.predict(x)
        assert calls == []
        model(x)
    for h in hooks:
        h.remove()
    assert len(calls) == 4


def test_batch_items_are_independent(model):
    x = torch.rand(2, 3, S, S)
    with torch.no_grad():
        both = model.predict(x)[0]
        one = torch.cat([model.predict(x[i:i + 1])[0] for i in range(2)])
    assert torch.allclose(both, one, atol=1e-5)


def test_streams_interact_at_every_stage():
    """Eq. 1-4: DFCM outputs feed the next stage of each encoder, so every stage's RGB
    features depend on the noise view (and vice versa): gradients cross the streams."""
    torch.manual_seed(2)
    m = build_model("qmanet", small=True).eval()
    x = torch.rand(1, 3, S, S)
    rgbs, noises = m._encode(x)
    for i in range(4):
        m.zero_grad()
        rgbs[i].square().sum().backward(retain_graph=True)
        assert m.mnfm.fusion.weight.grad.abs().sum() > 0, f"R_{i + 1} ignores the noise stream"
        assert m.lae.stages[i].patch_embeddings.proj.weight.grad.abs().sum() > 0
        m.zero_grad()
        noises[i].square().sum().backward(retain_graph=True)
        assert m.gae.stages[i].patch_embeddings.proj.weight.grad.abs().sum() > 0, f"N_{i + 1} ignores RGB"
    # and the RGB encoder really receives the interacted map: stage i+1's input is R_i
    seen = []
    hook = m.gae.stages[1].register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    with torch.no_grad():
        rgbs, _ = m._encode(x)
    hook.remove()
    assert torch.equal(seen[0], rgbs[0])


def test_dfcm_matches_reference_attention():
    """The group-conv cross-attention equals a direct softmax(QK^T / sqrt(d)) V computed here
    (one head, one group, no key reduction), with the residual of Eq. 4."""
    torch.manual_seed(3)
    c = 8
    d = DFCM(c, groups=1, heads=1, reduction=2, sr_ratio=1).eval()
    r, n = torch.randn(1, c, 3, 5), torch.randn(1, c, 3, 5)
    with torch.no_grad():
        r_out, n_out = d(r, n)
        rm = d.recal_rgb(d.align(r))
        nm = d.recal_noise(n)

        def attend(q, k, v):
            q, k, v = (t.flatten(2).transpose(1, 2)[0] for t in (q, k, v))  # (hw, c)
            return (torch.softmax(q @ k.T / c ** 0.5, dim=-1) @ v).T.reshape(1, c, 3, 5)

        ref_r = r + d.align_back(attend(d.q_rgb(rm), d.k_noise(nm), d.v_noise(nm)))
        ref_n = n + attend(d.q_noise(nm), d.k_rgb(rm), d.v_rgb(rm))
    assert torch.allclose(r_out, ref_r, atol=1e-5) and torch.allclose(n_out, ref_n, atol=1e-5)


def test_dfcm_key_reduction_pools_keys():
    torch.manual_seed(4)
    d = DFCM(8, groups=2, sr_ratio=2).eval()
    full = DFCM(8, groups=2, sr_ratio=1).eval()
    full.load_state_dict(d.state_dict())
    r, n = torch.randn(1, 8, 4, 6), torch.randn(1, 8, 4, 6)
    seen = []
    hook = d.k_noise.register_forward_hook(lambda mod, a, out: seen.append(out.shape))
    with torch.no_grad():
        out_reduced, out_full = d(r, n)[0], full(r, n)[0]
    hook.remove()
    assert seen == [torch.Size([1, 8, 2, 3])]
    assert out_reduced.shape == out_full.shape and not torch.allclose(out_reduced, out_full)


def test_queries_drive_the_decoder(model):
    """Eq. 7: the head reads 4 levels x num_queries query-weighted maps, and the mask
    changes when the tamper-aware queries change."""
    assert model.head.in_channels == 4 * model.queries.shape[0]
    x = torch.rand(1, 3, S, S)
    with torch.no_grad():
        before = model.predict(x)[0]
        saved = model.queries.clone()
        model.queries.mul_(-3.0)
        after = model.predict(x)[0]
        model.queries.copy_(saved)
    assert not torch.allclose(before, after)


def test_noiseprint_weights_load_and_freeze(tmp_path):
    torch.manual_seed(5)
    small = dict(SPEC.small)
    donor = DnCNN(3, 1, depth=small["denoiser_depth"], width=small["denoiser_width"])
    with torch.no_grad():
        for p in donor.parameters():
            p.normal_()
    path = tmp_path / "np.pth"
    torch.save({"state_dict": {f"noiseprint.{k}": v for k, v in donor.state_dict().items()}}, path)
    m = build_model("qmanet", small=True, noiseprint_weights=str(path))
    for (name, a), b in zip(m.mnfm.noiseprint.state_dict().items(), donor.state_dict().values()):
        assert torch.equal(a, b), name
    assert not any(p.requires_grad for p in m.mnfm.noiseprint.parameters())
    m.train()
    assert not m.mnfm.noiseprint.training and m.dcm.training
    # the user may keep it trainable
    m2 = build_model("qmanet", small=True, noiseprint_weights=str(path), freeze_noiseprint=False)
    assert all(p.requires_grad for p in m2.mnfm.noiseprint.parameters())


def test_mnfm_noise_view_has_three_channels(model):
    x = torch.rand(1, 3, S, S)
    with torch.no_grad():
        noise = model.mnfm(x)
    assert noise.shape == x.shape
    # the DnCNN sees the de-normalised image: its input is x * std + mean
    seen = []
    hook = model.mnfm.noiseprint.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    with torch.no_grad():
        model.mnfm(x)
    hook.remove()
    std = torch.tensor(SPEC.std).view(1, 3, 1, 1)
    mean = torch.tensor(SPEC.mean).view(1, 3, 1, 1)
    assert torch.allclose(seen[0], x * std + mean)


def test_full_config_builds_with_two_mit_b3():
    m = QMANet()
    assert m.gae.config.depths == [3, 4, 18, 3] and m.lae.config.hidden_sizes == [64, 128, 320, 512]
    assert m.queries.shape == (16, 64)
    convs = [c for c in m.mnfm.noiseprint.modules() if isinstance(c, torch.nn.Conv2d)]
    assert len(convs) == 17 and all(c.out_channels == 64 for c in convs[:-1])
    params = sum(p.numel() for p in m.parameters()) / 1e6
    assert abs(params - SPEC.figures[0].params_m) / SPEC.figures[0].params_m < 0.05


def test_export_folds_batchnorm_and_drops_edge_heads():
    """The export (parity checked by the exporter) holds no BatchNormalization node (folded
    into the convolutions) and none of the training-only edge heads."""
    graph = onnx.load(str(small_export("qmanet")))
    assert "BatchNormalization" not in {n.op_type for n in graph.graph.node}
    assert not [i.name for i in graph.graph.initializer if "edge_heads" in i.name]

def test_warns_once_without_noiseprint_weights(tmp_path, monkeypatch, recwarn):
    """A QMA-Net without NoisePrint++ weights says so, once per process, naming the share
    of the compute the random stand-in holds; with weights it says nothing."""
    import warnings

    from train.models import qmanet

    monkeypatch.setattr(qmanet, "_noiseprint_warned", False)
    warnings.simplefilter("always")
    build_model("qmanet", small=True)
    build_model("qmanet", small=True)
    found = [w for w in recwarn.list if "noiseprint_weights" in str(w.message)]
    assert len(found) == 1 and "randomly initialised" in str(found[0].message)
    assert "63% (146.1 of 233.6 GMACs at 512 x 512) of the model's compute" in str(found[0].message)
    recwarn.clear()
    monkeypatch.setattr(qmanet, "_noiseprint_warned", False)
    donor = DnCNN(3, 1, depth=SPEC.small["denoiser_depth"], width=SPEC.small["denoiser_width"])
    torch.save(donor.state_dict(), tmp_path / "np.pth")
    build_model("qmanet", small=True, noiseprint_weights=str(tmp_path / "np.pth"))
    assert not [w for w in recwarn.list if "noiseprint_weights" in str(w.message)]

"""The papers' loss terms and per-model objectives on hand-checkable cases.

Objectives are exercised on the real small models with their output heads zeroed, so
every logit is exactly 0 (probability 0.5) and the expected loss is a closed formula."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.ndimage import binary_dilation, binary_erosion

from train.losses import (balanced_bce, class_nll, cosine_distance, dice_loss, edge_target, focal_loss,
                          get_objective, list_objectives, weighted_bce)
from train.models import build_model, get_spec, list_models

LN2 = math.log(2.0)


def test_balanced_bce_uses_per_sample_pos_weight():
    y = torch.zeros(2, 1, 2, 2)
    y[0, 0, 0, 0] = 1  # sample 0: 1 positive, 3 negatives -> pos_weight 3; sample 1: none -> 1
    loss = balanced_bce(torch.zeros_like(y), y)
    assert loss.item() == pytest.approx((3 * LN2 + 3 * LN2 + 4 * LN2) / 8)


def test_weighted_bce():
    y = torch.tensor([[1.0], [0.0]])
    assert weighted_bce(torch.zeros(2, 1), y, 2.0, 0.5).item() == pytest.approx((2 * LN2 + 0.5 * LN2) / 2)


def test_dice_loss_matches_the_formula():
    y = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    p = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)
    assert dice_loss(p, y, smooth=0).item() == pytest.approx(1 - 2 * 1 / 4)
    assert dice_loss(p, y, smooth=1).item() == pytest.approx(1 - 3 / 5)
    assert dice_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item() == 0.0  # empty vs empty


def test_dice_loss_squared_denominator_is_vnets():
    """p = (0.5, 0.5), y = (1, 0): linear 1 - 2(0.5)/(1 + 1) = 1/2, V-Net's squared
    1 - 2(0.5)/(0.5 + 1) = 1/3; with smoothing 1: 1 - 2/3 = 1/3 and 1 - 2/2.5 = 1/5."""
    p = torch.tensor([0.5, 0.5]).view(1, 1, 1, 2)
    y = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    assert dice_loss(p, y, smooth=0).item() == pytest.approx(0.5)
    assert dice_loss(p, y, smooth=0, squared=True).item() == pytest.approx(1 / 3)
    assert dice_loss(p, y, smooth=1).item() == pytest.approx(1 / 3)
    assert dice_loss(p, y, smooth=1, squared=True).item() == pytest.approx(0.2)
    # binary predictions: p^2 = p, both denominators agree
    q = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    assert dice_loss(q, y, squared=True).item() == dice_loss(q, y).item() == 0.0


def test_focal_loss_alpha_and_gamma():
    y = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    # p = 0.5: (1 - p_t)^2 = 0.25; alpha_t = 0.25 for the positive, 0.75 for the negative
    expected = (0.25 * 0.25 * LN2 + 0.75 * 0.25 * LN2) / 2
    assert focal_loss(torch.zeros_like(y), y).item() == pytest.approx(expected)
    # a confident correct pixel costs almost nothing
    assert focal_loss(torch.tensor([[[[8.0]]]]), torch.ones(1, 1, 1, 1)).item() < 1e-7


def test_edge_target_is_the_boundary_band():
    m = torch.zeros(1, 1, 10, 10)
    m[0, 0, 3:7, 2:8] = 1
    band = edge_target(m)[0, 0].bool().numpy()
    mask = m[0, 0].bool().numpy()
    assert np.array_equal(band, binary_dilation(mask, np.ones((3, 3))) & ~binary_erosion(mask, np.ones((3, 3)), border_value=1))


def test_class_nll_and_cosine_distance():
    prob = torch.empty(1, 2, 1, 2)
    prob[0, :, 0, 0] = torch.tensor([0.2, 0.8])  # GT forged
    prob[0, :, 0, 1] = torch.tensor([0.9, 0.1])  # GT authentic
    y = torch.tensor([[[[1.0, 0.0]]]])
    assert class_nll(prob, y).item() == pytest.approx(-(math.log(0.8) + math.log(0.9)) / 2, rel=1e-6)
    a = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    b = torch.tensor([[[0.0, 3.0], [-2.0, -2.0]]])
    assert cosine_distance(a, b).item() == pytest.approx((1.0 + 2.0) / 2)
    assert cosine_distance(a, a).item() == pytest.approx(0.0, abs=1e-7)


def test_every_registered_model_has_an_objective():
    assert set(list_models()) <= set(list_objectives())


# ---- objectives on real small models with zeroed heads -------------------------------------------

def _zero(*modules: nn.Module) -> None:
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.zero_()


def _batch(size: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    y = torch.zeros(2, 1, size, size)
    y[0, 0, size // 4: size // 2, size // 8: size // 2] = 1
    return {"image": torch.randn(2, 3, size, size), "mask": y, "label": torch.tensor([1.0, 0.0])}


def _half_dice(y: torch.Tensor, squared: bool = False) -> float:
    """Dice loss (smoothing 1) of p = 0.5 everywhere, by hand: per sample with S = sum(y),
    N pixels, 1 - (S + 1) / (N / 2 + S + 1), or N / 4 with the squared denominator."""
    n = y[0].numel()
    return float(np.mean([1 - (s + 1) / ((n / 4 if squared else n / 2) + s + 1)
                          for s in y.flatten(1).sum(1).tolist()]))


def _model(name: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    if name not in list_models():
        pytest.skip(f"model {name} is not registered in this checkout")
    torch.manual_seed(0)
    return build_model(name, small=True).train(), _batch(get_spec(name).small_size)


def test_m2sformer_objective():
    model, batch = _model("m2sformer")
    _zero(model.region_head, model.edge_head, model.prior_head)
    result = get_objective("m2sformer")(model, batch)
    y = batch["mask"]
    bce = balanced_bce(torch.zeros_like(y), y).item()
    assert result.loss.item() == pytest.approx(2 * bce + LN2, rel=1e-5)
    assert result.parts["edge"] == pytest.approx(LN2, rel=1e-5)


def test_m2sformer_objective_takes_the_models_edge_rule():
    """Edge logits all 2: the edge BCE is -(f log s(2) + (1 - f) log(1 - s(2))) with f the
    edge-target fraction, which depends on the rule (default: kornia, the authors')."""
    model, batch = _model("m2sformer")
    _zero(model.region_head, model.edge_head, model.prior_head)
    with torch.no_grad():
        model.edge_head.bias.fill_(2.0)
    y = batch["mask"]
    sig = 1 / (1 + math.exp(-2.0))

    def expected(rule):
        f = edge_target(y, rule).mean().item()
        return -(f * math.log(sig) + (1 - f) * math.log(1 - sig))

    assert model.edge_target == "kornia"
    assert edge_target(y, "kornia").sum() < edge_target(y, "any").sum()  # corners differ
    assert get_objective("m2sformer")(model, batch).parts["edge"] == pytest.approx(expected("kornia"), rel=1e-5)
    model.edge_target = "any"
    assert get_objective("m2sformer")(model, batch).parts["edge"] == pytest.approx(expected("any"), rel=1e-5)
    assert get_objective("m2sformer", edge_rule="kornia")(model, batch).parts["edge"] == pytest.approx(
        expected("kornia"), rel=1e-5)


def test_transforensics_objective_weights_every_branch():
    model, batch = _model("transforensics")
    _zero(model.heads, model.corrections)
    objective = get_objective("transforensics")
    result = objective(model, batch)
    y = batch["mask"]
    expected = 0.0
    for b, weight in objective.weights.items():
        size = y.shape[-1] // {"c2": 4, "c3": 8, "c4": 16, "c5": 32}[b]
        target = (torch.nn.functional.interpolate(y, size=(size, size), mode="area") >= 0.5).float()
        fg = target.mean().item()
        expected += weight * (_half_dice(target) + (0.25 * fg + 0.75 * (1 - fg)) * 0.25 * LN2)
    assert objective.weights == {"c2": 0.4, "c3": 0.3, "c4": 0.2, "c5": 0.1}
    assert result.loss.item() == pytest.approx(expected, rel=1e-5)


def test_qmanet_objective():
    model, batch = _model("qmanet")
    _zero(model.head, *[h[-1] for h in model.edge_heads])
    y = batch["mask"]
    result = get_objective("qmanet")(model, batch)  # V-Net's squared Dice (the paper cites it)
    assert result.loss.item() == pytest.approx(0.2 * _half_dice(y, True) + 0.8 * _half_dice(edge_target(y), True),
                                               rel=1e-5)
    linear = get_objective("qmanet", dice_squared=False)(model, batch)
    assert linear.loss.item() == pytest.approx(0.2 * _half_dice(y) + 0.8 * _half_dice(edge_target(y)), rel=1e-5)


def test_diffforensics_stage2_objective():
    model, batch = _model("diffforensics")
    _zero(model.loc_head[-1], model.ecem, model.cls_head[-1])
    result = get_objective("diffforensics")(model, batch)
    y = batch["mask"]
    fg = y.mean().item()
    seg = 0.1 * (2.0 * fg + 0.5 * (1 - fg)) * LN2 + 0.9 * _half_dice(y, True)  # Eq. 6: squared denominator
    edg = (1 + 0.5 + 0.25) * _half_dice(edge_target(y), True)
    clf = (0.7 * LN2 + 0.3 * LN2) / 2
    assert result.loss.item() == pytest.approx(0.8 * (seg + edg) + 0.1 * clf, rel=1e-5)
    linear = get_objective("diffforensics", dice_squared=False)(model, batch)
    seg = 0.1 * (2.0 * fg + 0.5 * (1 - fg)) * LN2 + 0.9 * _half_dice(y)
    edg = (1 + 0.5 + 0.25) * _half_dice(edge_target(y))
    assert linear.loss.item() == pytest.approx(0.8 * (seg + edg) + 0.1 * clf, rel=1e-5)


def test_diffusion_pretraining_objective_freezes_the_encoder_and_regresses_simplex_noise():
    model, batch = _model("diffforensics")
    objective = get_objective("diffforensics_stage1")
    objective.prepare(model)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert model.alphas_cumprod.shape[0] == 1000
    _zero(model.noise_head[-1])  # predicts zero noise: the loss is the noise's mean square = 1
    assert objective(model, batch).loss.item() == pytest.approx(1.0, abs=1e-4)


class _FixedMGQ(nn.Module):
    """Stand-in for MGQFormer's training outputs with known values (its cosine-similarity
    logits cannot be zeroed by weights): M = M_aux = (0.3, 0.7) everywhere, LQT* = GQT*."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_mask = None

    def forward(self, x, gt_mask=None):
        self.seen_mask = gt_mask
        n, _, h, w = x.shape
        probs = torch.tensor([0.3, 0.7]).view(1, 2, 1, 1).expand(n, 2, h, w)
        tokens = torch.randn(n, 2, 8)
        return {"mask": probs, "aux_mask": probs, "lqt": tokens, "gqt": -tokens}


def test_mgqformer_objective_passes_the_mask_and_sums_the_three_terms():
    batch = _batch(16)
    model = _FixedMGQ()
    result = get_objective("mgqformer")(model, batch)
    fg = batch["mask"].mean().item()
    ce = -(fg * math.log(0.7) + (1 - fg) * math.log(0.3))
    assert model.seen_mask is batch["mask"]
    assert result.loss.item() == pytest.approx(ce + ce + 0.5 * 2.0, rel=1e-5)  # opposite tokens: 1 - cos = 2


def test_mgqformer_objective_runs_on_the_model():
    model, batch = _model("mgqformer")
    result = get_objective("mgqformer")(model, batch)
    result.loss.backward()
    assert set(result.parts) == {"loc", "aux", "guide"} and math.isfinite(result.loss.item())
    assert model.queries.grad is not None


def test_diffforensics_detection_weights_follow_the_papers_rule_from_label_counts():
    """lambda_0^c = floor(10 N_F / N) / 10, lambda_1^c = floor(10 N_R / N) / 10 (Sec. 3.3),
    and the loss uses them; clf_weights="paper" keeps the published 0.7 / 0.3 whatever the
    counts, "fixed" (or the older clf_auto=False) the given weights."""
    model, batch = _model("diffforensics")
    _zero(model.loc_head[-1], model.ecem, model.cls_head[-1])
    fixed = get_objective("diffforensics")
    auto = get_objective("diffforensics")
    assert "13 forged / 7 real" in auto.observe_labels(13, 7)
    assert (auto.clf_pos, auto.clf_neg) == (0.6, 0.3)
    labels = batch["label"].reshape(-1)
    assert 0 < labels.sum() < len(labels)  # the batch holds both kinds
    frac = labels.mean().item()
    diff = fixed(model, batch).loss.item() - auto(model, batch).loss.item()
    expected = 0.1 * LN2 * ((0.7 - 0.6) * frac + (0.3 - 0.3) * (1 - frac))
    assert diff == pytest.approx(expected, rel=1e-4)
    manual = get_objective("diffforensics", clf_auto=False, clf_pos=0.5, clf_neg=0.5)
    assert manual.observe_labels(13, 7) is None and (manual.clf_pos, manual.clf_neg) == (0.5, 0.5)
    paper = get_objective("diffforensics", clf_weights="paper", clf_pos=0.5)
    assert not paper.wants_label_counts and paper.observe_labels(13, 7) is None
    assert (paper.clf_pos, paper.clf_neg) == (0.7, 0.3)
    assert paper(model, batch).loss.item() == pytest.approx(fixed(model, batch).loss.item(), rel=1e-6)
    assert get_objective("diffforensics", clf_weights="fixed", clf_pos=0.5).clf_pos == 0.5
    with pytest.raises(ValueError, match="clf_weights"):
        get_objective("diffforensics", clf_weights="auto")

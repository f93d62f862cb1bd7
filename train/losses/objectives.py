"""The per-model training glue, in one place: which outputs go to which loss, what
targets each needs, how each model's ``forward`` is called. The trainer stays generic:
it asks ``get_objective(name)`` for a callable ``objective(model, batch) -> LossResult``.

A batch is a dict with ``image`` (N, 3, H, W, normalised), ``mask`` (N, 1, H, W in
{0, 1}) and ``label`` (N,) image labels (1 = forged). Objectives are named after the
model (``m2sformer`` ...) plus ``diffforensics_stage1`` for DiffForensics' denoising
pre-training, and ``contract`` for any model read through the output adapter (the default
of an import-path model, ``package.module:factory``). Paper weights are defaults; each is a
constructor argument.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.simplex import simplex_noise
from .functional import (balanced_bce, class_nll, cosine_distance, dice_loss, edge_target, focal_loss,
                         weighted_bce)


@dataclass
class LossResult:
    loss: torch.Tensor  # the scalar to back-propagate
    parts: dict[str, float] = field(default_factory=dict)  # named terms, for the log


class Objective:
    """Base class. ``prepare(model)`` runs once before training (freezing, modes);
    ``find_unused_parameters`` tells DDP that some parameters get no gradient. An objective
    with ``wants_label_counts`` is told the training set's forged / real image counts
    (``observe_labels``) before the first step."""

    find_unused_parameters = False
    wants_label_counts = False

    def prepare(self, model: nn.Module) -> None:
        pass

    def observe_labels(self, forged: int, real: int) -> str | None:
        """Returns a line saying what it set, or None."""
        return None

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossResult:
        raise NotImplementedError


def _parts(**terms: torch.Tensor) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items()}


class M2SFormerObjective(Objective):
    """M2SFormer: BCE on the region logits and on the global prior, each with per-sample
    pos_weight = negatives / positives, plus BCE on the Sobel edge band of the GT. The edge
    rule is the model's ``edge_target`` option (default "kornia", the authors' code; see
    ``edge_target``); ``edge_rule`` overrides it."""

    def __init__(self, edge_weight: float = 1.0, edge_rule: str | None = None) -> None:
        self.edge_weight = edge_weight
        self.edge_rule = edge_rule

    def __call__(self, model, batch):
        out = model(batch["image"])
        y = batch["mask"]
        rule = self.edge_rule or getattr(getattr(model, "module", model), "edge_target", "any")
        region = balanced_bce(out["region"], y)
        prior = balanced_bce(out["prior"], y)
        edge = F.binary_cross_entropy_with_logits(out["edge"], edge_target(y, rule))
        return LossResult(region + prior + self.edge_weight * edge, _parts(region=region, prior=prior, edge=edge))


def _resize_mask(mask: torch.Tensor, size) -> torch.Tensor:
    """The GT at a branch's size: area average, binarised at 0.5."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return (F.interpolate(mask, size=size, mode="area") >= 0.5).to(mask.dtype)


class TransForensicsObjective(Objective):
    """TransForensics Eq. 3: sum_i lambda_i (Dice + Focal(alpha 0.25, gamma 2)) over every
    built branch. ``mode="downsample"`` (default) compares each branch at its own stride
    with the downsampled GT and weights the finer branch more (Eq. 5: lambda C2..C5 =
    0.4, 0.3, 0.2, 0.1, from the paper's range [0.1, 0.4]); ``mode="upsample"`` compares
    nearest-upsampled predictions with the full GT and reverses the order (Eq. 4)."""

    BRANCHES = ("c2", "c3", "c4", "c5")

    def __init__(self, mode: str = "downsample", weights: dict[str, float] | None = None,
                 alpha: float = 0.25, gamma: float = 2.0) -> None:
        if mode not in ("downsample", "upsample"):
            raise ValueError(f"mode must be 'downsample' or 'upsample', got {mode!r}")
        ladder = (0.4, 0.3, 0.2, 0.1) if mode == "downsample" else (0.1, 0.2, 0.3, 0.4)
        self.mode, self.alpha, self.gamma = mode, alpha, gamma
        self.weights = weights or dict(zip(self.BRANCHES, ladder))

    def branch_loss(self, logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "downsample":
            target = _resize_mask(mask, logits.shape[-2:])
        else:
            logits, target = F.interpolate(logits, size=mask.shape[-2:], mode="nearest"), mask
        return dice_loss(torch.sigmoid(logits), target), focal_loss(logits, target, self.alpha, self.gamma)

    def __call__(self, model, batch):
        out = model(batch["image"])
        total, parts = 0.0, {}
        for b in self.BRANCHES:
            if f"logits_{b}" not in out:
                continue
            dice, focal = self.branch_loss(out[f"logits_{b}"], batch["mask"])
            total = total + self.weights[b] * (dice + focal)
            parts.update(_parts(**{f"dice_{b}": dice, f"focal_{b}": focal}))
        return LossResult(total, parts)


class MGQFormerObjective(Objective):
    """MGQFormer Eq. 8: L_loc + L_aux + lambda L_guide, lambda = 0.5. L_loc and L_aux are
    pixel cross-entropies of the class-probability masks M and M_aux with the clean GT
    (Eq. 6); L_guide = 1 - cos(LQT*, GQT*) token by token (Eq. 7). The GT mask goes into
    ``forward`` for the guiding path."""

    def __init__(self, guide_weight: float = 0.5) -> None:
        self.guide_weight = guide_weight

    def __call__(self, model, batch):
        y = batch["mask"]
        out = model(batch["image"], gt_mask=y)
        loc = class_nll(out["mask"], y)
        aux = class_nll(out["aux_mask"], y)
        guide = cosine_distance(out["lqt"], out["gqt"])
        return LossResult(loc + aux + self.guide_weight * guide, _parts(loc=loc, aux=aux, guide=guide))


class QMANetObjective(Objective):
    """QMA-Net Eq. 8: alpha Dice(mask) + beta Dice(edges), alpha 0.2, beta 0.8. The model
    predicts one boundary map per stage; L_edg is their mean Dice against the GT's Sobel
    edge band (our choice: the paper does not say how the stages are combined). The Dice
    is V-Net's, with the squared denominator (the paper cites Milletari et al. 2016 for
    it; ``dice_squared=False``: the linear one)."""

    def __init__(self, alpha: float = 0.2, beta: float = 0.8, dice_squared: bool = True) -> None:
        self.alpha, self.beta = alpha, beta
        self.dice_squared = dice_squared

    def __call__(self, model, batch):
        out = model(batch["image"])
        y = batch["mask"]
        sq = self.dice_squared
        seg = dice_loss(torch.sigmoid(out["mask"]), y, squared=sq)
        edges = edge_target(y)
        edg = torch.stack([dice_loss(torch.sigmoid(e), edges, squared=sq) for e in out["edges"]]).mean()
        return LossResult(self.alpha * seg + self.beta * edg, _parts(seg=seg, edge=edg))


class DiffForensicsObjective(Objective):
    """DiffForensics stage 2 (Eqs. 4-9) at the model's fixed t (5):
    L = alpha (L_seg + L_edg) + beta L_clf, alpha 0.8, beta 0.1;
    L_seg = l0 wbce(l1 = 2 forged, l2 = 0.5 real) + (1 - l0) Dice, l0 = 0.1;
    L_edg = sum_k Dice(f_k^e, y^e) / 2^(k-1), k = 1 the finest scale, y^e the Sobel edge
    band of the GT; Dice with Eq. 6's squared denominator (``dice_squared``, V-Net's;
    False: the linear one); L_clf = wbce on the image label, weights lambda_0^c (forged)
    and lambda_1^c (real), chosen by ``clf_weights``:

    - "dataset" (default): from the training set, the paper's rule (Sec. 3.3):
      floor(10 N_F / (N_F + N_R)) / 10 and floor(10 N_R / (N_F + N_R)) / 10 (the trainer
      calls ``observe_labels``; until then ``clf_pos`` / ``clf_neg``);
    - "paper": 0.7 / 0.3, the fixed values the paper publishes (Sec. 4.1, implementation
      details), whatever the training set;
    - "fixed": ``clf_pos`` / ``clf_neg`` as given.
    ``clf_auto`` (older spelling): False means "fixed"."""

    find_unused_parameters = True  # the stage-1 noise head gets no gradient
    CLF_CHOICES = ("dataset", "paper", "fixed")
    PAPER_CLF = (0.7, 0.3)

    def __init__(self, alpha: float = 0.8, beta: float = 0.1, seg_balance: float = 0.1,
                 seg_pos: float = 2.0, seg_neg: float = 0.5, clf_pos: float = 0.7, clf_neg: float = 0.3,
                 clf_weights: str = "dataset", dice_squared: bool = True, clf_auto: bool | None = None) -> None:
        if clf_auto is not None:
            clf_weights = "dataset" if clf_auto else "fixed"
        if clf_weights not in self.CLF_CHOICES:
            raise ValueError(f"clf_weights must be one of {self.CLF_CHOICES}, got {clf_weights!r}")
        self.alpha, self.beta = alpha, beta
        self.seg_balance, self.seg_pos, self.seg_neg = seg_balance, seg_pos, seg_neg
        self.clf_pos, self.clf_neg = self.PAPER_CLF if clf_weights == "paper" else (clf_pos, clf_neg)
        self.clf_weights = clf_weights
        self.wants_label_counts = clf_weights == "dataset"
        self.dice_squared = dice_squared

    def observe_labels(self, forged: int, real: int) -> str | None:
        if not self.wants_label_counts:
            return None
        total = forged + real
        if total < 1:
            raise ValueError("observe_labels: no images")
        self.clf_pos, self.clf_neg = math.floor(10 * forged / total) / 10, math.floor(10 * real / total) / 10
        return (f"DiffForensics L_clf weights from {forged} forged / {real} real training images: "
                f"{self.clf_pos:g} forged, {self.clf_neg:g} real")

    def __call__(self, model, batch):
        out = model(batch["image"], stage=2)
        y = batch["mask"]
        sq = self.dice_squared
        seg = (self.seg_balance * weighted_bce(out["mask"], y, self.seg_pos, self.seg_neg)
               + (1.0 - self.seg_balance) * dice_loss(torch.sigmoid(out["mask"]), y, squared=sq))
        edges = edge_target(y)
        edg = sum(dice_loss(torch.sigmoid(e), edges, squared=sq) / 2 ** k for k, e in enumerate(out["edges"]))
        label = batch["label"].reshape(-1, 1).to(out["cls"].dtype)
        clf = weighted_bce(out["cls"], label, self.clf_pos, self.clf_neg)
        total = self.alpha * (seg + edg) + self.beta * clf
        return LossResult(total, _parts(seg=seg, edge=edg, clf=clf))


class DiffusionPretrainObjective(Objective):
    """DiffForensics stage 1 (Algorithm 1): frozen encoder (no gradients, and kept in eval
    mode so its stochastic depth and dropout are off: ``DiffForensics.freeze_encoder``); t ~ U{1..T} (T = the model's
    ``diffusion_steps``, 1000), epsilon ~ Simplex(nu = 2^-6, 6 octaves, decay 0.8),
    x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) epsilon, loss = mean squared error of the
    predicted noise. Labels and masks are not used (self-supervised)."""

    find_unused_parameters = True  # the stage-2 heads get no gradient

    def __init__(self, frequency: float = 2.0 ** -6, octaves: int = 6, decay: float = 0.8,
                 freeze_encoder: bool = True) -> None:
        self.frequency, self.octaves, self.decay = frequency, octaves, decay
        self.freeze = freeze_encoder

    def prepare(self, model):
        if self.freeze:
            model.freeze_encoder(True)

    def __call__(self, model, batch):
        core = getattr(model, "module", model)  # the model itself under DDP
        x0 = batch["image"]
        steps = core.alphas_cumprod.shape[0]
        t = torch.randint(1, steps + 1, (x0.shape[0],), device=x0.device)
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, (1,))))  # follows torch's seed
        eps = simplex_noise(tuple(x0.shape), gen, self.frequency, self.octaves, self.decay, device=x0.device)
        pred = model(core.q_sample(x0, t, eps), t, stage=1)["noise"]
        mse = F.mse_loss(pred.float(), eps)
        return LossResult(mse, _parts(mse=mse))


class ContractObjective(Objective):
    """A model of another project (``train.models.adapter.ExternalModel``): its own loss
    where its forward computes one from the targets (IMDL-BenCo's ``backward_loss``; the
    targets ``mask``, ``edge_mask`` = the GT's Sobel edge band, ``label``), else BCE of the
    contract's ``prob`` with the mask plus ``score_weight`` x BCE of ``score`` with the image
    label (our choice for a model that brings no loss; the probabilities are clamped to
    [eps, 1 - eps] and compared as logits)."""

    def __init__(self, score_weight: float = 1.0, eps: float = 1e-6) -> None:
        self.score_weight, self.eps = score_weight, eps

    def __call__(self, model, batch):
        y = batch["mask"]
        label = batch["label"].reshape(-1).float()
        out = model(batch["image"], mask=y, edge_mask=edge_target(y), label=label)
        if "loss" in out:
            return LossResult(out["loss"], _parts(model_loss=out["loss"]))
        prob = torch.logit(out["prob"].float(), self.eps)
        score = torch.logit(out["score"].float(), self.eps).reshape(-1)
        pixel = F.binary_cross_entropy_with_logits(prob, y.float())
        image = F.binary_cross_entropy_with_logits(score, label)
        return LossResult(pixel + self.score_weight * image, _parts(pixel=pixel, image=image))


OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "m2sformer": M2SFormerObjective,
    "transforensics": TransForensicsObjective,
    "mgqformer": MGQFormerObjective,
    "qmanet": QMANetObjective,
    "diffforensics": DiffForensicsObjective,
    "diffforensics_stage1": DiffusionPretrainObjective,
    "contract": ContractObjective,
}


def list_objectives() -> list[str]:
    return sorted(OBJECTIVES)


def get_objective(name: str, **options: Any) -> Objective:
    """The objective ``name`` (a model name, ``diffforensics_stage1`` or ``contract``) with
    options; an import-path model name (``module:factory``) gets ``contract``."""
    if ":" in name and name not in OBJECTIVES:
        return ContractObjective(**options)
    try:
        factory = OBJECTIVES[name.lower()]
    except KeyError:
        raise KeyError(f"no training objective {name!r}; known: {', '.join(list_objectives())}") from None
    return factory(**options)

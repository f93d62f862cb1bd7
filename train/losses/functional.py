"""Loss terms the papers use, as plain functions of tensors.

Conventions: ``logits`` and ``target`` are (N, 1, H, W) (or (N, 1) for image labels),
targets are {0, 1} floats; every function returns a scalar averaged over the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from ..models.blocks.filters import Sobel


EDGE_RULES = ("any", "kornia")


def edge_target(mask: torch.Tensor, rule: str = "any") -> torch.Tensor:
    """Binary boundary band of a {0, 1} mask from its Sobel gradient (replicate padding).

    ``rule="any"``: every pixel whose gradient magnitude is non-zero (a band about two
    pixels wide around every region boundary, corners and single pixels included).
    ``rule="kornia"``: what M2SFormer's public code trains on, kornia's normalised Sobel
    (taps divided by 8, magnitude sqrt(gx^2 + gy^2 + 1e-6)) >= 0.5: both pixels of a
    straight step (gradient 0.5), not the weaker responses beside corners or a lone pixel."""
    if rule not in EDGE_RULES:
        raise ValueError(f"edge rule must be one of {EDGE_RULES}, got {rule!r}")
    sobel = Sobel("replicate").to(mask.device)
    if rule == "any":
        return (sobel.magnitude(mask.float()) > 1e-3).to(mask.dtype)
    gx, gy = sobel.gradients(mask.float())
    magnitude = torch.sqrt((gx / 8.0) ** 2 + (gy / 8.0) ** 2 + 1e-6)
    return (magnitude >= 0.5).to(mask.dtype)


def balanced_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE with a per-sample ``pos_weight`` = negatives / positives of that sample's target
    (M2SFormer); a sample without positives gets pos_weight 1."""
    flat = target.flatten(1)
    pos = flat.sum(dim=1)
    neg = flat.shape[1] - pos
    pos_weight = torch.where(pos > 0, neg / pos.clamp_min(1.0), torch.ones_like(pos))
    pos_weight = pos_weight.reshape(-1, *([1] * (target.dim() - 1)))
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, w_pos: float, w_neg: float) -> torch.Tensor:
    """-mean(w_pos y log p + w_neg (1 - y) log(1 - p)) with p = sigmoid(logits)
    (DiffForensics Eqs. 5 and 8)."""
    weight = w_pos * target + w_neg * (1.0 - target)
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight)


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, squared: bool = False) -> torch.Tensor:
    """1 - (2 sum(y p) + s) / (sum(y) + sum(p) + s) per sample (TransForensics Eq. 1, with
    the usual smoothing ``s`` that makes an empty target and empty prediction cost 0),
    averaged over the batch. ``squared=True``: V-Net's denominator sum(y^2) + sum(p^2)
    (Milletari et al. 2016; DiffForensics Eq. 6). ``prob`` are probabilities, not logits."""
    p, y = prob.flatten(1), target.flatten(1)
    denominator = (p * p).sum(1) + (y * y).sum(1) if squared else p.sum(1) + y.sum(1)
    return (1.0 - (2.0 * (p * y).sum(1) + smooth) / (denominator + smooth)).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017; TransForensics Eq. 2, alpha 0.25, gamma 2),
    averaged over pixels: torchvision's ``sigmoid_focal_loss``."""
    return sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction="mean")


def class_nll(prob: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Pixel cross-entropy of class probabilities ``prob`` (N, C, H, W) (already softmaxed)
    against integer-valued class labels ``target`` (N, 1, H, W) or (N, H, W): mean over
    pixels of -log prob[label] (MGQFormer's L_loc and L_aux)."""
    labels = target.reshape(prob.shape[0], *prob.shape[2:]).long()
    return F.nll_loss(prob.clamp_min(eps).log(), labels)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos(a, b) along the last dimension, averaged over every other index
    (MGQFormer's mask-guided loss, Eq. 7, token by token)."""
    return (1.0 - F.cosine_similarity(a, b, dim=-1)).mean()

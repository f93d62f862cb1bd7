"""How closely a candidate's outputs follow a reference's: a reduced-precision artifact (FP16-mixed,
INT8 Q/DQ) or backend (OpenVINO BF16) against FP32. Shared by ``export`` and ``runtime.tune``.

``agreement(reference, candidate)`` compares two sets of contract outputs ("prob", "score")
on the same images: the largest and mean absolute probability difference, the score
difference, and the agreement of the binary masks (``prob > threshold``) as IoU and as the
share of pixels that flip. ``decided_iou`` is the mask IoU over the pixels the reference
decides with a margin (|prob - threshold| > ``margin``, default 1e-3): a pixel the FP32 model
itself puts within a rounding error of the threshold may flip under any change of
arithmetic, and untrained (random-weight) models put a good share of their pixels there
(measured: up to 3.6% within 1e-3 of 0.5 on the small seed models), so that IoU says whether
reduced precision changes masks, not whether the model is undecided. ``decided_flipped`` is the
share of all pixels that flip although the reference decides them (``flipped`` minus the flips
of undecided pixels), ``undecided`` the share the reference leaves within the margin.
(Accuracy against ground truth is ``train.metrics``' business.)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Agreement:
    """Candidate vs reference outputs over a set of images (all pixels pooled)."""

    max_abs_prob: float
    mean_abs_prob: float
    max_abs_score: float
    mask_iou: float  # |A & B| / |A | B| over all pixels; 1.0 when both masks are empty
    decided_iou: float  # the same over pixels the reference decides with a margin
    flipped: float  # share of pixels whose mask value differs
    images: int
    decided_flipped: float = 0.0  # share of pixels that differ although the reference decides them
    undecided: float = 0.0  # share of pixels the reference puts within the margin of the threshold

    def within(self, max_prob_diff: float, min_iou: float) -> bool:
        """Probability maps within ``max_prob_diff`` everywhere and decided masks within ``min_iou``."""
        return self.max_abs_prob <= max_prob_diff and self.decided_iou >= min_iou

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 8) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def describe(self) -> str:
        return (f"max |prob diff| {self.max_abs_prob:.2e}, mean {self.mean_abs_prob:.2e}, "
                f"max |score diff| {self.max_abs_score:.2e}, mask IoU {self.mask_iou:.4f} "
                f"(decided pixels {self.decided_iou:.4f}), "
                f"flipped pixels {100 * self.flipped:.3f}% ({100 * self.decided_flipped:.3f}% decided ones; "
                f"{self.images} image(s))")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree fully (1.0)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def agreement(reference: Sequence[dict[str, np.ndarray]], candidate: Sequence[dict[str, np.ndarray]],
              threshold: float = 0.5, margin: float = 1e-3) -> Agreement:
    """Compare per-batch output dicts (same images, same order)."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError("agreement needs the same, non-zero number of output batches on both sides")
    ref_p = np.concatenate([r["prob"] for r in reference]).astype(np.float64)
    can_p = np.concatenate([c["prob"] for c in candidate]).astype(np.float64)
    ref_s = np.concatenate([r["score"] for r in reference]).astype(np.float64)
    can_s = np.concatenate([c["score"] for c in candidate]).astype(np.float64)
    diff = np.abs(ref_p - can_p)
    ref_m, can_m = ref_p > threshold, can_p > threshold
    decided = np.abs(ref_p - threshold) > margin
    return Agreement(
        max_abs_prob=float(diff.max()) if np.isfinite(diff).all() else float("inf"),
        mean_abs_prob=float(diff.mean()) if np.isfinite(diff).all() else float("inf"),
        max_abs_score=float(np.abs(ref_s - can_s).max()),
        mask_iou=mask_iou(ref_m, can_m),
        decided_iou=mask_iou(ref_m[decided], can_m[decided]),
        flipped=float((ref_m != can_m).mean()),
        images=int(ref_p.shape[0]),
        decided_flipped=float(((ref_m != can_m) & decided).mean()),
        undecided=float((~decided).mean()),
    )


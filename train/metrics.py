"""Localization and detection metrics, the way the papers report them.

Pixel level (forged images only: an authentic image has no forged pixel, so F1, IoU and
AUC are undefined for it; it is counted by the image-level metrics and by the pixel
false-positive rate on authentic images):

- F1 at the fixed threshold 0.5 (a pixel is predicted forged when prob > 0.5), IoU and
  Dice at 0.5 (Dice = F1 on binarised masks: both are reported because the papers name
  them differently), AUC, and best-threshold F1;
- each in two ways: **per image**, computed per image and averaged over images (the
  IMDL-BenCo convention; best-threshold F1 then uses each image's own best threshold),
  and **dataset**, computed once over all pixels of all forged images pooled (one
  threshold for the whole dataset for best F1).

Threshold-free metrics (AUC, best F1) are computed from histograms of the probabilities
quantised to 16 bits (``round(p * 65535)``), exact for those quantised values and
accumulated in O(1) memory per image; F1/IoU/Dice at 0.5 use the unquantised
probabilities.

Image level: ACC at 0.5 on the image score, AUC, and EER (the error rate where the false
positive rate equals the false negative rate on the linearly interpolated ROC curve).
"""
from __future__ import annotations

import numpy as np

LEVELS = 65536  # 16-bit quantisation of probabilities for the threshold-free metrics
THRESHOLD = 0.5


def quantize(prob: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> integer bins 0..65535."""
    return np.rint(np.clip(prob, 0.0, 1.0) * (LEVELS - 1)).astype(np.int64)


def f1_score(tp: float, fp: float, fn: float) -> float:
    """2 TP / (2 TP + FP + FN); 0 when the denominator is 0."""
    d = 2 * tp + fp + fn
    return float(2 * tp / d) if d else 0.0


def iou_score(tp: float, fp: float, fn: float) -> float:
    d = tp + fp + fn
    return float(tp / d) if d else 0.0


def roc_from_counts(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points from per-score-group counts of positives and negatives, groups ordered by
    DEScending score: (fpr, tpr, tp) with a leading (0, 0) point. Groups share one
    threshold, so ties are handled as scikit-learn does."""
    tp = np.concatenate([[0], np.cumsum(pos)])
    fp = np.concatenate([[0], np.cumsum(neg)])
    return fp / max(fp[-1], 1), tp / max(tp[-1], 1), tp


def auc_from_counts(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids); nan unless both classes are present."""
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    fpr, tpr, _ = roc_from_counts(pos, neg)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def best_f1_from_counts(pos: np.ndarray, neg: np.ndarray) -> float:
    """Largest F1 over all thresholds (groups in descending score order)."""
    total = pos.sum()
    tp = np.cumsum(pos)
    fp = np.cumsum(neg)
    denom = 2 * tp + fp + (total - tp)
    f1 = np.divide(2 * tp, denom, out=np.zeros(len(tp), dtype=float), where=denom > 0)
    return float(f1.max()) if len(f1) else 0.0


def eer_from_counts(pos: np.ndarray, neg: np.ndarray) -> float:
    """Equal error rate: FPR where FPR = FNR (= 1 - TPR) on the interpolated ROC curve."""
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    fpr, tpr, _ = roc_from_counts(pos, neg)
    gap = (1.0 - tpr) - fpr  # decreasing from 1 to -1
    k = int(np.argmax(gap <= 0))  # first point at or past the crossing
    if gap[k] == 0:
        return float(fpr[k])
    a = k - 1
    s = gap[a] / ((fpr[k] - fpr[a]) + (tpr[k] - tpr[a]))
    return float(fpr[a] + s * (fpr[k] - fpr[a]))


def _score_groups(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of positives and negatives per distinct score, in descending score order."""
    uniq, inverse = np.unique(-np.asarray(scores, dtype=np.float64), return_inverse=True)
    labels = np.asarray(labels).astype(bool)
    pos = np.bincount(inverse, weights=labels, minlength=len(uniq))
    neg = np.bincount(inverse, weights=~labels, minlength=len(uniq))
    return pos, neg


def _histograms(prob: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin counts of forged and authentic pixels, in DEScending probability order."""
    q = quantize(prob)
    pos = np.bincount(q[mask], minlength=LEVELS)[::-1]
    neg = np.bincount(q[~mask], minlength=LEVELS)[::-1]
    return pos, neg


def _nanmean(values: list[float]) -> float:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")


PIXEL_KEYS = ("f1", "f1_best", "auc", "iou", "dice")


class PixelMetrics:
    """Accumulates pixel-level metrics image by image (``update``), per image and pooled."""

    def __init__(self, threshold: float = THRESHOLD) -> None:
        self.threshold = threshold
        self.per_image: dict[str, list[float]] = {k: [] for k in PIXEL_KEYS}
        self.pos = np.zeros(LEVELS, dtype=np.int64)
        self.neg = np.zeros(LEVELS, dtype=np.int64)
        self.tp = self.fp = self.fn = 0
        self.authentic_images = 0
        self.authentic_fp: list[float] = []

    def update(self, prob: np.ndarray, mask: np.ndarray) -> None:
        """``prob`` float H x W in [0, 1], ``mask`` bool H x W (same size)."""
        if prob.shape != mask.shape:
            raise ValueError(f"prediction {prob.shape} and mask {mask.shape} differ in size")
        mask = mask.astype(bool)
        pred = prob > self.threshold
        if not mask.any():
            self.authentic_images += 1
            self.authentic_fp.append(float(pred.mean()))
            return
        tp = int(np.count_nonzero(pred & mask))
        fp = int(np.count_nonzero(pred & ~mask))
        fn = int(np.count_nonzero(~pred & mask))
        pos, neg = _histograms(prob, mask)
        f1 = f1_score(tp, fp, fn)
        for key, value in (("f1", f1), ("f1_best", best_f1_from_counts(pos, neg)),
                           ("auc", auc_from_counts(pos, neg)), ("iou", iou_score(tp, fp, fn)), ("dice", f1)):
            self.per_image[key].append(value)
        self.pos += pos
        self.neg += neg
        self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn

    @property
    def forged_images(self) -> int:
        return len(self.per_image["f1"])

    def result(self) -> dict:
        per_image = {k: _nanmean(v) for k, v in self.per_image.items()}
        f1 = f1_score(self.tp, self.fp, self.fn)
        dataset = {"f1": f1, "f1_best": best_f1_from_counts(self.pos, self.neg) if self.forged_images else float("nan"),
                   "auc": auc_from_counts(self.pos, self.neg), "iou": iou_score(self.tp, self.fp, self.fn), "dice": f1}
        if not self.forged_images:
            dataset = {k: float("nan") for k in PIXEL_KEYS}
        return {"per_image": per_image, "dataset": dataset, "forged_images": self.forged_images,
                "auc_undefined_images": int(np.isnan(self.per_image["auc"]).sum()) if self.forged_images else 0,
                "authentic_images": self.authentic_images,
                "authentic_fp_rate": _nanmean(self.authentic_fp)}


def image_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float = THRESHOLD) -> dict:
    """Image-level ACC (score > threshold), AUC and EER; AUC/EER are nan with one class."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    pos, neg = _score_groups(scores, labels)
    acc = float(np.mean((scores > threshold) == labels)) if len(scores) else float("nan")
    return {"acc": acc, "auc": auc_from_counts(pos, neg), "eer": eer_from_counts(pos, neg),
            "images": int(len(scores)), "forged": int(labels.sum())}

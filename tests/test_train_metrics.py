"""Pixel and image metrics against scikit-learn on random data, to 1e-6."""
import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_recall_curve, roc_auc_score, roc_curve

from train.metrics import LEVELS, PixelMetrics, image_metrics, quantize

TOL = 1e-6


def _best_f1(y, s):
    precision, recall, _ = precision_recall_curve(y, s)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)
    return f1.max()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    out = []
    for i in range(6):
        h, w = rng.integers(20, 40, 2)
        mask = rng.random((h, w)) < rng.uniform(0.1, 0.5)
        prob = np.clip(0.35 * mask + rng.random((h, w)) * 0.65, 0, 1)
        out.append((prob, mask))
    out.append((rng.random((15, 15)), np.zeros((15, 15), bool)))  # authentic: excluded from pixel metrics
    return out


def test_pixel_metrics_per_image_and_dataset_match_sklearn(images):
    metrics = PixelMetrics()
    for prob, mask in images:
        metrics.update(prob, mask)
    r = metrics.result()
    forged = [(p, m) for p, m in images if m.any()]
    assert r["forged_images"] == len(forged) and r["authentic_images"] == 1
    per = {k: [] for k in ("f1", "iou", "auc", "f1_best")}
    for p, m in forged:
        y, s, q = m.ravel(), p.ravel(), quantize(p).ravel() / (LEVELS - 1)
        per["f1"].append(f1_score(y, s > 0.5))
        per["iou"].append(jaccard_score(y, s > 0.5))
        per["auc"].append(roc_auc_score(y, q))
        per["f1_best"].append(_best_f1(y, q))
    for key, values in per.items():
        assert r["per_image"][key] == pytest.approx(np.mean(values), abs=TOL), key
    assert r["per_image"]["dice"] == pytest.approx(np.mean(per["f1"]), abs=TOL)
    y = np.concatenate([m.ravel() for _, m in forged])
    s = np.concatenate([p.ravel() for p, _ in forged])
    q = quantize(s) / (LEVELS - 1)
    assert r["dataset"]["f1"] == pytest.approx(f1_score(y, s > 0.5), abs=TOL)
    assert r["dataset"]["iou"] == pytest.approx(jaccard_score(y, s > 0.5), abs=TOL)
    assert r["dataset"]["auc"] == pytest.approx(roc_auc_score(y, q), abs=TOL)
    assert r["dataset"]["f1_best"] == pytest.approx(_best_f1(y, q), abs=TOL)
    # the 16-bit quantisation moves the AUC of continuous scores by far less than a rounding digit
    assert r["dataset"]["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-4)
    # per-image and pooled averages are genuinely different numbers
    assert r["per_image"]["f1"] != pytest.approx(r["dataset"]["f1"], abs=1e-9)


def test_constant_predictions_give_the_baselines():
    mask = np.zeros((10, 10), bool)
    mask[:4] = True  # 40 % forged
    zeros, ones = PixelMetrics(), PixelMetrics()
    zeros.update(np.zeros((10, 10)), mask)
    ones.update(np.ones((10, 10)), mask)
    assert zeros.result()["per_image"]["f1"] == 0.0
    assert ones.result()["per_image"]["f1"] == pytest.approx(2 * 0.4 / 1.4)
    assert ones.result()["per_image"]["auc"] == pytest.approx(0.5)


def test_threshold_is_strictly_greater_than_half():
    m = PixelMetrics()
    m.update(np.array([[0.5, 0.6]]), np.array([[True, True]]))
    assert m.tp == 1 and m.fn == 1


def test_image_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.random(80) < 0.4
    scores = np.clip(rng.random(80) * 0.8 + 0.25 * labels, 0, 1)
    scores[:6] = 0.5  # ties
    r = image_metrics(scores, labels)
    assert r["acc"] == pytest.approx(accuracy_score(labels, scores > 0.5), abs=TOL)
    assert r["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=TOL)
    fpr, tpr, _ = roc_curve(labels, scores)
    eer = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
    assert r["eer"] == pytest.approx(eer, abs=TOL)


def test_image_metrics_with_one_class_are_undefined_not_wrong():
    r = image_metrics(np.array([0.2, 0.9]), np.array([True, True]))
    assert np.isnan(r["auc"]) and np.isnan(r["eer"]) and r["acc"] == 0.5

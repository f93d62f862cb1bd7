"""runtime.agreement on hand-made probability maps: flips split into those of pixels the
reference decides with a margin and those it leaves at the threshold, checked against
scikit-learn's Jaccard score as the IoU oracle."""
import numpy as np
import pytest
from sklearn.metrics import jaccard_score

from runtime.agreement import agreement


def _out(prob):
    prob = np.asarray(prob, dtype=np.float32).reshape(1, 1, 2, 3)
    return {"prob": prob, "score": prob.reshape(1, -1).max(axis=1)}


def test_flips_of_decided_and_undecided_pixels():
    ref = [0.90, 0.5004, 0.10, 0.70, 0.4996, 0.20]
    can = [0.20, 0.4999, 0.10, 0.80, 0.5003, 0.60]  # flips: pixel 0 and 5 (decided), 1 and 4 (undecided)
    got = agreement([_out(ref)], [_out(can)], threshold=0.5, margin=1e-3)
    assert got.flipped == pytest.approx(4 / 6)
    assert got.decided_flipped == pytest.approx(2 / 6)
    assert got.undecided == pytest.approx(2 / 6)
    ref_m, can_m = np.array(ref) > 0.5, np.array(can) > 0.5
    assert got.mask_iou == pytest.approx(jaccard_score(ref_m, can_m))
    decided = np.abs(np.array(ref) - 0.5) > 1e-3
    assert got.decided_iou == pytest.approx(jaccard_score(ref_m[decided], can_m[decided]))
    assert "decided ones" in got.describe()


def test_identical_outputs_flip_nothing():
    ref = [0.9, 0.5, 0.1, 0.7, 0.3, 0.2]
    got = agreement([_out(ref)], [_out(ref)])
    assert got.flipped == got.decided_flipped == 0.0 and got.mask_iou == 1.0
    assert got.undecided == pytest.approx(1 / 6)  # 0.5 sits on the threshold

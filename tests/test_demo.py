"""The demo command's job end to end (small configuration to keep the suite fast)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bench.demo import demo_image

ROOT = Path(__file__).resolve().parents[1]


def test_demo_image_is_deterministic_with_a_splice():
    a, mask = demo_image(96, seed=1)
    b, _ = demo_image(96, seed=1)
    assert a.dtype == np.uint8 and a.shape == (96, 96, 3) and np.array_equal(a, b)
    assert 0.05 < mask.mean() < 0.5


def test_demo_trains_exports_and_predicts_held_out_images(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.demo", "--small", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "parity" in out and "pass" in out and "all steps passed" in out
    assert "held-out pixel F1 at 0.5" in out and "all-zero" in out and "all-one" in out
    assert "onnxruntime p50" in out and "make bench" in out  # the closing short benchmark
    for name in ("m2sformer.onnx", "m2sformer.onnx.json", "heldout_predictions.png", "run/best.pt",
                 "run/curves.png", "run/train_log.csv"):
        assert (tmp_path / name).is_file(), name
    test_images = sorted((tmp_path / "data" / "test" / "Tp").iterdir())
    masks = sorted((tmp_path / "heldout").glob("*_mask.png"))
    assert len(masks) == len(test_images) == 6
    mask = np.asarray(Image.open(masks[0]))
    assert mask.shape == np.asarray(Image.open(test_images[0])).shape[:2] and set(np.unique(mask)) <= {0, 255}

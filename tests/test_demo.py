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


def test_demo_runs_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.demo", "--small", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "parity" in proc.stdout and "pass" in proc.stdout and "all steps passed" in proc.stdout
    for name in ("m2sformer.onnx", "m2sformer.onnx.json", "demo_mask.png", "demo_overlay.png"):
        assert (tmp_path / name).is_file(), name
    mask = np.asarray(Image.open(tmp_path / "demo_mask.png"))
    assert mask.shape == (320, 320) and set(np.unique(mask)) <= {0, 255}

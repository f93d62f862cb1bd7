"""`python -m runtime.predict` end to end in a subprocess, and the no-torch guarantee."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import Predictor
from runtime.overlay import outline, overlay

try:
    from test_runtime_fixtures import make_model, random_rgb
except ImportError:  # tests/ used as a package
    from .test_runtime_fixtures import make_model, random_rgb

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime"


def run_cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.predict", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = make_model(d)
    images = []
    for k, (h, w) in enumerate([(37, 53), (24, 30)]):
        path = d / f"img{k}.png"
        Image.fromarray(random_rgb(h, w, seed=10 + k)).save(path)
        images.append(path)
    return model, images


def test_cli_writes_mask_and_overlay(setup, tmp_path):
    model, images = setup
    out = tmp_path / "out"
    r = run_cli(model, *images, "--out", out)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "img0_mask.png", "img0_overlay.png", "img1_mask.png", "img1_overlay.png"]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    predictor = Predictor(model)
    for img, line in zip(images, lines):
        pred = predictor.predict(img)
        m = re.fullmatch(r"(.+)  score=(\d\.\d{3})  tampered_px=(\d+\.\d)%", line)
        assert m, line
        assert m.group(1) == str(img)
        assert float(m.group(2)) == pytest.approx(pred.score, abs=6e-4)
        assert float(m.group(3)) == pytest.approx(100 * pred.tampered_fraction, abs=0.06)
        with Image.open(out / f"{img.stem}_mask.png") as mask_img:
            assert mask_img.mode == "L"
            mask = np.asarray(mask_img)
        assert set(np.unique(mask).tolist()) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, pred.mask)
        with Image.open(out / f"{img.stem}_overlay.png") as ov:
            assert ov.mode == "RGB" and ov.size == Image.open(img).size
            np.testing.assert_array_equal(np.asarray(ov), overlay(np.asarray(Image.open(img)),
                                                                  pred.mask))


def test_cli_json_and_threshold(setup, tmp_path):
    model, images = setup
    r = run_cli(model, images[0], "--out", tmp_path, "--json", "--threshold", "1.0")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 1 and rows[0]["image"] == str(images[0])
    assert rows[0]["tampered_fraction"] == 0.0
    assert (rows[0]["height"], rows[0]["width"]) == (37, 53)
    assert Path(rows[0]["mask"]).is_file() and Path(rows[0]["overlay"]).is_file()


def test_cli_bad_image_writes_nothing(setup, tmp_path):
    model, images = setup
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    out = tmp_path / "out"
    r = run_cli(model, images[0], bad, images[1], "--out", out)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(bad) in err[0]
    assert not out.exists() or list(out.iterdir()) == []
    assert r.stdout == ""


@pytest.mark.parametrize("case", ["missing_sidecar", "missing_image", "bad_threshold", "same_stem"])
def test_cli_input_errors_exit_2(setup, tmp_path, case):
    model, images = setup
    out = tmp_path / "out"
    if case == "missing_sidecar":
        lone = tmp_path / "lone.onnx"
        lone.write_bytes(model.read_bytes())
        args = [lone, images[0]]
    elif case == "missing_image":
        args = [model, images[0], tmp_path / "nowhere.jpg"]
    elif case == "bad_threshold":
        args = [model, images[0], "--threshold", "1.5"]
    else:
        other = tmp_path / "img0.jpg"
        Image.open(images[1]).save(other)
        args = [model, images[0], other]
    r = run_cli(*args, "--out", out)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), r.stderr
    assert not out.exists()


def test_outline_and_overlay():
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    edge = outline(mask)
    assert edge.sum() == 12 and not edge[2:4, 2:4].any()
    img = np.full((6, 6, 3), 100, np.uint8)
    ov = overlay(img, mask)
    assert ov[0, 0].tolist() == [100, 100, 100]  # outside: untouched
    assert ov[1, 1].tolist() == [255, 0, 0]  # outline: solid red
    assert ov[2, 2].tolist() == [round(100 * 0.55 + 255 * 0.45), 55, 55]  # tinted


_NO_TORCH = """
import sys
import runtime, runtime.predict
assert "onnxruntime" not in sys.modules, "import runtime must not load onnxruntime"
from runtime import Predictor
import numpy as np
pred = Predictor(sys.argv[1]).predict(np.full((37, 53, 3), 128, np.uint8))
assert pred.prob.shape == (37, 53)
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not bad, bad
for pkg in ("train", "export", "bench"):
    assert pkg not in sys.modules, pkg
print("ok")
"""


def test_runtime_never_imports_torch(setup):
    model, _ = setup
    r = subprocess.run([sys.executable, "-c", _NO_TORCH, str(model)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_runtime_sources_import_only_allowed_packages():
    allowed = {"numpy", "PIL", "onnxruntime", "tensorrt", "cuda", "tqdm", "__future__"}
    stdlib = set(sys.stdlib_module_names)
    for path in RUNTIME.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or top in stdlib, f"{path.name} imports {name}"

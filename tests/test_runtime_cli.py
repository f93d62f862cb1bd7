"""`python -m runtime.predict` end to end in a subprocess, and the no-torch guarantee."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import Predictor
from runtime.overlay import outline, overlay

try:
    from ctrl_c import python_as_from_a_terminal
    from test_runtime_fixtures import make_model, random_rgb
except ImportError:  # tests/ used as a package
    from .ctrl_c import python_as_from_a_terminal
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


@pytest.mark.parametrize("case", ["missing_sidecar", "missing_image", "bad_threshold", "bad_threads", "same_stem"])
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
    elif case == "bad_threads":
        args = [model, images[0], "--threads", "0"]
    else:
        other = tmp_path / "img0.jpg"
        Image.open(images[1]).save(other)
        args = [model, images[0], other]
    r = run_cli(*args, "--out", out)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), r.stderr
    if case.startswith("bad_"):
        assert err[0].startswith(f"error: --{case[4:]}: "), err[0]
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
import importlib.util, runtime.tune
if importlib.util.find_spec("openvino"):
    assert Predictor(sys.argv[1], backend="openvino").predict(np.zeros((9, 9, 3), np.uint8)).prob.shape == (9, 9)
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
    allowed = {"numpy", "PIL", "jsonschema", "onnxruntime", "openvino", "tensorrt", "cuda", "tqdm", "__future__"}
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


# --------------------------------------------------------------------------- #
# Folders, --no-overlay, one decode per image, errors mid-run, Ctrl-C
# --------------------------------------------------------------------------- #


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_cli_walks_folders_recursively_and_mirrors_them(setup, tmp_path):
    model, images = setup
    photos = tmp_path / "photos"
    (photos / "a" / "b").mkdir(parents=True)
    (photos / ".hidden").mkdir()
    Image.open(images[0]).save(photos / "top.PNG")
    Image.open(images[1]).save(photos / "a" / "b" / "deep.jpg")
    Image.open(images[1]).save(photos / ".hidden" / "skipped.png")
    (photos / "notes.txt").write_text("not an image")
    out = photos / "masks"  # inside the input folder: its files are never taken as inputs
    for _ in range(2):
        r = run_cli(model, photos, images[1], "--out", out)
        assert r.returncode == 0, r.stderr
    assert _tree(out) == ["a/b/deep_mask.png", "a/b/deep_overlay.png", "img1_mask.png", "img1_overlay.png",
                          "top_mask.png", "top_overlay.png"]
    assert [line.split("  ")[0] for line in r.stdout.splitlines()] == [
        str(photos / "a" / "b" / "deep.jpg"), str(photos / "top.PNG"), str(images[1])]


def test_cli_empty_folder_is_one_line(setup, tmp_path):
    model, _ = setup
    (tmp_path / "empty").mkdir()
    r = run_cli(model, tmp_path / "empty", "--out", tmp_path / "out")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"error: folder {tmp_path / 'empty'}: no image files")
    assert not (tmp_path / "out").exists()


def test_cli_no_overlay_and_json(setup, tmp_path):
    model, images = setup
    r = run_cli(model, *images, "--out", tmp_path / "out", "--no-overlay", "--json", "--threads", "1")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["overlay"] for row in rows] == [None, None]
    assert _tree(tmp_path / "out") == ["img0_mask.png", "img1_mask.png"]


def test_cli_decodes_each_image_once(setup, tmp_path, monkeypatch, capsys):
    from PIL import ImageFile

    from runtime.predict import main

    model, images = setup
    loads = []
    original = ImageFile.ImageFile.load

    def counting_load(self):
        if self.tile:  # a decode still to do (PIL returns at once for a loaded image)
            loads.append(Path(getattr(self, "filename", "") or self.fp.name).name)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    assert main([str(model), *map(str, images), "--out", str(tmp_path / "out")]) == 0
    assert sorted(loads) == sorted(p.name for p in images)


def _truncated_jpeg(path: Path, seed: int = 0) -> Path:
    Image.fromarray(random_rgb(64, 64, seed=seed)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, scan cut off
    return path


def test_cli_truncated_png_is_caught_before_anything_is_written(setup, tmp_path):
    model, images = setup
    bad = tmp_path / "cut.png"
    Image.fromarray(random_rgb(64, 64, seed=3)).save(bad)
    bad.write_bytes(bad.read_bytes()[:-40])
    r = run_cli(model, images[0], bad, "--out", tmp_path / "out")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and str(bad) in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_cli_image_corrupt_past_its_header_stops_there_with_one_line(setup, tmp_path):
    model, images = setup
    bad = _truncated_jpeg(tmp_path / "cut.jpg")
    out = tmp_path / "out"
    r = run_cli(model, images[0], bad, images[1], "--out", out)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"error: image {bad}: truncated"), r.stderr
    assert r.stdout.splitlines()[0].startswith(str(images[0])) and len(r.stdout.splitlines()) == 1
    # the image before keeps its complete outputs; the bad one and the one after get none
    assert sorted(p.name for p in out.iterdir()) == ["img0_mask.png", "img0_overlay.png"]
    Image.open(out / "img0_overlay.png").load()


def test_cli_out_under_a_file_is_one_line(setup, tmp_path):
    model, images = setup
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        r = run_cli(model, images[0], "--out", out)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"error: --out {out}"), r.stderr


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_cli_unwritable_out_is_one_line(setup, tmp_path):
    model, images = setup
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        r = run_cli(model, images[0], "--out", locked / "out")
    finally:
        locked.chmod(0o700)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--out" in r.stderr


def test_cli_ctrl_c_exits_130_with_one_line(setup, tmp_path):
    model, images = setup
    fifo = tmp_path / "slow.png"
    os.mkfifo(fifo)  # the CLI blocks reading it, a sure moment to press Ctrl-C
    out = tmp_path / "out"
    command = python_as_from_a_terminal("-m", "runtime.predict", str(model), str(images[0]), str(fifo),
                                        "--out", str(out))
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = None
    try:
        deadline = time.monotonic() + 60
        while writer is None:  # opening the writing end succeeds once the CLI reads the FIFO
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if writer is not None:
            os.close(writer)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert stderr == "error: interrupted\n" and stdout == ""
    assert not out.exists()


def test_cli_ctrl_c_while_writing_leaves_no_part_of_that_image(setup, tmp_path, monkeypatch, capsys):
    import runtime.predict as cli

    model, images = setup
    calls = []

    def overlay_then_interrupt(image, mask):
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C arrives while the second image is being written
            raise KeyboardInterrupt
        return overlay(image, mask)

    monkeypatch.setattr(cli, "overlay", overlay_then_interrupt)
    out = tmp_path / "out"
    assert cli.main([str(model), *map(str, images), "--out", str(out)]) == 130
    assert capsys.readouterr().err == "error: interrupted\n"
    assert sorted(p.name for p in out.iterdir()) == ["img0_mask.png", "img0_overlay.png"]  # no temp, no img1


def test_cli_without_tqdm(setup, tmp_path):
    model, images = setup
    code = ("import sys; sys.modules['tqdm'] = None; from runtime.predict import main; "
            "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, str(model), *map(str, images), "--out", str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert len(r.stdout.splitlines()) == 2


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_counts_plainly_without_tqdm(monkeypatch, capsys):
    from runtime.progress import Progress

    monkeypatch.setitem(sys.modules, "tqdm", None)
    tty = _Tty()
    bar = Progress(["a", "b", "c"], total=3, desc="predict", stream=tty)
    for item in bar:
        bar.write(item)
    bar.close()
    assert capsys.readouterr().out == "a\nb\nc\n"
    assert "predict: 3/3" in tty.getvalue() and tty.getvalue().endswith("\r\033[K")
    quiet = io.StringIO()  # not a terminal: nothing drawn
    for _ in Progress(["a", "b"], total=2, desc="predict", stream=quiet):
        pass
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("shape", [(7, 5), (2100, 9)])  # the second crosses overlay bands
def test_overlay_matches_a_per_pixel_float_blend(shape):
    from runtime.overlay import ALPHA, BAND_ROWS, TINT

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    mask = rng.random(shape) > 0.4
    if shape[0] > BAND_ROWS:
        mask[BAND_ROWS - 3: BAND_ROWS + 3] = True  # a region across a band boundary
    ref = img.astype(np.float32)
    color = np.asarray(TINT, dtype=np.float32)
    ref[mask] = ref[mask] * (1.0 - ALPHA) + color * ALPHA
    p = np.pad(mask, 1)
    edge = mask & ~(p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:])
    ref[edge] = color
    np.testing.assert_array_equal(overlay(img, mask), np.rint(ref).astype(np.uint8))
    np.testing.assert_array_equal(outline(mask), edge)

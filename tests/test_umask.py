"""Every file the kit writes gets the user's umask (0644 / folders 0755 under umask 022,
0600 / 0700 under 077), though each is written atomically through a temporary file:
an exported model and its sidecar, the Triton repository, the runtime CLI's masks and
overlays, a training run's files, and the atomic writers themselves."""
from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import atomic
from runtime.io import save_png
from train import atomic as train_atomic

try:
    from test_runtime_fixtures import make_model, random_rgb
except ImportError:  # tests/ used as a package
    from .test_runtime_fixtures import make_model, random_rgb

ROOT = Path(__file__).resolve().parents[1]
UMASKS = [0o022, 0o077]


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(folder: Path) -> dict[str, int]:
    """Permission bits of everything under ``folder`` (and itself, as ".")."""
    out = {".": stat.S_IMODE(folder.stat().st_mode)}
    for p in sorted(folder.rglob("*")):
        out[p.relative_to(folder).as_posix()] = stat.S_IMODE(p.stat().st_mode)
    return out


def _dirs(folder: Path) -> set[str]:
    return {"."} | {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_dir()}


def check_tree(folder: Path, mask: int, executables: tuple[str, ...] = (), ours: bool = True):
    """Everything under ``folder`` (and ``folder`` itself where ``ours``) has the umask's mode."""
    dirs = _dirs(folder)
    for name, mode in modes(folder).items():
        if name == "." and not ours:
            continue
        want = (0o777 if name in dirs or name in executables else 0o666) & ~mask
        assert mode == want, f"{folder}/{name}: {oct(mode)}, expected {oct(want)} under umask {oct(mask)}"


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_atomic_writers_follow_the_umask(tmp_path, mask):
    with umask(mask):
        atomic.atomic_write_bytes(tmp_path / "a.bin", b"x")
        save_png(tmp_path / "m.png", np.zeros((4, 4), bool))
        with atomic.atomic_files([tmp_path / "p.png", tmp_path / "q.png"]) as temps:
            for t in temps:
                t.write_bytes(b"y")
        with atomic.atomic_folder(tmp_path / "folder") as tmp:
            (tmp / "inside.txt").write_text("z")
        fd, name = atomic.mkstemp(dir=tmp_path, prefix="t")
        os.close(fd)
        assert atomic.umask() == mask
        train_atomic.write_json(tmp_path / "t.json", {"a": 1})
        with train_atomic.atomic_path(tmp_path / "run") as tmp:
            tmp.mkdir()
            (tmp / "f.txt").write_text("w")
    check_tree(tmp_path, mask, ours=False)
    assert {p.name for p in tmp_path.iterdir() if p.name.startswith(".")} == set()  # no temp left


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_runtime_cli_outputs_follow_the_umask(tmp_path, mask):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = make_model(model_dir)
    photos = tmp_path / "photos" / "sub"
    photos.mkdir(parents=True)
    Image.fromarray(random_rgb(30, 40)).save(photos / "x.png")
    out = tmp_path / "out"
    with umask(mask):
        r = subprocess.run([sys.executable, "-m", "runtime.predict", str(model), str(tmp_path / "photos"),
                            "--out", str(out)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert sorted(modes(out)) == [".", "sub", "sub/x_mask.png", "sub/x_overlay.png"]
    check_tree(out, mask)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from export.onnx import export_model

    folder = tmp_path_factory.mktemp("umask-export")
    with umask(0o022):
        result = export_model("m2sformer", folder / "m.onnx", small=True)
    return result.onnx_path


def test_exported_model_and_sidecar_are_readable_by_others(exported):
    check_tree(exported.parent, 0o022, ours=False)
    assert sorted(modes(exported.parent)) == [".", "m.onnx", "m.onnx.json"]


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_triton_repository_follows_the_umask(exported, tmp_path, mask):
    from export.triton import write_repository

    with umask(mask):
        write_repository(tmp_path / "repo", "m2s", exported, kind="cpu")
    check_tree(tmp_path / "repo" / "m2s", mask)
    assert {"1/model.onnx", "1/model.onnx.json", "config.pbtxt"} <= set(modes(tmp_path / "repo" / "m2s"))


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_training_run_files_follow_the_umask(tmp_path, mask):
    from train.__main__ import main as train_main
    from train.synth import generate

    generate(tmp_path / "data", 4, size=40, seed=0, progress=False)
    run = tmp_path / "run"
    import torch

    threads = torch.get_num_threads()
    try:
        with umask(mask):
            rc = train_main(["--model", "m2sformer", "--small", "--size", "32", "--batch-size", "2", "--workers", "0",
                             "--threads", "1", "--quiet", "--data", str(tmp_path / "data"),
                             "--val", str(tmp_path / "data"), "--epochs", "1", "--max-steps", "1",
                             "--out", str(run)])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    assert {"best.pt", "config.json", "train_log.csv"} <= set(modes(run))
    check_tree(run, mask)

"""The runtime on its own: ``pip install "./runtime[cpu]"`` (not editable) into a fresh venv
installs no torch, stays under 350 MB, passes ``pip check``, and from a folder outside the
checkout ``python -m runtime.predict MODEL a.png b.png --out DIR``, ``iml-predict`` and
``from runtime import Predictor`` run a real exported model (issue 10, "done when").

Needs pip to reach a package index (numpy, pillow, onnxruntime, setuptools for the build);
without one it skips with that reason."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MB = 350

pytestmark = pytest.mark.slow


def _pip_reaches_an_index() -> str | None:
    """None where pip can look onnxruntime up, else why not."""
    r = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "onnxruntime"],
                       capture_output=True, text=True, timeout=180)
    if r.returncode == 0:
        return None
    last = (r.stderr.strip().splitlines() or ["no output"])[-1]
    return f"pip cannot reach a package index ({last})"


def du_mb(folder: Path) -> float:
    """Disk use of ``folder`` in MB (allocated blocks, each hard link once, like ``du -s``)."""
    seen, blocks = set(), 0
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                blocks += st.st_blocks
    return blocks * 512 / 1e6


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory):
    why = _pip_reaches_an_index()
    if why:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("runtime-install")
    src = base / "src"  # the runtime folder as a fresh clone has it (no build/ or egg-info)
    shutil.copytree(ROOT / "runtime", src / "runtime",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    r = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{src / 'runtime'}[cpu]"],
                       capture_output=True, text=True, timeout=900, cwd=base)
    assert r.returncode == 0, r.stderr[-3000:]
    return env_dir, python


def test_runtime_install_is_small_and_torch_free(runtime_venv):
    env_dir, python = runtime_venv
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert {"imlkit-runtime", "numpy", "pillow", "onnxruntime"} <= names
    assert not {n for n in names if n == "torch" or n.startswith(("nvidia", "torch"))}, names
    assert "imlkit" not in names and "tqdm" not in names
    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    size = du_mb(env_dir)
    print(f"runtime-only venv: {size:.0f} MB, {len(names)} distributions")
    assert size <= LIMIT_MB, f"runtime-only venv is {size:.0f} MB > {LIMIT_MB} MB"
    site = next((env_dir / "lib").glob("python*/site-packages"))
    installed = sorted(p.name for p in (site / "runtime").iterdir())
    assert "pyproject.toml" not in installed and "backends" in installed and "sidecar.schema.json" in installed


def test_runtime_predicts_from_outside_the_checkout(runtime_venv, tmp_path):
    try:
        from small_exports import fresh_copy
    except ImportError:  # tests/ used as a package
        from .small_exports import fresh_copy

    env_dir, python = runtime_venv
    work = tmp_path / "app"
    work.mkdir()
    model = fresh_copy("m2sformer", work)
    rng = np.random.default_rng(0)
    for name, hw in (("a.png", (48, 64)), ("b.png", (70, 50))):
        Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(work / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    r = subprocess.run([str(python), "-m", "runtime.predict", model.name, "a.png", "b.png", "--out", "masks"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [line.split("  ")[0] for line in r.stdout.splitlines()] == ["a.png", "b.png"]
    assert sorted(p.name for p in (work / "masks").iterdir()) == [
        "a_mask.png", "a_overlay.png", "b_mask.png", "b_overlay.png"]
    script = subprocess.run([str(env_dir / "bin" / "iml-predict"), model.name, "a.png", "--out", "again",
                             "--no-overlay"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert script.returncode == 0, script.stderr
    code = ("import sys, runtime; from runtime import Predictor; p = Predictor(sys.argv[1]).predict('b.png'); "
            "assert p.prob.shape == (70, 50) and p.mask.shape == (70, 50) and 0 <= p.score <= 1; "
            "assert 'torch' not in sys.modules; print(runtime.__file__)")
    api = subprocess.run([str(python), "-c", code, model.name], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert api.returncode == 0, api.stderr
    assert Path(api.stdout.strip()).is_relative_to(env_dir)  # the installed copy, not the checkout's
    # runtime.tune alone: no synthetic forgeries without the kit (one line, exit 2), the user's images work
    bare = subprocess.run([str(env_dir / "bin" / "iml-tune"), model.name], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert bare.returncode == 2 and bare.stderr.count("\n") == 1 and "pass --images DIR" in bare.stderr, bare.stderr
    tuned = subprocess.run([str(python), "-m", "runtime.tune", model.name, "--images", ".", "--rounds", "1"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert tuned.returncode == 0 and "choice: onnxruntime fp32" in tuned.stdout, tuned.stderr
    assert (work / (model.name + ".tune.json")).is_file()

"""The README's commands run as written: every line of every ```bash block, in order, in one
fresh folder (so relative outputs such as runs/demo/best.pt and artifacts/ land there),
with this interpreter's bin folder first on PATH (what ``. .venv/bin/activate`` does). The
folder stands in for the repository root: it holds a copy of ``examples/``, and an
``export NAME=VALUE`` line of the README sets NAME for the commands after it, as in one
shell session.

Lines that cannot run here are skipped, each with its reason, by the explicit ``SKIP``
rules below; ``CHEAPER`` would swap a command for a cheaper form (it is empty: the
README's step-by-step runs at the small configuration as written). A command that fails
fails its test with the line number and the end of its output; the ones after it skip,
naming it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# (pattern, reason): a command matching ``pattern`` (re.search on the line as written) is not run.
SKIP: list[tuple[str, str]] = [
    (r"^make (demo|test|bench)\b", "CI runs make demo / make test itself (.ci/run); make bench is the benchmark run"),
    (r"^\. \.venv/bin/activate$", "the test puts this interpreter's bin folder first on PATH, which is what "
                                  "activating does"),
    (r"^(uv )?pip install\b|^python -m pip install\b", "installs into an environment: the packaging test covers "
                                                       "the installs"),
    (r"-m export\.tensorrt\b", "builds a TensorRT engine: needs an NVIDIA GPU with TensorRT"),
    (r"^(\S*/)?trtexec\b|build_and_profile\.sh", "runs trtexec on the device with TensorRT"),
    (r"^(docker|tritonserver|nvidia-smi)\b", "needs a GPU server (Docker / Triton / NVIDIA driver)"),
    (r"^torchrun\b", "multi-process / multi-GPU training"),
    (r"model_weight_EPOCH|m2s_authors\.pt", "needs the M2SFormer authors' trained checkpoint, which is not in this "
                                           "repository (tests/test_convert.py converts and exports a random checkpoint "
                                           "of their exact layout)"),
    (r"\.engine\b", "uses a TensorRT engine: needs an NVIDIA GPU with TensorRT"),
    (r"(CUDA|Tensorrt)ExecutionProvider|--provider (cuda|tensorrt)", "needs an NVIDIA GPU"),
]

# exact README command -> the command run instead (documented smaller sizes); keep it visible here
CHEAPER: dict[str, str] = {}


def readme_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every command line in the ```bash blocks of ``text``;
    backslash continuations joined, blank and comment-only lines dropped."""
    out: list[tuple[int, str]] = []
    in_block, pending, start = False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not in_block:
            in_block = stripped in ("```bash", "```sh", "```shell")
            continue
        if stripped.startswith("```"):
            in_block = False
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        command = (pending + stripped).strip()
        pending = ""
        if command and not command.startswith("#"):
            out.append((start, command))
    return out


def skip_reason(command: str) -> str | None:
    for pattern, reason in SKIP:
        if re.search(pattern, command):
            return reason
    return None


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))
_state: dict[str, object] = {"failed": None, "env": {}}


def _id(item: tuple[int, str]) -> str:
    number, command = item
    words = re.sub(r"[^A-Za-z0-9_.=/-]+", "_", " ".join(command.split()[:4]))
    return f"L{number}-{words}"[:60]


def test_readme_has_the_step_by_step():
    commands = [c for _, c in COMMANDS]
    assert any(c.startswith("python -m train --model") and "--out runs/demo" in c for c in commands)
    assert any(c.startswith("python -m export.onnx --checkpoint runs/demo/best.pt") for c in commands)
    assert all(command not in CHEAPER or CHEAPER[command] != command for command in commands)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "examples", folder / "examples")
    return folder


EXPORT = re.compile(r"^export ([A-Za-z_][A-Za-z0-9_]*)=(\S+)\s*(#.*)?$")


@pytest.mark.slow
@pytest.mark.parametrize("item", COMMANDS, ids=[_id(c) for c in COMMANDS])
def test_readme_command_runs_as_written(item, workdir):
    number, command = item
    reason = skip_reason(command)
    if reason:
        pytest.skip(f"README line {number}: {reason}")
    if _state["failed"]:
        pytest.skip(f"an earlier README command failed ({_state['failed']})")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "HF_HUB_OFFLINE": "1", **_state["env"]}  # nothing in the README may need a download
    exported = EXPORT.match(command)
    if exported:  # kept for the lines after it, as one shell session would (value expanded by bash)
        value = subprocess.run(["bash", "-c", f'printf %s "{exported.group(2)}"'], cwd=workdir, env=env,
                               capture_output=True, text=True, check=True).stdout
        _state["env"][exported.group(1)] = value
        return
    run = CHEAPER.get(command, command)
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", run], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        _state["failed"] = f"line {number}"
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        pytest.fail(f"README line {number} exits {proc.returncode}: {run}\n{tail}", pytrace=False)

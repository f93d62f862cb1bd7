"""Every command-line tool on bad input: one ``error:`` line on stderr, a non-zero exit, no
traceback and nothing written; Ctrl-C exits 130 with one line; a ViT size is derived
from --size or refused naming the patch; an export of random weights says so.

Each failure goes through the real CLI: ``main(argv)`` with capsys where the process state
does not matter, a subprocess where it does (environment, signals)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from bench.profile import main as profile_main
from export.onnx import main as export_main
from export.quantize import main as quantize_main
from runtime.sidecar import Sidecar, sidecar_path
from train.__main__ import main as train_main
from train.synth import generate, main as synth_main

try:
    from ctrl_c import python_as_from_a_terminal
    from small_exports import fresh_copy
except ImportError:  # tests/ used as a package
    from .ctrl_c import python_as_from_a_terminal
    from .small_exports import fresh_copy

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--model", "m2sformer", "--small", "--size", "32", "--batch-size", "2", "--workers", "0",
              "--threads", "1", "--epochs", "1", "--quiet"]


def call(main, argv: list[str]) -> int:
    """``main(argv)``'s exit status, argparse's SystemExit included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def one_error(stderr: str) -> str:
    """The single ``error:`` line of ``stderr`` (progress bars aside); fails otherwise."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, stderr
    assert all(ln.startswith("error:") or "%|" in ln for ln in lines), stderr  # nothing else but progress
    return errors[0]


def run(args: list[str], env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-data")
    generate(root / "d", 8, size=40, seed=0, progress=False)
    return root / "d"


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder this process cannot create files in: a chmod 0555 folder, or (as root, who
    ignores permission bits) /sys, which refuses new files to everyone."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            (candidate / ".probe").touch()
        except OSError:
            yield candidate
            break
        (candidate / ".probe").unlink()
    else:
        pytest.skip("no folder that refuses new files (root, and /sys writable)")
    folder.chmod(0o755)


# --------------------------------------------------------------------------- export.onnx
@pytest.mark.parametrize("flags, code, says", [
    (["--batch", "0"], 2, "--batch"),
    (["--size", "-64"], 1, "--size -64"),
    (["--size", "0"], 1, "--size 0"),  # used to export at 64 silently
    (["--set", "bogus=1"], 1, "no option 'bogus'"),
    (["--variant", "nope"], 1, "--variant nope"),
], ids=["batch-0", "size-negative", "size-0", "set-bogus", "variant-unknown"])
def test_export_refuses_a_bad_argument(tmp_path, capsys, flags, code, says):
    out = tmp_path / "m.onnx"
    assert call(export_main, ["--model", "m2sformer", "--small", "--out", str(out), *flags]) == code
    assert says in one_error(capsys.readouterr().err)
    assert files_in(tmp_path) == []


def test_export_refuses_a_folder_as_out(tmp_path, capsys):
    assert call(export_main, ["--model", "m2sformer", "--small", "--out", str(tmp_path)]) == 1
    assert "is a folder" in one_error(capsys.readouterr().err)
    assert files_in(tmp_path) == []


def test_export_refuses_an_out_without_onnx_suffix(tmp_path, capsys):
    out = tmp_path / "x"
    assert call(export_main, ["--model", "m2sformer", "--small", "--out", str(out)]) == 1
    assert "must end in .onnx" in one_error(capsys.readouterr().err)
    assert files_in(tmp_path) == []


def test_export_refuses_a_read_only_folder(readonly_dir, capsys):
    out = readonly_dir / "m.onnx"
    assert call(export_main, ["--model", "m2sformer", "--small", "--out", str(out)]) == 1
    assert "cannot write" in one_error(capsys.readouterr().err)
    assert not out.exists()


def test_export_of_random_weights_warns(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert call(export_main, ["--model", "m2sformer", "--small", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.strip()] == [ln for ln in err.splitlines() if "warning:" in ln]
    assert "untrained" in err and "random weights" in err and out.is_file()


def test_mgqformer_vit_size_follows_size(tmp_path, capsys):
    out = tmp_path / "g.onnx"
    assert call(export_main, ["--model", "mgqformer", "--small", "--size", "96", "--out", str(out)]) == 0
    side = Sidecar.load(sidecar_path(out))
    assert side.preprocess.size == (96, 96) or list(side.preprocess.size) == [96, 96]
    assert side.variant["img_size"] == 96 and side.parity.passed


def test_mgqformer_refuses_a_size_off_its_patch(tmp_path, capsys):
    assert call(export_main, ["--model", "mgqformer", "--small", "--size", "100", "--out",
                              str(tmp_path / "g.onnx")]) == 1
    assert "multiples of 16" in one_error(capsys.readouterr().err)
    assert files_in(tmp_path) == []


# ------------------------------------------------------------------------- bench.profile
def test_profile_refuses_a_negative_size(capsys):
    assert call(profile_main, ["--model", "m2sformer", "--small", "--size", "-1"]) == 1
    assert "--size -1" in one_error(capsys.readouterr().err)


def test_profile_builds_the_vit_for_the_size(capsys):
    assert call(profile_main, ["--model", "mgqformer", "--small", "--size", "96"]) == 0
    assert "MGQFormer at 96 x 96" in capsys.readouterr().out


# --------------------------------------------------------------------------------- train
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here, so --device cuda is valid")
def test_train_refuses_cuda_without_a_gpu(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert call(train_main, [*TINY_TRAIN, "--data", str(data), "--device", "cuda", "--out", str(run_dir)]) == 1
    assert "--device cuda: no CUDA device" in one_error(capsys.readouterr().err)
    assert not run_dir.exists()


def test_train_refuses_an_unknown_option_before_reading_data(tmp_path, capsys):
    assert call(train_main, [*TINY_TRAIN, "--data", str(tmp_path / "missing"), "--set", "bogus=1"]) == 1
    assert "no option 'bogus'" in one_error(capsys.readouterr().err)


def test_train_pretrained_offline_is_one_line(data, tmp_path):
    # an empty hub cache and HF_HUB_OFFLINE: what a machine without network and weights sees
    run_dir = tmp_path / "run"
    proc = run(["-m", "train", *TINY_TRAIN, "--data", str(data), "--set", "pretrained=true", "--out", str(run_dir)],
               env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1
    line = one_error(proc.stderr)
    assert "could not be downloaded" in line and "--set pretrained=PATH" in line and "HF_HOME" in line
    assert not run_dir.exists()


def test_train_builds_the_vit_for_the_size(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["--model", "mgqformer", "--small", "--size", "96", "--batch-size", "2", "--workers", "0", "--threads", "1",
            "--max-steps", "1", "--quiet", "--data", str(data), "--out", str(run_dir)]
    threads = torch.get_num_threads()
    try:
        assert call(train_main, args) == 0, capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)
    from train.checkpoint import model_from_checkpoint

    model, config = model_from_checkpoint(run_dir / "best.pt")
    assert config["size"] == 96 and tuple(model.rgb_encoder.patch_embed.img_size) == (96, 96)


def test_synth_refuses_an_out_inside_a_file(tmp_path, capsys):
    (tmp_path / "FILE").write_text("x")
    assert call(synth_main, ["--out", str(tmp_path / "FILE" / "x"), "--n", "2", "--size", "32", "--quiet"]) == 1
    assert "is a file, not a folder" in one_error(capsys.readouterr().err)
    assert files_in(tmp_path) == [tmp_path / "FILE"]


# ------------------------------------------------------------------------ export.quantize
@pytest.mark.parametrize("ops, says", [
    (["Foo"], "--ops Foo: not an op type"),
    (["Gemm"], "no node of these types"),  # the small M2SFormer graph has no Gemm
], ids=["unknown-op", "op-not-in-graph"])
def test_quantize_refuses_ops_it_cannot_quantize(tmp_path, capsys, ops, says):
    src = fresh_copy("m2sformer", tmp_path)
    before = files_in(tmp_path)
    assert call(quantize_main, [str(src), "--calib", "1", "--eval", "1", "--ops", *ops]) == 1
    assert says in one_error(capsys.readouterr().err)
    assert files_in(tmp_path) == before


def test_quantize_never_writes_an_int8_model_without_quantize_linear(tmp_path, capsys):
    src = fresh_copy("m2sformer", tmp_path)
    before = files_in(tmp_path)
    # Where is quantizable and in the graph, but its one node sits in an FP32 island
    assert call(quantize_main, [str(src), "--calib", "1", "--eval", "1", "--ops", "Where"]) == 1
    assert "no QuantizeLinear" in one_error(capsys.readouterr().err)
    assert files_in(tmp_path) == before


# ------------------------------------------------------------------------------- Ctrl-C
def _interrupt(args: list[str], cwd: Path, ready: str) -> tuple[int, str]:
    """Start ``python ARGS``, wait until ``ready`` shows on its stderr, send SIGINT and
    return (exit status, stderr)."""
    proc = subprocess.Popen(python_as_from_a_terminal(*args), cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read1(4096), b"")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while ready not in b"".join(chunks).decode(errors="replace") and proc.poll() is None:
        assert time.monotonic() < deadline, "never got ready"
        time.sleep(0.02)
    assert proc.poll() is None, f"finished before the interrupt: {b''.join(chunks).decode(errors='replace')}"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=30)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def test_ctrl_c_children_start_with_sigint_at_default_even_when_the_tests_ignore_it():
    """The Ctrl-C tests below stay valid when the test run itself was started with SIGINT
    ignored (a background job): their child's Python has its KeyboardInterrupt handler."""
    probe = ("import signal; h = signal.getsignal(signal.SIGINT); "
             "print('ignored' if h == signal.SIG_IGN else 'python' if h is signal.default_int_handler else h)")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        wrapped = subprocess.run(python_as_from_a_terminal("-c", probe), capture_output=True, text=True, check=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert plain.stdout.strip() == "ignored"  # what a child inherits otherwise
    assert wrapped.stdout.strip() == "python"


def test_ctrl_c_during_synth_leaves_no_folder(tmp_path):
    code, err = _interrupt(["-m", "train.synth", "--out", str(tmp_path / "d"), "--n", "5000", "--size", "64"],
                           ROOT, ready="img/s")
    assert code == 130 and one_error(err) == "error: interrupted"
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_training(data, tmp_path):
    run_dir = tmp_path / "run"
    args = ["-m", "train", "--model", "m2sformer", "--small", "--size", "32", "--batch-size", "2", "--workers", "0",
            "--threads", "1", "--epochs", "1000", "--data", str(data), "--out", str(run_dir)]
    code, err = _interrupt(args, ROOT, ready="epoch 1/1000")
    assert code == 130 and one_error(err) == "error: interrupted"
    assert not any(p.name.startswith(".") for p in run_dir.rglob("*"))  # no staged temporary file left


def test_ctrl_c_while_a_cli_imports(tmp_path):
    # -X importtime reports each finished import on stderr: interrupt once train.cli is in
    # (the hook is the next statement) while torch, onnx and timm are still loading
    out = tmp_path / "m.onnx"
    code, err = _interrupt(["-X", "importtime", "-m", "export.onnx", "--model", "m2sformer", "--small", "--out",
                            str(out)], ROOT, ready="train.cli\n")
    assert code == 130
    assert one_error("\n".join(ln for ln in err.splitlines() if not ln.startswith("import time:"))) == \
        "error: interrupted"
    assert "| torch\n" not in err.split("train.cli")[0]  # it was interrupted before torch was in
    assert files_in(tmp_path) == []


CLI_MODULES = ["export.check", "export.tensorrt", "export.trtexec", "export.triton", "bench.report", "bench.demo",
               "bench.prepare", "bench.peak", "bench.ops", "bench.trtexec_json", "bench.exporters", "train.convert"]


@pytest.mark.parametrize("module", CLI_MODULES)
def test_every_other_cli_handles_ctrl_c_like_the_tested_ones(module):
    """The same two mechanisms the Ctrl-C tests above exercise in real processes: ``main`` is
    wrapped by ``one_line_errors`` and ``interrupts_in_one_line(__name__)`` runs before any
    import of a third-party or kit module (a timed SIGINT is racy for tools that finish fast)."""
    import ast
    import importlib

    mod = importlib.import_module(module)
    assert getattr(mod.main, "__wrapped__", None) is not None, f"{module}.main is not wrapped by one_line_errors"
    tree = ast.parse(Path(mod.__file__).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Expr) and "interrupts_in_one_line(__name__)" in ast.unparse(node):
            break
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            assert all(n == "__future__" or n.endswith("cli") or n.split(".")[0] in sys.stdlib_module_names
                       for n in names), f"{module} imports {names} before interrupts_in_one_line"
    else:
        pytest.fail(f"{module} never calls interrupts_in_one_line(__name__)")


def test_ctrl_c_inside_a_tools_main_is_one_line(monkeypatch, capsys, tmp_path):
    import export.check as check

    def pressed(*args, **kwargs):  # the user's Ctrl-C arriving while the lint runs
        raise KeyboardInterrupt

    model = tmp_path / "m.onnx"
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), model)
    monkeypatch.setattr(check, "check_graph", pressed)
    assert check.main([str(model), "--target", "trt10.3"]) == 130
    assert capsys.readouterr().err.strip() == "error: interrupted"

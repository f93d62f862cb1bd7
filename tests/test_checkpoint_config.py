"""Checkpoints carry what built them (train/checkpoint.py): a training run records model,
small, variant, options and size; export.onnx, train.evaluate and bench.profile rebuild
that model from --checkpoint alone (the README's step that failed without --small), as
they do a converted checkpoint that records only those keys; flags that contradict the
checkpoint, a bare state dict without a name, and weights that do not fit are one line
naming both sides; the sidecar records what was loaded."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.profile import main as profile_main
from export.onnx import main as export_main
from runtime.sidecar import Sidecar, sidecar_path
from train.__main__ import main as train_main
from train.checkpoint import (CheckpointError, ModelBuild, load_checkpoint, model_from_checkpoint,
                              save_checkpoint)
from train.evaluate import main as evaluate_main
from train.models import build_model
from train.synth import generate

ROOT = Path(__file__).resolve().parents[1]


def one_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt-data")
    generate(root / "d", 8, size=40, seed=1, progress=False)
    return root / "d"


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """A training run of TransForensics' small configuration, output branch c3 and a
    shape-changing --set: nothing of that can be guessed from the model name."""
    out = tmp_path_factory.mktemp("ckpt-run") / "run"
    threads = torch.get_num_threads()
    try:
        rc = train_main(["--model", "transforensics", "--small", "--variant", "c3", "--set", "ffn=48", "--size", "32",
                         "--data", str(data), "--batch-size", "2", "--max-steps", "1", "--workers", "0",
                         "--threads", "1", "--quiet", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A checkpoint in the converted format: only model/small/variant/options (no size)."""
    path = tmp_path_factory.mktemp("ckpt-conv") / "converted.pt"
    torch.manual_seed(0)
    model = build_model("transforensics", small=True, output_branch="c4")
    save_checkpoint(path, {"model": model.state_dict(),
                           "config": {"model": "transforensics", "small": True, "variant": "c4", "options": {}}})
    return path


def test_a_run_records_what_built_it(run):
    config = load_checkpoint(run / "best.pt")["config"]
    assert {k: config[k] for k in ("model", "small", "variant", "options", "size")} == {
        "model": "transforensics", "small": True, "variant": "c3", "options": {"ffn": 48}, "size": 32}
    assert json.loads((run / "config.json").read_text())["variant"] == "c3"
    model, resolved = model_from_checkpoint(run / "best.pt")
    assert model.output_branch == "c3" and resolved["size"] == 32
    assert ModelBuild.from_config(resolved) == ModelBuild("transforensics", True, "c3", {"ffn": 48})


def test_export_rebuilds_the_run_from_the_checkpoint_alone(run, tmp_path, capsys):
    out = tmp_path / "t.onnx"
    assert export_main(["--checkpoint", str(run / "best.pt"), "--out", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err  # trained weights: no untrained-model warning
    side = Sidecar.load(sidecar_path(out))
    assert side.model == "transforensics"
    assert side.variant["variant"] == "c3" and side.variant["small"] is True and side.variant["ffn"] == 48
    assert side.variant["output_branch"] == "c3" and list(side.preprocess.size) == [32, 32]
    assert side.checkpoint.path == str(run / "best.pt") and len(side.checkpoint.sha256) == 64


def test_export_default_out_is_named_after_the_checkpoints_model(run, tmp_path, capsys):
    proc = subprocess.run([sys.executable, "-m", "export.onnx", "--checkpoint", str(run / "best.pt")], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "artifacts" / "transforensics.onnx").is_file()  # what export.trtexec reads by default


def test_evaluate_and_profile_rebuild_it_too(run, data, tmp_path, capsys):
    out = tmp_path / "eval"
    assert evaluate_main(["--checkpoint", str(run / "best.pt"), "--data", str(data), "--out", str(out),
                          "--workers", "0", "--overlays", "0", "--quiet"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["size"] == 32 and report["build"]["variant"] == "c3"
    assert profile_main(["--checkpoint", str(run / "best.pt")]) == 0
    assert "TransForensics at 32 x 32" in capsys.readouterr().out


def test_a_converted_checkpoint_is_rebuilt_with_its_variant(converted, tmp_path):
    model, config = model_from_checkpoint(converted)
    assert model.output_branch == "c4" and config["variant"] == "c4" and config["size"] == 64
    out = tmp_path / "c.onnx"
    assert export_main(["--checkpoint", str(converted), "--out", str(out)]) == 0
    side = Sidecar.load(sidecar_path(out))
    assert side.variant["variant"] == "c4" and side.variant["output_branch"] == "c4"


@pytest.mark.parametrize("flags, says", [
    (["--model", "qmanet"], "trained as transforensics small=True variant=c3 --set ffn=48, not --model qmanet"),
    (["--variant", "c2"], "not --variant c2"),
    (["--set", "ffn=64"], "not --set ffn=64"),
], ids=["model", "variant", "option"])
def test_export_refuses_flags_that_contradict_the_checkpoint(run, tmp_path, capsys, flags, says):
    out = tmp_path / "x.onnx"
    assert export_main(["--checkpoint", str(run / "best.pt"), "--out", str(out), *flags]) == 1
    line = one_error(capsys.readouterr().err)
    assert line.startswith(f"error: {run / 'best.pt'}: trained as ") and says in line
    assert list(tmp_path.iterdir()) == []


def test_small_flag_contradicting_a_full_size_checkpoint(tmp_path, capsys):
    path = tmp_path / "full.pt"
    torch.manual_seed(0)
    save_checkpoint(path, {"model": build_model("transforensics", output_branch="c5", layers=1).state_dict(),
                           "config": {"model": "transforensics", "small": False, "variant": "c5",
                                      "options": {"layers": 1}}})
    with pytest.raises(CheckpointError, match=r"trained as transforensics small=False variant=c5 --set layers=1, "
                                              r"not --small$"):
        model_from_checkpoint(path, small=True)


def test_bare_state_dict_needs_the_model_and_names_the_first_misfit(tmp_path, capsys):
    bare = tmp_path / "bare.pt"
    torch.manual_seed(0)
    torch.save(build_model("m2sformer", small=True).state_dict(), bare)
    out = tmp_path / "o" / "m.onnx"
    assert export_main(["--checkpoint", str(bare), "--out", str(out)]) == 1
    assert "holds no config (a bare state dict); pass --model" in one_error(capsys.readouterr().err)
    # without --small the full model is built: the first tensor is named with both shapes
    assert export_main(["--checkpoint", str(bare), "--model", "m2sformer", "--out", str(out)]) == 1
    line = one_error(capsys.readouterr().err)
    assert (f"error: {bare}: does not fit m2sformer small=False at 256 px: encoder.patch_embed.proj.weight is "
            "[32, 3, 7, 7] in the checkpoint, [64, 3, 7, 7] in the model") in line
    assert not out.parent.exists()  # the folder export.onnx would have made is gone again
    assert export_main(["--checkpoint", str(bare), "--model", "m2sformer", "--small", "--out", str(out)]) == 0


def test_missing_and_extra_tensors_are_named(tmp_path):
    torch.manual_seed(0)
    state = build_model("m2sformer", small=True).state_dict()
    key = next(iter(state))
    config = {"model": "m2sformer", "small": True, "variant": None, "options": {}}
    save_checkpoint(tmp_path / "missing.pt", {"model": {k: v for k, v in state.items() if k != key}, "config": config})
    with pytest.raises(CheckpointError, match=rf"the model's {key} is not in the checkpoint \(1 missing\)"):
        model_from_checkpoint(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "extra.pt", {"model": {**state, "stray.weight": torch.zeros(1)}, "config": config})
    with pytest.raises(CheckpointError, match=r"the checkpoint's stray.weight is not in the model \(1 extra\)"):
        model_from_checkpoint(tmp_path / "extra.pt")


def test_a_vit_checkpoint_keeps_its_trained_size(tmp_path):
    path = tmp_path / "mgq.pt"
    torch.manual_seed(0)
    save_checkpoint(path, {"model": build_model("mgqformer", small=True, img_size=64).state_dict(),
                           "config": {"model": "mgqformer", "small": True, "variant": None, "options": {}, "size": 64}})
    assert model_from_checkpoint(path).size == 64
    with pytest.raises(CheckpointError, match=r"rgb_encoder.pos_embed is \[1, 17, 192\] in the checkpoint, "
                                              r"\[1, 37, 192\] in the model .*use --size 64"):
        model_from_checkpoint(path, size=96)


def test_a_pretrained_run_is_rebuilt_without_downloading(tmp_path):
    # the run was trained from pretrained backbones; its checkpoint holds every weight, so
    # rebuilding it must work offline with an empty hub cache
    path = tmp_path / "pre.pt"
    torch.manual_seed(0)
    save_checkpoint(path, {"model": build_model("m2sformer", small=True).state_dict(),
                           "config": {"model": "m2sformer", "small": True, "variant": None,
                                      "options": {"pretrained": True}, "size": 32}})
    proc = subprocess.run([sys.executable, "-m", "bench.profile", "--checkpoint", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                               "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stderr
    assert "M2SFormer at 32 x 32" in proc.stdout

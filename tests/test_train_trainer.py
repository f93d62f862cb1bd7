"""The training loop: a run folder end to end, exact resume after a SIGKILL mid-epoch,
DDP with two gloo processes on CPU, and clear errors for broken data."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from train.__main__ import main as train_main
from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.config import TrainConfig
from train.models import build_model
from train.synth import generate
from train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
# m2sformer small at 32 px, batch 2: the cheapest configuration that runs the real trainer
TINY = ["--model", "m2sformer", "--small", "--size", "32", "--batch-size", "2", "--lr", "1e-3", "--workers", "0",
        "--log-every", "1", "--threads", "1", "--quiet"]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()  # --threads changes the process-wide setting
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer-data")
    generate(root / "train", 16, size=40, seed=0, progress=False)
    generate(root / "val", 4, size=40, seed=0, start=100, weights=(1, 0, 1, 0), progress=False)
    return root


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _weights(path):
    return load_checkpoint(path)["model"]


def test_training_run_writes_the_run_folder(tmp_path, data, capsys):
    run = tmp_path / "run"
    rc = train_main([*TINY, "--data", str(data / "train"), "--val", str(data / "val"), "--epochs", "2",
                     "--max-steps", "5", "--ckpt-every", "2", "--out", str(run)])
    assert rc == 0, capsys.readouterr().err
    assert "done: 5 steps" in capsys.readouterr().out
    assert [int(r["step"]) for r in _rows(run / "train_log.csv")] == [1, 2, 3, 4, 5]
    val = _rows(run / "val_log.csv")
    assert [int(r["step"]) for r in val] == [5] and 0.0 <= float(val[0]["val_f1"]) <= 1.0
    history = json.loads((run / "history.json").read_text())
    assert len(history["train"]) == 5 and history["val"][0]["val_forged_images"] == 4
    assert Image.open(run / "curves.png").format == "PNG"
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "m2sformer" and config["size"] == 32 and config["small"] is True
    model, saved = model_from_checkpoint(run / "best.pt")
    assert saved["size"] == 32
    torch.manual_seed(0)
    fresh = build_model("m2sformer", small=True).state_dict()
    trained = model.state_dict()
    assert any(not torch.equal(fresh[k], trained[k]) for k in fresh if fresh[k].is_floating_point())
    lrs = [float(r["lr"]) for r in _rows(run / "train_log.csv")]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-3  # cosine decay


def test_resume_after_a_kill_mid_epoch_matches_an_uninterrupted_run(tmp_path, data):
    common = [*TINY, "--data", str(data / "train"), "--val", str(data / "val"), "--epochs", "2", "--ckpt-every", "3"]
    assert train_main([*common, "--out", str(tmp_path / "ref")]) == 0
    ref_rows = _rows(tmp_path / "ref" / "train_log.csv")
    total = len(ref_rows)
    assert total == 16  # 2 epochs x 8 batches

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "train", *common, "--out", str(run)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run / "train_log.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "last.pt").exists() and log.exists() and len(log.read_text().splitlines()) >= 5:  # header + 4
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(run / "last.pt")["state"]
    assert 0 < state["step"] < total and state["batch_in_epoch"] > 0, state  # killed mid-epoch

    assert train_main(["--resume", str(run), "--quiet"]) == 0
    rows = _rows(log)
    assert [int(r["step"]) for r in rows] == list(range(1, total + 1))  # the log continues, no repeats
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]  # the same batches, the same losses
    ref_val, val = _rows(tmp_path / "ref" / "val_log.csv"), _rows(run / "val_log.csv")
    assert [(r["step"], r["val_f1"]) for r in val] == [(r["step"], r["val_f1"]) for r in ref_val]
    ref, resumed = _weights(tmp_path / "ref" / "last.pt"), _weights(run / "last.pt")
    assert ref.keys() == resumed.keys()
    assert all(torch.equal(ref[k], resumed[k]) for k in ref)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, config: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    trainer = Trainer(TrainConfig.from_dict(config), progress=False)
    trainer.sampler.set_position(0)
    shard = [i for i, _ in trainer.sampler]
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    torch.save({"shard": shard, "initial": initial, "final": trainer.model.state_dict(),
                "ddp": type(trainer.net).__name__}, Path(out) / f"rank{rank}.pt")
    trainer.close()


def test_ddp_two_gloo_processes_hold_identical_weights_after_a_step(tmp_path, data):
    config = TrainConfig(model="m2sformer", data=str(data / "train"), val=str(data / "val"), out=str(tmp_path / "run"),
                         small=True, size=32, epochs=1, batch_size=2, lr=1e-3, workers=0, max_steps=1,
                         ckpt_every=0, log_every=1, device="cpu", threads=1).to_dict()
    mp.spawn(_ddp_worker, args=(2, _free_port(), config, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["ddp"] == r1["ddp"] == "DistributedDataParallel"
    assert not set(r0["shard"]) & set(r1["shard"])  # each rank trained on its own samples
    assert all(torch.equal(r0["initial"][k], r1["initial"][k]) for k in r0["initial"])
    changed = [k for k in r0["final"] if not torch.equal(r0["final"][k], r0["initial"][k])]
    assert changed  # a step was taken
    assert all(torch.equal(r0["final"][k], r1["final"][k]) for k in r0["final"] if "running" not in k
               and "num_batches" not in k)  # gradients were averaged; BN statistics stay per rank
    assert [int(r["step"]) for r in _rows(tmp_path / "run" / "train_log.csv")] == [1]


@pytest.mark.parametrize("problem", ["corrupt", "mask_size", "empty"])
def test_broken_data_stops_with_a_one_line_message(tmp_path, data, capsys, problem):
    root = tmp_path / "bad"
    (root / "Tp").mkdir(parents=True)
    (root / "Gt").mkdir()
    expected = str(root / "Tp")
    if problem != "empty":
        for sub in ("Tp", "Gt"):
            for p in sorted((data / "train" / sub).iterdir())[:4]:
                (root / sub / p.name).write_bytes(p.read_bytes())
        if problem == "corrupt":
            target = sorted((root / "Tp").iterdir())[2]
            target.write_bytes(b"\x89PNG garbage")
            expected = f"{target}: not a readable image"
        else:
            target = sorted((root / "Gt").iterdir())[1]
            Image.new("L", (5, 5)).save(target)
            expected = f"{target}: mask is 5x5 but its image"
    rc = train_main([*TINY, "--data", str(root), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_an_image_truncated_after_its_header_is_named_from_a_loader_worker(tmp_path, data, capsys):
    root = tmp_path / "bad"
    for sub in ("Tp", "Gt"):
        (root / sub).mkdir(parents=True)
        for p in sorted((data / "train" / sub).iterdir())[:6]:
            (root / sub / p.name).write_bytes(p.read_bytes())
    target = sorted((root / "Tp").iterdir())[0]
    target.write_bytes(target.read_bytes()[:200])  # header intact, pixel data cut
    args = [a if a != "0" or i == 0 or TINY[i - 1] != "--workers" else "1" for i, a in enumerate(TINY)]
    rc = train_main([*args, "--data", str(root), "--val", str(data / "val"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and f"{target}: not a readable image" in err, err


def test_init_starts_from_given_weights_with_a_fresh_optimizer(tmp_path, data, capsys):
    torch.manual_seed(7)
    start = build_model("m2sformer", small=True).state_dict()
    ckpt = tmp_path / "stage1.pt"
    torch.save(start, ckpt)
    run = tmp_path / "run"
    rc = train_main([*TINY, "--data", str(data / "train"), "--val", str(data / "val"), "--epochs", "1",
                     "--max-steps", "1", "--lr", "1e-12", "--min-lr", "1e-13", "--init", str(ckpt), "--out", str(run)])
    assert rc == 0, capsys.readouterr().err
    trained = _weights(run / "last.pt")
    # with a negligible learning rate the run ends where --init started it, not at its own seed's init
    assert all(torch.allclose(trained[k].float(), start[k].float(), atol=1e-6)
               for k in start if start[k].is_floating_point() and "running" not in k)
    assert json.loads((run / "config.json").read_text())["init"] == str(ckpt)
    bad = tmp_path / "other.pt"
    torch.save({"nope": torch.zeros(1)}, bad)
    rc = train_main([*TINY, "--data", str(data / "train"), "--init", str(bad), "--out", str(tmp_path / "r2")])
    assert rc != 0 and str(bad) in capsys.readouterr().err


def test_trainer_tells_diffforensics_its_label_counts(tmp_path, data):
    """The trainer counts the forged / real training images (from the masks) and the
    DiffForensics objective sets its detection weights from them by the paper's rule."""
    from train.data.folders import read_samples

    cfg = TrainConfig(model="diffforensics", data=str(data / "train"), val=str(data / "val"), small=True, size=32,
                      batch_size=2, workers=0, out=str(tmp_path / "run"))
    trainer = Trainer(cfg, progress=False)
    samples = read_samples(data / "train")
    forged = sum(s.mask is not None and np.asarray(Image.open(s.mask).convert("L")).max() > 127 for s in samples)
    assert 0 < forged < len(samples)  # the generated set holds both kinds
    n = len(samples)
    assert trainer.objective.clf_pos == int(10 * forged / n) / 10
    assert trainer.objective.clf_neg == int(10 * (n - forged) / n) / 10

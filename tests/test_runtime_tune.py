"""``runtime.tune`` on a small model: every candidate timed in its own process and checked
against onnxruntime FP32 on the project's synthetic forgeries, the choice written beside the
model, reused by ``backend="auto"``, and ignored (saying why) for another file or another
machine's fingerprint; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import stat

import pytest

from runtime import Predictor
from runtime.tune import default_candidates, load_tuned, main, tune, tune_path

try:
    from small_exports import fresh_copy
except ImportError:  # tests/ used as a package
    from .small_exports import fresh_copy


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    model = fresh_copy("m2sformer", tmp_path_factory.mktemp("tune"))
    record = tune(model, rounds=2, warmup=1, n_images=3, progress=False)
    return model, record


def test_every_candidate_is_measured_and_checked_and_the_choice_is_the_fastest_in_budget(tuned):
    model, record = tuned
    rows = record["candidates"]
    plain = default_candidates()
    assert [(r["backend"], r["precision"]) for r in rows[: len(plain)]] == plain
    # after them, two split searches (FP32 tail, FP32 head) for each reduced precision over the budget
    missed = [(r["backend"], r["precision"]) for r in rows[: len(plain)] if not r["ok"] and r["precision"] != "fp32"]
    assert [(r["backend"], r["precision"]) for r in rows[len(plain):]] == [m for m in missed for _ in range(2)]
    assert [r["search"]["shape"] for r in rows[len(plain):]] == ["fp32-tail", "fp32-head"] * len(missed)
    assert all("search" in r for r in rows[len(plain):])
    rows = [r for r in rows if "fp32_ranges" in r or "search" not in r]  # those that ran
    assert rows[0]["flipped"] == 0.0 and rows[0]["max_abs_prob"] == 0.0  # the reference against itself
    for row in rows:
        assert "error" not in row, row
        assert len(row["times_s"]) == 2 and row["p50_s"] > 0 and row["settings"]["backend"] == row["backend"]
        assert row["ok"] == (row["flipped"] <= record["budget"]["max_flip"])
    fastest = min((r for r in rows if r["ok"]), key=lambda r: r["p50_s"])
    assert record["choice"] == {"backend": fastest["backend"], "precision": fastest["precision"],
                                **({"fp32_ranges": fastest["fp32_ranges"]} if "fp32_ranges" in fastest else {})}
    assert record["calibration"]["images"] == 3 and "train.synth" in record["calibration"]["source"]
    on_disk = json.loads(tune_path(model).read_text())
    assert on_disk["choice"] == record["choice"] and on_disk["machine"] == record["machine"]
    mode = stat.S_IMODE(os.stat(tune_path(model)).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_auto_reuses_the_choice_on_this_machine(tuned):
    model, record = tuned
    pred = Predictor(model)
    assert pred.choice.source == "tune"
    assert (pred.backend.name, pred.backend.precision) == (record["choice"]["backend"], record["choice"]["precision"])
    explicit = Predictor(model, backend="onnxruntime")
    assert explicit.choice.source == "explicit" and explicit.backend.name == "onnxruntime"


def test_a_tuning_from_another_machine_or_for_another_file_is_ignored(tuned, tmp_path):
    model, record = tuned
    copy = tmp_path / model.name
    copy.write_bytes(model.read_bytes())
    (tmp_path / (model.name + ".json")).write_bytes(model.with_name(model.name + ".json").read_bytes())
    other = {**record, "machine": {**record["machine"], "cpu": "Some Other CPU"},
             "choice": {"backend": "openvino", "precision": "fp32"}}
    tune_path(copy).write_text(json.dumps(other))
    data, why = load_tuned(copy)
    assert data is None and "another machine (cpu 'Some Other CPU' there" in why
    same_name = {**record, "machine": {**record["machine"], "cpu_model": "AuthenticAMD cpu family 25 model 17"}}
    tune_path(copy).write_text(json.dumps(same_name))  # same name and flags, another generation
    data, why = load_tuned(copy)
    assert data is None and "another machine (cpu_model 'AuthenticAMD cpu family 25 model 17' there" in why
    pred = Predictor(copy)
    assert pred.choice.source == "default" and pred.backend.name == "onnxruntime"
    tune_path(copy).write_text(json.dumps({**record, "model_sha256": "0" * 64}))
    data, why = load_tuned(copy)
    assert data is None and "another file" in why
    tune_path(copy).write_text("{not json")
    assert load_tuned(copy)[0] is None and Predictor(copy).backend.name == "onnxruntime"


def test_a_zero_budget_keeps_only_candidates_that_flip_nothing(tuned):
    model, _ = tuned
    record = tune(model, rounds=1, warmup=0, n_images=2, max_flip=0.0, progress=False, write=False)
    ran = [r for r in record["candidates"] if "error" not in r]  # a split search may find nothing
    assert all(r["ok"] == (r["flipped"] == 0.0) for r in ran)
    assert all(r["ok"] is False and "within the budget" in r["error"] for r in record["candidates"] if r not in ran)
    chosen = min((r for r in record["candidates"] if r["ok"]), key=lambda r: r["p50_s"])
    assert record["choice"]["backend"] == chosen["backend"]
    assert chosen["flipped"] == 0.0
    assert json.loads(tune_path(model).read_text())["budget"]["max_flip"] == 1e-3  # write=False: file unchanged


@pytest.mark.parametrize("args, message", [
    (["missing.onnx"], "missing.onnx: file not found"),
    (["{model}", "--images", "{empty}"], "no image files in it or below"),
    (["{model}", "--max-flip", "2"], "--max-flip: must be in [0, 1)"),
    (["{model}", "--candidates", "openvino:fp64"], "--candidates: 'openvino:fp64' is not BACKEND:PRECISION"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tuned, tmp_path, capsys, args, message):
    model, _ = tuned
    copy = tmp_path / model.name
    copy.write_bytes(model.read_bytes())
    (tmp_path / (model.name + ".json")).write_bytes(model.with_name(model.name + ".json").read_bytes())
    (tmp_path / "empty").mkdir()
    argv = [a.format(model=copy, empty=tmp_path / "empty") for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not tune_path(copy).exists()

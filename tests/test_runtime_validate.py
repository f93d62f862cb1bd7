"""``python -m runtime.validate``: sidecars checked as the Predictor checks them, one line per
file, exit 2 when any fails, nothing written; ``--schema`` prints the JSON Schema."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

from runtime.sidecar import SCHEMA_FILE, TENSORRT_EXTRA_KEY, Sidecar, sidecar_path
from runtime.validate import main

try:
    from test_runtime_fixtures import make_model
except ImportError:  # tests/ used as a package
    from .test_runtime_fixtures import make_model


def test_good_model_and_its_sidecar_both_pass(tmp_path, capsys):
    model = make_model(tmp_path)
    assert main([str(model), str(sidecar_path(model))]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"ok  {p}  model=tiny format=onnx input=batchx3x32x32"
                                    for p in (model, sidecar_path(model))]
    assert out.err == ""


def test_every_bad_file_is_one_line_and_the_good_ones_still_pass(tmp_path, capsys):
    for name in ("good", "stale", "broken"):
        (tmp_path / name).mkdir()
    good = make_model(tmp_path / "good")
    stale = make_model(tmp_path / "stale")
    stale.write_bytes(stale.read_bytes() + b"\0")  # the artifact changed after the export
    broken = make_model(tmp_path / "broken")
    d = json.loads(sidecar_path(broken).read_text())
    d["preprocess"]["std"][2] = -1
    sidecar_path(broken).write_text(json.dumps(d))
    before = sorted(p for p in tmp_path.rglob("*"))
    assert main([str(stale), str(good), str(broken), str(tmp_path / "none.onnx")]) == 2
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"ok  {good}  model=tiny format=onnx input=batchx3x32x32"]
    errors = out.err.splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert f"model {stale}: stale sidecar" in errors[0]
    assert errors[1] == f"error: sidecar {sidecar_path(broken)}: preprocess.std[2] must be > 0, got -1"
    assert errors[2] == f"error: model {tmp_path / 'none.onnx'}: file not found"
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written


def test_an_engine_sidecar_with_bad_build_info_fails(tmp_path, capsys):
    model = make_model(tmp_path)
    side = Sidecar.load(sidecar_path(model))
    replace(side, extra={TENSORRT_EXTRA_KEY: {"version": "10.3"}}).save(sidecar_path(model))
    assert main([str(model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: sidecar {sidecar_path(model)}: missing keys extra.tensorrt.gpu, ")
    assert err.count("\n") == 1


def test_schema_is_printed_as_the_file_holds_it(capsys):
    assert main(["--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(SCHEMA_FILE.read_text())


def test_no_argument_is_a_usage_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "runtime.validate"], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert r.returncode == 2 and "give at least one model or sidecar" in r.stderr

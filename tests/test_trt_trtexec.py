"""trtexec recipes (``engines/recipes.toml``, ``export.trtexec``): each target's commands use
only flags its TensorRT version has, carry the profile / precision / islands / profiling
exports, and the device folder's script runs them in order."""
import json
import os
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from export.recipes import RecipeError, load_recipes
from export.trt_plan import BuildPlan, PlanError
from export.trtexec import main as trtexec_main
from export.trtexec import make_job, plan_job
from export.trt_support import TARGETS
from runtime.sidecar import ArtifactInfo, Sidecar, sidecar_path

try:
    from test_runtime_fixtures import make_model
except ImportError:  # tests/ used as a package
    from .test_runtime_fixtures import make_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def book():
    return load_recipes()


@pytest.fixture
def tiny(tmp_path):
    return make_model(tmp_path)  # dynamic batch, 32x32, with sidecar


def _mixed(tmp_path):
    """The tiny model with an FP16 stretch (Cast to FP16 and back): a mixed-precision graph."""
    path = make_model(tmp_path, name="mixed.onnx")
    model = onnx.load(str(path))
    conv = model.graph.node[0]
    conv.input[0] = "image32"
    model.graph.node.insert(0, helper.make_node("Cast", ["image16"], ["image32"], name="to_fp32", to=TensorProto.FLOAT))
    model.graph.node.insert(0, helper.make_node("Cast", ["image"], ["image16"], name="to_fp16", to=TensorProto.FLOAT16))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    side = Sidecar.load(sidecar_path(path))
    replace(side, artifact=ArtifactInfo.from_file(path)).save(sidecar_path(path))
    return path


def _flags(argv):
    return [a.split("=", 1)[0] for a in argv[1:]]


def test_recipes_cover_the_targets(book):
    assert {"jetson-orin-trt10.3", "server-trt10", "server-trt11"} <= set(book.recipes)
    for r in book.recipes.values():
        assert r.lint in TARGETS and r.major in book.flags
    assert book.get("jetson-orin-trt10.3").tensorrt == "10.3"
    assert book.removed[11] >= {"--fp16", "--int8", "--best", "--precisionConstraints", "--layerPrecisions"}
    assert not book.removed[11] & book.flags[11]
    with pytest.raises(RecipeError, match="no recipe"):
        book.get("jetson-nano-trt8")


@pytest.mark.parametrize("recipe", ["jetson-orin-trt10.3", "server-trt10", "server-trt11"])
def test_commands_use_only_flags_of_the_targets_version(book, tmp_path, recipe):
    r = book.get(recipe)
    onnx_path = _mixed(tmp_path) if r.major >= 11 else make_model(tmp_path)
    job = plan_job("tiny", onnx_path, r, book)
    known = book.flags[r.major]
    for argv in (job.build, job.bench):
        assert argv[0] == r.trtexec
        assert set(_flags(argv)) <= known, set(_flags(argv)) - known
        assert not set(_flags(argv)) & book.removed.get(r.major, frozenset())
    b = _flags(job.build)
    assert {"--onnx", "--saveEngine", "--timingCacheFile", "--memPoolSize", "--skipInference"} <= set(b)
    assert {"--minShapes", "--optShapes", "--maxShapes"} <= set(b)  # the tiny model has a dynamic batch
    assert f"--maxShapes=image:{r.max_batch}x3x32x32" in job.build
    assert {"--dumpProfile", "--separateProfileRun", "--exportTimes", "--exportProfile"} <= set(_flags(job.bench))
    if r.major >= 11:
        assert "--fp16" not in b and "--stronglyTyped" not in b and job.plan.strongly_typed
    else:
        assert "--fp16" in b and not job.plan.strongly_typed


def test_trt10_islands_become_layer_precisions(book, tiny):
    r = book.get("server-trt10")
    job = plan_job("tiny", tiny, r, book, precision="fp16")
    assert "--precisionConstraints=obey" not in job.build  # no islands, no constraints
    model = onnx.load(str(tiny))
    for k, node in enumerate(model.graph.node):
        node.name = f"/head/op_{k}"
    onnx.save(model, str(tiny))
    job = plan_job("tiny", tiny, r, book, fp32_nodes=("/head/op_1",), precision="fp16")
    assert "--precisionConstraints=obey" in job.build
    assert "--layerPrecisions=/head/op_1:fp32" in job.build and "--layerOutputTypes=/head/op_1:fp32" in job.build
    strong = make_job(r, BuildPlan(r.tensorrt, "fp16", True, (), ()), job.profile, "tiny.onnx", "t", book)
    assert "--stronglyTyped" in strong.build and "--fp16" not in strong.build
    with pytest.raises(PlanError, match="not in the graph"):
        plan_job("tiny", tiny, r, book, fp32_nodes=("/nowhere",), precision="fp16")


def test_trt11_refuses_an_fp32_graph_for_fp16(book, tiny):
    with pytest.raises(PlanError, match="mixed-precision ONNX"):
        plan_job("tiny", tiny, book.get("server-trt11"), book)
    job = plan_job("tiny", tiny, book.get("server-trt11"), book, precision="fp32")
    assert job.plan.strongly_typed and "--fp16" not in job.build


def test_a_flag_the_version_lacks_is_refused(book, tiny):
    r = replace(book.get("server-trt11"), bench=("--best",))
    job = plan_job("tiny", tiny, book.get("server-trt11"), book, precision="fp32")
    with pytest.raises(RecipeError, match="--best"):
        make_job(r, job.plan, job.profile, "tiny.onnx", "tiny", book)


def test_cli_writes_the_device_folder(tmp_path, tiny, capsys):
    out = tmp_path / "bundle"
    assert trtexec_main(["--model", "tiny", "--onnx", str(tiny), "--target", "jetson-orin-trt10.3",
                         "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"build_and_profile.sh", "commands.txt", "plan.json",
                                               "tiny.onnx", "tiny.onnx.json"}
    plan = json.loads((out / "plan.json").read_text())
    lines = (out / "commands.txt").read_text().splitlines()
    assert lines == [shlex.join(plan["build"]), shlex.join(plan["bench"])] and lines[0] in printed
    assert plan["plan"]["builder_flags"] == ["FP16"] and plan["profile"]["max"] == [1, 3, 32, 32]
    assert os.access(out / "build_and_profile.sh", os.X_OK)
    assert subprocess.run(["bash", "-n", str(out / "build_and_profile.sh")]).returncode == 0
    # a second run replaces the folder
    assert trtexec_main(["--model", "tiny", "--onnx", str(tiny), "--target", "server-trt10", "--out", str(out)]) == 0
    assert json.loads((out / "plan.json").read_text())["recipe"] == "server-trt10"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _fake_trtexec(path: Path, version: int) -> Path:
    """A stand-in for the device's trtexec: reports ``version``, logs its arguments, and
    creates the files the real one writes."""
    path.write_text(f"""#!/usr/bin/env bash
if [ "$1" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{version}] [b1] # trtexec --help"; exit 0; fi
printf '%s\\n' "$*" >> calls.log
for a in "$@"; do case "$a" in --saveEngine=*|--exportTimes=*|--exportProfile=*) touch "${{a#*=}}";; esac; done
""")
    path.chmod(0o755)
    return path


def test_script_runs_build_then_profile_and_guards_the_version(tmp_path, tiny):
    out = tmp_path / "bundle"
    assert trtexec_main(["--model", "tiny", "--onnx", str(tiny), "--target", "server-trt10", "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    env = {**os.environ, "TRTEXEC": str(_fake_trtexec(tmp_path / "trtexec10", 101600))}
    run = subprocess.run(["bash", str(out / "build_and_profile.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    calls = (out / "calls.log").read_text().splitlines()
    assert calls == [" ".join(plan["build"][1:]), " ".join(plan["bench"][1:])]
    assert (out / plan["outputs"]["engine"]).exists() and (out / "times.json").exists()
    env["TRTEXEC"] = str(_fake_trtexec(tmp_path / "trtexec11", 110000))
    run = subprocess.run(["bash", str(out / "build_and_profile.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "TensorRT 10.x" in run.stderr and "11.0" in run.stderr


def test_cli_errors_leave_nothing(tmp_path, tiny, capsys):
    out = tmp_path / "none"
    assert trtexec_main(["--model", "tiny", "--onnx", str(tmp_path / "missing.onnx"), "--target", "server-trt10",
                         "--out", str(out)]) == 1
    assert "export.onnx" in capsys.readouterr().err
    assert trtexec_main(["--model", "tiny", "--onnx", str(tiny), "--target", "nope", "--out", str(out)]) == 1
    assert "no recipe 'nope'" in capsys.readouterr().err
    dft = tmp_path / "dft.onnx"
    g = helper.make_graph([helper.make_node("DFT", ["image"], ["prob"], name="planted_dft")], "g",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 2])],
                          [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 3, 8, 2])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(dft))
    assert trtexec_main(["--model", "x", "--onnx", str(dft), "--target", "server-trt10", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "planted_dft" in err and "trt10.16" in err
    assert not out.exists()


def test_bad_recipe_files(tmp_path):
    bad = tmp_path / "r.toml"
    bad.write_text("[recipes.x]\ntensorrt = '10.3'\n")
    with pytest.raises(RecipeError, match="missing"):
        load_recipes(bad)
    bad.write_text("not = [toml")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipes(bad)
    text = (ROOT / "engines" / "recipes.toml").read_text().replace('precision = "fp16"', 'precision = "fp8"', 1)
    bad.write_text(text)
    with pytest.raises(RecipeError, match="fp8"):
        load_recipes(bad)


def test_module_cli_help_runs():
    proc = subprocess.run([sys.executable, "-m", "export.trtexec", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "--target" in proc.stdout


def test_default_inputs_pick_the_graph_that_carries_the_precision(book, tmp_path):
    from export.trtexec import default_inputs

    jetson, trt11 = book.get("jetson-orin-trt10.3"), book.get("server-trt11")
    assert default_inputs("m", trt11, "fp16", tmp_path) == (tmp_path / "m.fp16.onnx", None)
    assert default_inputs("m", jetson, "int8", tmp_path) == (tmp_path / "m.int8.onnx", None)
    assert default_inputs("m", jetson, "fp16", tmp_path) == (tmp_path / "m.onnx", None)
    (tmp_path / "m.fp16.islands.json").write_text("[]")
    assert default_inputs("m", jetson, "fp16", tmp_path) == (tmp_path / "m.onnx", tmp_path / "m.fp16.islands.json")
    assert default_inputs("m", jetson, "fp32", tmp_path) == (tmp_path / "m.onnx", None)


def test_server_batch_range_on_a_static_batch_export_is_said(book, tmp_path, capsys):
    static = make_model(tmp_path, name="b1.onnx", batch=1)
    job = plan_job("tiny", static, book.get("server-trt10"), book, precision="fp16")
    assert job.profile.max[0] == 1 and len(job.notes) == 1
    assert job.notes[0].startswith("warning: recipe server-trt10: batch range opt 8 / max 32") and "--batch dynamic" in job.notes[0]
    assert plan_job("tiny", static, book.get("jetson-orin-trt10.3"), book).notes == ()  # batch 1 / 1 fits
    out = tmp_path / "bundle"
    assert trtexec_main(["--model", "tiny", "--onnx", str(static), "--target", "server-trt10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sum(line.startswith("warning: recipe server-trt10") for line in printed.splitlines()) == 1
    assert json.loads((out / "plan.json").read_text())["notes"] == list(job.notes)

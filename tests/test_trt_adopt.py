"""``python -m export.tensorrt --adopt ENGINE --onnx MODEL.onnx``: the sidecar of a trtexec-built
engine, from the engine's own facts. On CPU: the CLI's arguments and ONNX-sidecar checks, the
sidecar written for given engine facts (it loads in the runtime and passes its engine check
on the same machine), the precision read from layer information, and the device script
calling it after trtexec. Reading a real engine needs TensorRT and its GPU (skipped here;
tests/test_trt_api.py runs that path against the real bindings)."""
import json
import os
import subprocess
from dataclasses import replace

import pytest

from export.tensorrt import engine_sidecar
from export.tensorrt import main as tensorrt_main
from export.trt_adopt import AdoptError, EngineFacts, adopt_engine, adopted_build, precision_from_layers
from export.trt_plan import GraphPrecision
from export.trt_shapes import ShapeProfile
from export.trtexec import main as trtexec_main
from runtime.backends.tensorrt_backend import GpuInfo, engine_compatibility
from runtime.sidecar import ArtifactInfo, Sidecar, TensorRTBuild, sha256_file, sidecar_path

try:
    from test_runtime_fixtures import make_model
    from test_trt_trtexec import _fake_trtexec
except ImportError:  # tests/ used as a package
    from .test_runtime_fixtures import make_model
    from .test_trt_trtexec import _fake_trtexec

GPU = GpuInfo("Orin (nvgpu)", "8.7")


def _facts(precision="fp16"):
    return EngineFacts("10.3.0.30", "image", ((1, 3, 32, 32), (1, 3, 32, 32), (1, 3, 32, 32)), ("prob", "score"),
                       precision)


def test_adopted_sidecar_loads_in_the_runtime(tmp_path):
    onnx_path = make_model(tmp_path, batch=1)
    engine = tmp_path / "tiny-fp16.engine"
    engine.write_bytes(b"built by trtexec")
    plan = {"workspace_mib": 1024, "plan": {"builder_flags": ["FP16", "OBEY_PRECISION_CONSTRAINTS"],
                                            "fp32_nodes": ["/a", "/b"], "strongly_typed": False}}
    build = adopted_build(_facts(), GPU, onnx_path, GraphPrecision(0, 0), plan)
    side = engine_sidecar(Sidecar.load(sidecar_path(onnx_path)), engine.name, sha256_file(engine), build,
                          ShapeProfile("image", *_facts().profile), None)
    side.save(sidecar_path(engine))
    back = Sidecar.load(sidecar_path(engine))
    b = TensorRTBuild.of(back)
    assert back.artifact.format == "tensorrt" and back.artifact.sha256 == sha256_file(engine)
    assert back.preprocess == Sidecar.load(sidecar_path(onnx_path)).preprocess and back.input.shape[0] == 1
    assert (b.version, b.gpu, b.precision, b.builder_flags, b.fp32_layers) == \
        ("10.3.0.30", GPU.name, "fp16", ("FP16", "OBEY_PRECISION_CONSTRAINTS"), 2)
    assert b.profile == {"input": "image", "min": [1, 3, 32, 32], "opt": [1, 3, 32, 32], "max": [1, 3, 32, 32]}
    assert engine_compatibility(b, "10.3.0.30", GPU) == ([], [])  # the runtime's check passes on that device
    # without layer information the ONNX decides; 11.x is strongly typed
    assert adopted_build(replace(_facts(), layer_precision=None), GPU, onnx_path, GraphPrecision(0, 4), {}).precision \
        == "int8"
    assert adopted_build(replace(_facts(), tensorrt="11.4.0.106"), GPU, onnx_path, GraphPrecision(0, 0), {}).strongly_typed


@pytest.mark.parametrize("info,expected", [
    (json.dumps({"Layers": [{"Name": "c", "Outputs": [{"Format/Datatype": "Row major linear FP32"}]}]}), "fp32"),
    (json.dumps({"Layers": [{"Name": "c", "Outputs": [{"Format/Datatype": "Channel major FP16 format"}]}]}), "fp16"),
    (json.dumps({"Layers": [{"Name": "c", "Outputs": [{"Format/Datatype": "Int8 NC32HW32"}]},
                            {"Name": "d", "Outputs": [{"Format/Datatype": "Half"}]}]}), "int8"),
    (json.dumps({"Layers": ["conv1", "relu1"]}), None),  # built without detailed verbosity: names only
    ("", None), ("not json", None),
])
def test_precision_from_layer_information(info, expected):
    assert precision_from_layers(info) == expected


def test_adopt_cli_arguments_and_onnx_checks(tmp_path, capsys):
    onnx_path = make_model(tmp_path)
    engine = tmp_path / "t.engine"
    engine.write_bytes(b"x")
    with pytest.raises(SystemExit):
        tensorrt_main(["--adopt", str(engine)])  # no --onnx
    with pytest.raises(SystemExit):
        tensorrt_main(["--adopt", str(engine), "--onnx", str(onnx_path), "--out", "x.engine"])
    with pytest.raises(SystemExit):
        tensorrt_main([str(onnx_path), "--out", str(tmp_path / "e.engine"), "--plan", "p.json"])
    capsys.readouterr()
    cases = [(tmp_path / "t.bin", onnx_path, "must end in .engine"), (tmp_path / "none.engine", onnx_path, "not found"),
             (engine, tmp_path / "missing.onnx", "file not found")]
    for eng, model, match in cases:
        assert tensorrt_main(["--adopt", str(eng), "--onnx", str(model)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and match in err and len(err.splitlines()) == 1
    side = Sidecar.load(sidecar_path(onnx_path))
    replace(side, artifact=replace(side.artifact, sha256="0" * 64)).save(sidecar_path(onnx_path))
    with pytest.raises(AdoptError, match="stale sidecar"):
        adopt_engine(engine, onnx_path, trt=object(), gpu=GPU)
    replace(side, artifact=ArtifactInfo.from_file(onnx_path)).save(sidecar_path(onnx_path))
    (tmp_path / "plan.json").write_text(json.dumps({"plan": {}, "outputs": {"engine": "other.engine"}}))
    with pytest.raises(AdoptError, match="other.engine"):
        adopt_engine(engine, onnx_path, tmp_path / "plan.json", trt=object(), gpu=GPU)
    (tmp_path / "plan.json").write_text("[]")
    with pytest.raises(AdoptError, match="not a plan.json"):
        adopt_engine(engine, onnx_path, tmp_path / "plan.json", trt=object(), gpu=GPU)
    assert not sidecar_path(engine).exists()


def test_device_script_adopts_the_engine_after_trtexec(tmp_path):
    onnx_path = make_model(tmp_path)
    out = tmp_path / "bundle"
    assert trtexec_main(["--model", "tiny", "--onnx", str(onnx_path), "--target", "server-trt10", "--out", str(out)]) == 0
    python = tmp_path / "python"
    python.write_text('#!/usr/bin/env bash\nif [ "$1" = "-c" ]; then exit 0; fi\nprintf "%s\\n" "$*" >> adopt.log\n')
    python.chmod(0o755)
    env = {**os.environ, "TRTEXEC": str(_fake_trtexec(tmp_path / "trtexec10", 101600)), "PYTHON": str(python)}
    run = subprocess.run(["bash", str(out / "build_and_profile.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert (out / "adopt.log").read_text().split() == ["-m", "export.tensorrt", "--adopt", "tiny-fp16.engine", "--onnx",
                                                      "tiny.onnx", "--plan", "plan.json"]
    calls = (out / "calls.log").read_text().splitlines()
    assert len(calls) == 2  # build, then profile: the adoption sits between them
    python.write_text("#!/usr/bin/env bash\nexit 1\n")  # imlkit not importable on the device
    run = subprocess.run(["bash", str(out / "build_and_profile.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "no sidecar written" in run.stderr and "--adopt tiny-fp16.engine" in run.stderr


@pytest.mark.gpu
def test_adopting_a_real_engine_matches_the_builders_sidecar(tmp_path):
    pytest.importorskip("tensorrt", reason="reading an engine needs TensorRT (the gpu extra) and the engine's GPU")
    from runtime.backends.tensorrt_backend import query_gpu
    from runtime.errors import RuntimeInputError

    try:
        query_gpu(0)
    except RuntimeInputError as err:
        pytest.skip(f"reading an engine needs its GPU: {err}")
    from export.tensorrt import build_engine

    onnx_path = make_model(tmp_path)
    res = build_engine(onnx_path, tmp_path / "tiny.engine", precision="fp32", max_batch=4, opt_batch=2, verify=False)
    built = TensorRTBuild.of(Sidecar.load(res.sidecar))
    res.sidecar.unlink()
    adopted = TensorRTBuild.of(Sidecar.load(adopt_engine(res.engine, onnx_path)))
    for key in ("version", "gpu", "compute_capability", "precision", "profile", "onnx_sha256"):
        assert getattr(adopted, key) == getattr(built, key), key

"""The runtime's TensorRT backend: the engine-vs-machine check (TensorRT version, GPU), the
build info in the sidecar, dispatch by suffix, and, where TensorRT and a GPU exist, running
an engine with the backend's own stream and with a caller's stream."""
import importlib.util
from dataclasses import replace

import numpy as np
import pytest

from runtime.backends import open_backend
from runtime.backends.tensorrt_backend import GpuInfo, engine_compatibility, version_key
from runtime.errors import BackendError, SidecarError
from runtime.sidecar import TENSORRT_EXTRA_KEY, Sidecar, TensorRTBuild, sidecar_path

try:
    from test_runtime_fixtures import make_model
except ImportError:  # tests/ used as a package
    from .test_runtime_fixtures import make_model

ORIN = GpuInfo("Orin (nvgpu)", "8.7")
BUILD = TensorRTBuild(version="10.3.0.30", gpu="Orin (nvgpu)", compute_capability="8.7", precision="fp16",
                      strongly_typed=False, profile={"input": "image", "min": [1, 3, 32, 32],
                                                     "opt": [1, 3, 32, 32], "max": [4, 3, 32, 32]},
                      workspace_mib=1024, build_seconds=3.0, onnx_file="tiny.onnx", onnx_sha256="0" * 64,
                      builder_flags=("FP16",), fp32_layers=2)


def test_version_key():
    assert version_key("10.3.0.30") == (10, 3, 0, 30) and version_key("11.0.0.114") == (11, 0, 0, 114)
    assert version_key("10.16.1.post1") == (10, 16, 1)


def test_same_version_and_gpu_is_compatible():
    assert engine_compatibility(BUILD, "10.3.0.30", ORIN) == ([], [])
    assert engine_compatibility(BUILD, "10.3.0", ORIN) == ([], [])  # fewer components: compared as far as both go


@pytest.mark.parametrize("here", ["10.3.0.26", "10.16.1", "11.0.0.114"])
def test_other_tensorrt_is_refused_naming_both(here):
    errors, _ = engine_compatibility(BUILD, here, ORIN)
    assert len(errors) == 1 and "10.3.0.30" in errors[0] and here in errors[0] and "rebuild" in errors[0]


def test_other_gpu_architecture_is_refused_same_architecture_warned():
    errors, notes = engine_compatibility(BUILD, "10.3.0.30", GpuInfo("NVIDIA H100 80GB HBM3", "9.0"))
    assert len(errors) == 1 and "Orin" in errors[0] and "H100" in errors[0] and "8.7" in errors[0] and "9.0" in errors[0]
    errors, notes = engine_compatibility(replace(BUILD, gpu="NVIDIA A100", compute_capability="8.0"),
                                         "10.3.0.30", GpuInfo("NVIDIA A30", "8.0"))
    assert errors == [] and len(notes) == 1 and "A100" in notes[0] and "A30" in notes[0]
    errors, _ = engine_compatibility(BUILD, "11.0", GpuInfo("NVIDIA L4", "8.9"))
    assert len(errors) == 2


def test_build_info_round_trips_through_the_sidecar(tmp_path):
    path = make_model(tmp_path)
    side = Sidecar.load(sidecar_path(path))
    assert TensorRTBuild.of(side) is None
    with_build = replace(side, extra={**side.extra, TENSORRT_EXTRA_KEY: BUILD.to_dict()})
    with_build.save(tmp_path / "x.json")
    assert TensorRTBuild.of(Sidecar.load(tmp_path / "x.json")) == BUILD


@pytest.mark.parametrize("change,match", [
    (lambda d: d.pop("gpu"), "missing key extra.tensorrt.gpu"),
    (lambda d: d.update(compute_capability="sm87"), "MAJOR.MINOR"),
    (lambda d: d.update(precision="bf16"), "precision"),
    (lambda d: d["profile"].update(opt=[8, 3, 32, 32]), "min <= opt <= max"),
    (lambda d: d.update(extra_key=1), "unknown key"),
    (lambda d: d["onnx"].update(sha256="xyz"), "64 lowercase hex"),
])
def test_bad_build_info_is_a_one_line_sidecar_error(change, match):
    d = BUILD.to_dict()
    change(d)
    with pytest.raises(SidecarError, match=match) as info:
        TensorRTBuild.from_dict(d, "e.engine.json")
    assert "e.engine.json" in str(info.value) and "\n" not in str(info.value)


def test_engine_suffix_dispatches_to_tensorrt(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 8)
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(BackendError, match="gpu extra"):
            open_backend(engine)
    onnx_path = make_model(tmp_path)
    with pytest.raises(BackendError, match="TensorRT engines, not to ONNX"):
        open_backend(onnx_path, stream=1234)


def test_no_gpu_is_said_in_one_line():
    pytest.importorskip("cuda.bindings.runtime", reason="needs cuda-python to query the CUDA runtime")
    from runtime.backends.tensorrt_backend import query_gpu

    try:
        gpu = query_gpu(0)
    except BackendError as err:
        msg = str(err)
        assert msg.startswith("CUDA device 0:") and "\n" not in msg
    else:
        assert gpu.name and gpu.compute_capability.count(".") == 1


# --------------------------------------------------------------------------- on a GPU


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    pytest.importorskip("tensorrt", reason="needs TensorRT (the gpu extra) and an NVIDIA GPU")
    from runtime.backends.tensorrt_backend import query_gpu
    from runtime.errors import RuntimeInputError

    try:
        query_gpu(0)
    except RuntimeInputError as err:
        pytest.skip(f"needs an NVIDIA GPU: {err}")
    from export.tensorrt import build_engine

    root = tmp_path_factory.mktemp("engine")
    onnx_path = make_model(root)
    return build_engine(onnx_path, root / "tiny.plan", precision="fp32", max_batch=4), onnx_path


@pytest.mark.gpu
def test_backend_runs_with_its_own_and_a_callers_stream(tiny_engine):
    from runtime.backends.ort_backend import OrtBackend
    from runtime.backends.tensorrt_backend import TensorRTBackend

    res, onnx_path = tiny_engine
    x = np.random.default_rng(0).standard_normal((6, 3, 32, 32)).astype(np.float32)
    ref = OrtBackend(onnx_path, providers=["CPUExecutionProvider"]).run(x)
    with TensorRTBackend(res.engine) as own:
        got = own.run(x)
        assert own.input_shape[1:] == (3, 32, 32) and own.providers[0].startswith("TensorRT")
    from cuda.bindings import runtime as cudart

    err, stream = cudart.cudaStreamCreate()
    try:
        with TensorRTBackend(res.engine, stream=int(stream)) as theirs:
            assert theirs.stream == int(stream)
            got2 = theirs.run(x)
    finally:
        cudart.cudaStreamDestroy(stream)
    for out in (got, got2):
        assert np.abs(out["prob"] - ref["prob"]).max() < 1e-2 and np.abs(out["score"] - ref["score"]).max() < 1e-2


@pytest.mark.gpu
def test_backend_refuses_an_engine_from_another_tensorrt(tiny_engine, tmp_path):
    from runtime.backends.tensorrt_backend import TensorRTBackend
    from runtime.errors import ModelError

    res, _ = tiny_engine
    side = Sidecar.load(res.sidecar)
    build = TensorRTBuild.of(side)
    other = replace(side, extra={**side.extra, TENSORRT_EXTRA_KEY: replace(build, version="9.9.9").to_dict()})
    with pytest.raises(ModelError, match="built with TensorRT 9.9.9"):
        TensorRTBackend(res.engine, sidecar=other)

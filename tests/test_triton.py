"""Triton model repositories (``export.triton``): every config.pbtxt parses with Triton's own
protobuf schema (tritonclient's ``model_config_pb2``) and says what the artifact is."""
import shutil

import pytest

from export.tensorrt import engine_sidecar
from export.trt_shapes import ShapeProfile
from export.triton import TritonError, main, write_repository
from runtime.sidecar import Sidecar, TensorRTBuild, sha256_file, sidecar_path

try:
    from test_runtime_fixtures import make_model
except ImportError:  # tests/ used as a package
    from .test_runtime_fixtures import make_model

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="needs tritonclient[grpc] (the dev extra) for Triton's schema")
text_format = pytest.importorskip("google.protobuf.text_format", reason="needs protobuf")


def parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _engine(tmp_path, onnx_path, max_batch):
    """A stand-in engine file with the sidecar export.tensorrt writes for it."""
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(b"\x00not-a-real-plan")
    side = Sidecar.load(sidecar_path(onnx_path))
    prof = ShapeProfile("image", (1, 3, 32, 32), (max_batch, 3, 32, 32), (max_batch, 3, 32, 32))
    build = TensorRTBuild(version="10.16.1.11", gpu="NVIDIA L4", compute_capability="8.9", precision="fp16",
                          strongly_typed=False, profile=prof.as_dict(), workspace_mib=4096, build_seconds=40.0,
                          onnx_file=onnx_path.name, onnx_sha256=sha256_file(onnx_path))
    engine_sidecar(side, engine.name, sha256_file(engine), build, prof, None).save(sidecar_path(engine))
    return engine


def test_dynamic_batch_onnx_and_engine(tmp_path):
    onnx_path = make_model(tmp_path)  # batch dim "batch"
    engine = _engine(tmp_path, onnx_path, max_batch=16)
    written = write_repository(tmp_path / "repo", "tiny", onnx_path, engine, max_batch=8, instances=2)
    assert [p.name for p, _ in written] == ["tiny", "tiny_trt"]
    onnx_cfg = parse(tmp_path / "repo" / "tiny" / "config.pbtxt")
    assert onnx_cfg.name == "tiny" and onnx_cfg.platform == "onnxruntime_onnx" and onnx_cfg.max_batch_size == 8
    assert [i.name for i in onnx_cfg.input] == ["image"] and list(onnx_cfg.input[0].dims) == [3, 32, 32]
    assert onnx_cfg.input[0].data_type == model_config_pb2.TYPE_FP32
    assert {o.name: list(o.dims) for o in onnx_cfg.output} == {"prob": [1, 32, 32], "score": [1]}
    assert onnx_cfg.HasField("dynamic_batching") and list(onnx_cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert onnx_cfg.instance_group[0].count == 2
    assert onnx_cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert onnx_cfg.parameters["mean"].string_value == "0.485,0.456,0.406"
    assert onnx_cfg.parameters["size"].string_value == "32x32"
    trt_cfg = parse(tmp_path / "repo" / "tiny_trt" / "config.pbtxt")
    assert trt_cfg.platform == "tensorrt_plan" and trt_cfg.max_batch_size == 16
    assert list(trt_cfg.input[0].dims) == [3, 32, 32] and trt_cfg.HasField("dynamic_batching")
    assert (tmp_path / "repo" / "tiny_trt" / "1" / "model.plan").read_bytes() == engine.read_bytes()
    copied = Sidecar.load(tmp_path / "repo" / "tiny" / "1" / "model.onnx.json")
    assert copied.artifact.file == "model.onnx" and copied.artifact.sha256 == sha256_file(onnx_path)


def test_fixed_batch_onnx_has_no_dynamic_batching(tmp_path, capsys):
    onnx_path = make_model(tmp_path, batch=1)
    assert main(["--model", "tiny1", "--onnx", str(onnx_path), "--out", str(tmp_path / "repo"), "--kind", "cpu"]) == 0
    assert "no dynamic batching" in capsys.readouterr().out
    cfg = parse(tmp_path / "repo" / "tiny1" / "config.pbtxt")
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [1, 3, 32, 32] and list(cfg.output[1].dims) == [1, 1]
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_rewrite_replaces_only_that_model(tmp_path):
    onnx_path = make_model(tmp_path)
    repo = tmp_path / "repo"
    (repo / "other").mkdir(parents=True)
    write_repository(repo, "tiny", onnx_path)
    write_repository(repo, "tiny", onnx_path, max_batch=4)
    assert parse(repo / "tiny" / "config.pbtxt").max_batch_size == 4
    assert sorted(p.name for p in repo.iterdir()) == ["other", "tiny"]


def test_errors(tmp_path, capsys):
    onnx_path = make_model(tmp_path)
    engine = _engine(tmp_path, onnx_path, max_batch=4)
    stale = tmp_path / "stale.engine"
    shutil.copy(engine, stale)
    shutil.copy(sidecar_path(engine), sidecar_path(stale))
    stale.write_bytes(b"changed")
    with pytest.raises(TritonError, match="stale sidecar"):
        write_repository(tmp_path / "repo", "tiny", onnx_path, stale)
    with pytest.raises(TritonError, match="model name"):
        write_repository(tmp_path / "repo", "bad/name", onnx_path)
    assert main(["--model", "tiny", "--onnx", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "repo")]) == 1
    assert "none.onnx" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())

"""Engine builds (``export.tensorrt``): the build plan per TensorRT version, optimization
profiles, FP32 island files and the engine sidecar run everywhere; the builds themselves run
where TensorRT and an NVIDIA GPU exist and are skipped, with the reason, elsewhere."""
import importlib.util
import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from export.tensorrt import engine_sidecar, layer_node
from export.tensorrt import main as tensorrt_main
from export.trt_plan import GraphPrecision, PlanError, load_fp32_nodes, parse_version, plan_build
from export.trt_shapes import ShapeError, ShapeProfile, graph_input, parse_shapes
from runtime.sidecar import Sidecar, TensorRTBuild, sha256_file, sidecar_path

try:
    from test_runtime_fixtures import build_tiny_onnx, make_model
except ImportError:  # tests/ used as a package
    from .test_runtime_fixtures import build_tiny_onnx, make_model

FP32 = GraphPrecision(0, 0)
MIXED = GraphPrecision(12, 0)
QDQ = GraphPrecision(0, 8)


def _gpu_or_skip():
    """The GPU, or a skip: checked before anything is planned, so a missing GPU skips on
    every TensorRT version instead of failing on a plan the version refuses."""
    pytest.importorskip("tensorrt", reason="needs TensorRT (the gpu extra) and an NVIDIA GPU")
    from runtime.backends.tensorrt_backend import query_gpu
    from runtime.errors import RuntimeInputError

    try:
        return query_gpu(0)
    except RuntimeInputError as err:
        pytest.skip(f"needs an NVIDIA GPU: {err}")


def _trt_major() -> int:
    import tensorrt

    return parse_version(tensorrt.__version__)[0]


def mixed_precision_copy(onnx_path, islands=()):
    """The FP16 mixed-precision ONNX of ``onnx_path`` (``export.precision.convert_mixed``, the
    graph ``export.fp16`` writes), with ``islands`` kept in FP32, and its sidecar: what a
    strongly typed (11.x) fp16 build needs."""
    from export.precision import Fp16Islands, convert_mixed, derived_sidecar, write_model_with_sidecar

    model = onnx.load(str(onnx_path))
    chosen = Fp16Islands()
    for node in model.graph.node:
        if node.name in islands:
            chosen.add(node, "test: kept in FP32")
    out = onnx_path.with_name(onnx_path.stem + ".fp16.onnx")
    side = Sidecar.load(sidecar_path(onnx_path))
    write_model_with_sidecar(convert_mixed(model, chosen), out,
                             lambda tmp: derived_sidecar(side, tmp, precision="fp16", parity=None, details={}))
    return out


def test_mixed_precision_copy_carries_fp16(tmp_path):
    pytest.importorskip("onnxruntime", reason="export.precision converts with onnxruntime's float16 tools")
    path = mixed_precision_copy(make_model(tmp_path))
    assert GraphPrecision.of(onnx.load(str(path))).float16_tensors > 0
    assert plan_build("11.4.0.106", "fp16", GraphPrecision.of(onnx.load(str(path)))).strongly_typed


# --------------------------------------------------------------------------- build plans


def test_version_parsing():
    assert parse_version("10.3.0.30") == (10, 3) and parse_version("11") == (11, 0)
    with pytest.raises(PlanError):
        parse_version("ten")


def test_trt10_weak_typing_flags_and_islands():
    assert plan_build("10.3.0", "fp32", FP32).builder_flags == ()
    fp16 = plan_build("10.3.0", "fp16", FP32, ["/blk/Softmax", "/blk/Softmax"])
    assert not fp16.strongly_typed
    assert fp16.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS")
    assert fp16.fp32_nodes == ("/blk/Softmax",)
    bare = plan_build("10.16", "fp16", FP32)
    assert bare.builder_flags == ("FP16",) and any("overflow" in n for n in bare.notes)
    int8 = plan_build("10.16", "int8", QDQ)
    assert int8.builder_flags == ("INT8", "FP16")
    with pytest.raises(PlanError, match="implicit INT8 calibration"):
        plan_build("10.16", "int8", FP32)


def test_trt11_is_strongly_typed_and_takes_precision_from_the_graph():
    plan = plan_build("11.0.0", "fp16", MIXED, ["/blk/Softmax"])
    assert plan.strongly_typed and plan.builder_flags == () and plan.fp32_nodes == ()
    assert any("ignored" in n for n in plan.notes)
    assert plan_build("11.2", "int8", QDQ).builder_flags == ()
    with pytest.raises(PlanError, match="mixed-precision ONNX"):
        plan_build("11.0", "fp16", FP32)
    with pytest.raises(PlanError, match="Q/DQ"):
        plan_build("11.0", "int8", FP32)
    with pytest.raises(PlanError, match="strongly typed"):
        plan_build("11.0", "fp32", FP32, strongly_typed=False)
    # 10.x can opt into the 11.x way
    assert plan_build("10.16", "fp16", MIXED, strongly_typed=True).strongly_typed


def test_plan_rejects_precision_the_graph_contradicts():
    with pytest.raises(PlanError, match="--precision int8"):
        plan_build("10.3", "fp32", QDQ)
    with pytest.raises(PlanError, match="--precision fp16"):
        plan_build("11.0", "fp32", MIXED)
    with pytest.raises(PlanError, match="10.x or 11.x"):
        plan_build("8.6", "fp32", FP32)


def test_graph_precision_reads_casts_and_qdq():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT)]
    mixed = helper.make_model(helper.make_graph(nodes, "m", [x], [y]))
    assert GraphPrecision.of(mixed).float16_tensors >= 1 and GraphPrecision.of(mixed).qdq_nodes == 0
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    z = helper.make_tensor("z", TensorProto.INT8, [], [0])
    qdq = helper.make_model(helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "q", [x], [y], initializer=[s, z]))
    assert GraphPrecision.of(qdq) == GraphPrecision(0, 2)


def test_fp32_island_files(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(["/a/Softmax", "/b/LayerNorm"]))
    (tmp_path / "b.json").write_text(json.dumps({"fp32_nodes": ["/a/Softmax"], "tolerance": 0.01}))
    (tmp_path / "c.txt").write_text("# islands\n/a/Softmax\n\n/b/Pow\n")
    (tmp_path / "d.json").write_text('{"nodes": 3}')
    assert load_fp32_nodes(tmp_path / "a.json") == ("/a/Softmax", "/b/LayerNorm")
    assert load_fp32_nodes(tmp_path / "b.json") == ("/a/Softmax",)
    assert load_fp32_nodes(tmp_path / "c.txt") == ("/a/Softmax", "/b/Pow")
    with pytest.raises(PlanError, match="d.json"):
        load_fp32_nodes(tmp_path / "d.json")
    with pytest.raises(PlanError, match="missing.json"):
        load_fp32_nodes(tmp_path / "missing.json")


def test_island_list_of_export_precision(tmp_path):
    precision = pytest.importorskip("export.precision", reason="needs export.precision (the FP16 island finder)")
    islands = precision.Fp16Islands()
    islands.add(helper.make_node("Softmax", ["a"], ["b"], name="/attn/Softmax"), "softmax: Softmax")
    islands.add(helper.make_node("LayerNormalization", ["c", "s"], ["d"], name="/blk/norm"), "norm: LayerNormalization")
    islands.add(helper.make_node("Shape", ["c"], ["e"], name="/blk/Shape"), "static: constant/shape arithmetic")
    islands.save(tmp_path / "m.fp16.islands.json")
    assert load_fp32_nodes(tmp_path / "m.fp16.islands.json") == tuple(islands.tensorrt10_layers())
    assert set(load_fp32_nodes(tmp_path / "m.fp16.islands.json")) == {"/attn/Softmax", "/blk/norm"}


# --------------------------------------------------------------------------- profiles


def test_profiles_from_the_graph_and_from_shapes(tmp_path):
    model = onnx.load(str(build_tiny_onnx(tmp_path / "dyn.onnx")))
    name, dims = graph_input(model)
    assert name == "image" and dims == ("batch", 3, 32, 32)
    p = parse_shapes(None, name, dims, opt_batch=4, max_batch=16)
    assert (p.min, p.opt, p.max) == ((1, 3, 32, 32), (4, 3, 32, 32), (16, 3, 32, 32)) and p.dynamic
    assert p.trtexec_build_flags() == ["--minShapes=image:1x3x32x32", "--optShapes=image:4x3x32x32",
                                       "--maxShapes=image:16x3x32x32"]
    assert p.trtexec_run_flag() == "--shapes=image:4x3x32x32"
    q = parse_shapes("image:2x3x32x32,8x3x32x32,32x3x32x32", name, dims)
    assert (q.min[0], q.opt[0], q.max[0]) == (2, 8, 32)
    assert parse_shapes("4x3x32x32", name, dims).max == (4, 3, 32, 32)


@pytest.mark.parametrize("spec,match", [
    ("1x3x32x32,2x3x32x32", "OPT or MIN,OPT,MAX"),
    ("8x3x32x32,4x3x32x32,16x3x32x32", "min 8 <= opt 4"),
    ("1x3x64x64", "fixed at 32"),
    ("1x3x32", "rank 3"),
    ("other:1x3x32x32", "graph's input is 'image'"),
    ("1x3xAx32", "not NxCxHxW"),
])
def test_bad_profiles(tmp_path, spec, match):
    model = onnx.load(str(build_tiny_onnx(tmp_path / "dyn.onnx")))
    with pytest.raises(ShapeError, match=match):
        parse_shapes(spec, *graph_input(model))


def test_fixed_batch_graph_keeps_its_batch(tmp_path):
    model = onnx.load(str(build_tiny_onnx(tmp_path / "b1.onnx", batch=1)))
    p = parse_shapes(None, *graph_input(model), max_batch=8)
    assert p.min == p.max == (1, 3, 32, 32) and not p.dynamic
    with pytest.raises(ShapeError, match="--batch dynamic"):
        parse_shapes("1x3x32x32,2x3x32x32,4x3x32x32", *graph_input(model))


def test_dynamic_size_takes_the_sidecar_size():
    p = parse_shapes(None, "image", ("n", 3, "h", "w"), size=(48, 64))
    assert p.opt == (1, 3, 48, 64)
    with pytest.raises(ShapeError, match="give --shapes"):
        parse_shapes(None, "image", ("n", 3, "h", "w"))


# --------------------------------------------------------------------------- engine sidecar


def _build_info(onnx_path, profile: ShapeProfile, **kw):
    fields = dict(version="10.3.0.30", gpu="Orin (nvgpu)", compute_capability="8.7", precision="fp16",
                  strongly_typed=False, profile=profile.as_dict(), workspace_mib=1024, build_seconds=12.5,
                  onnx_file=onnx_path.name, onnx_sha256=sha256_file(onnx_path),
                  builder_flags=("FP16",), fp32_layers=3)
    fields.update(kw)
    return TensorRTBuild(**fields)


def test_engine_sidecar_carries_the_build(tmp_path):
    onnx_path = make_model(tmp_path)
    side = Sidecar.load(sidecar_path(onnx_path))
    profile = ShapeProfile("image", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(b"\x01engine")
    es = engine_sidecar(side, engine.name, sha256_file(engine), _build_info(onnx_path, profile), profile, None)
    es.save(sidecar_path(engine))
    back = Sidecar.load(sidecar_path(engine))
    assert back.artifact.format == "tensorrt" and back.artifact.file == "tiny.engine"
    assert back.input.shape[0] == "batch" and back.outputs[0].shape[0] == "batch"
    assert back.preprocess == side.preprocess and back.extra["note"] == "tiny"
    build = TensorRTBuild.of(back)
    assert build.version == "10.3.0.30" and build.compute_capability == "8.7" and build.fp32_layers == 3
    assert build.profile["max"] == [8, 3, 32, 32] and back.versions["tensorrt"] == "10.3.0.30"
    fixed = ShapeProfile("image", (1, 3, 32, 32), (1, 3, 32, 32), (1, 3, 32, 32))
    es1 = engine_sidecar(side, engine.name, sha256_file(engine), _build_info(onnx_path, fixed), fixed, None)
    assert es1.input.shape[0] == 1 and es1.outputs[1].shape == (1, 1)


def test_layer_node_prefers_onnx_metadata():
    class Layer:
        name = "/enc/Softmax_output_0_reformat"
        metadata = "[ONNX Layer: /enc/Softmax]"

    class Unnamed:
        name = "conv1"
        metadata = ""

    assert layer_node(Layer()) == "/enc/Softmax"
    assert layer_node(Unnamed()) == "conv1"


def test_cli_without_tensorrt_says_how_to_proceed(tmp_path, capsys):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; this checks the message where it is not")
    onnx_path = make_model(tmp_path)
    assert tensorrt_main([str(onnx_path), "--out", str(tmp_path / "t.engine"), "--precision", "fp16"]) == 1
    err = capsys.readouterr().err.strip()
    assert "TensorRT is not installed" in err and "export.trtexec" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "t.engine").exists() and not (tmp_path / "t.engine.json").exists()
    with pytest.raises(SystemExit):
        tensorrt_main([str(onnx_path), "--out", str(tmp_path / "t.bin")])


def test_cli_rejects_a_bad_profile_before_touching_tensorrt(tmp_path, capsys):
    onnx_path = make_model(tmp_path)
    assert tensorrt_main([str(onnx_path), "--out", str(tmp_path / "t.engine"), "--shapes", "1x3x64x64"]) == 1
    assert "fixed at 32" in capsys.readouterr().err


# --------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_tiny_engine_and_predict(tmp_path, precision):
    gpu = _gpu_or_skip()
    from export.tensorrt import build_engine
    from runtime import Predictor

    onnx_path = make_model(tmp_path)
    fp32_path = onnx_path
    if precision == "fp16" and _trt_major() >= 11:  # strongly typed: the precision is in the graph
        onnx_path = mixed_precision_copy(onnx_path)
    res = build_engine(onnx_path, tmp_path / "tiny.engine", precision=precision, max_batch=4, opt_batch=2)
    assert res.plan.strongly_typed == (_trt_major() >= 11)
    build = TensorRTBuild.of(Sidecar.load(res.sidecar))
    assert build.gpu == gpu.name and build.compute_capability == gpu.compute_capability
    assert build.precision == precision and build.profile["max"][0] == 4
    assert res.parity is not None and res.parity.passed, res.parity
    assert (tmp_path / "tiny.engine.timing-cache").stat().st_size > 0
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    engine_pred = Predictor(res.engine).predict_batch([rgb] * 6)  # 6 > max batch 4: chunked
    onnx_pred = Predictor(fp32_path, providers=["CPUExecutionProvider"]).predict(rgb)
    tol = 1e-2 if precision == "fp32" else 5e-2
    for p in engine_pred:
        assert np.abs(p.prob - onnx_pred.prob).max() < tol and abs(p.score - onnx_pred.score) < tol


@pytest.mark.gpu
def test_build_seed_model_fp16_with_islands(tmp_path):
    _gpu_or_skip()
    from export.onnx import export_model
    from export.tensorrt import build_engine

    res = export_model("m2sformer", tmp_path / "m2s.onnx", small=True)
    model = onnx.load(str(res.onnx_path))
    islands = tuple(n.name for n in model.graph.node if n.op_type in ("Softmax", "LayerNormalization"))
    if _trt_major() >= 11:  # the 11.x fp16 path: the mixed-precision ONNX with the islands in FP32
        eng = build_engine(mixed_precision_copy(res.onnx_path, islands), tmp_path / "m2s.engine", precision="fp16")
        assert eng.plan.strongly_typed and eng.plan.builder_flags == ()
    else:
        eng = build_engine(res.onnx_path, tmp_path / "m2s.engine", precision="fp16", fp32_nodes=islands)
    info = TensorRTBuild.of(Sidecar.load(eng.sidecar))
    if not eng.plan.strongly_typed:
        assert info.fp32_layers > 0 and "OBEY_PRECISION_CONSTRAINTS" in info.builder_flags
    assert eng.parity is not None and np.isfinite(eng.parity.max_abs_diff)
    side = Sidecar.load(eng.sidecar)
    assert replace(side, extra={}).artifact.sha256 == sha256_file(eng.engine)


def test_batch_range_for_a_static_batch_export_is_an_error(tmp_path, capsys):
    onnx_path = make_model(tmp_path, batch=1)
    assert tensorrt_main([str(onnx_path), "--out", str(tmp_path / "t.engine"), "--max-batch", "32"]) == 1
    err = capsys.readouterr().err.strip()
    assert "static batch of 1" in err and "--batch dynamic" in err and len(err.splitlines()) == 1
    from export.trt_shapes import batch_range_problem

    assert batch_range_problem((1, 3, 32, 32), 1, 1) is None and batch_range_problem(("batch", 3, 32, 32), 8, 32) is None
    assert "opt 8 / max 32" in batch_range_problem((1, 3, 32, 32), 8, 32)

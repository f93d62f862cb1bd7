"""FP16 safety (export.precision, python -m export.fp16): the mixed-precision ONNX of every
registered model matches FP32 on onnxruntime CPU within the stated tolerance, passes the
TensorRT lint of every target, keeps the overflow-prone ops in FP32 without FP16 round trips
between them, and the islands come out in the TensorRT 10 form; the range rule, the measured
growth and the FP16 storage simulation are checked on planted graphs with known answers."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.shape_inference
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.calibration import EVAL_START, load_images
from export.fp16 import main as fp16_main
from export.trt_support import TARGETS, check_graph
from export.verify import lint
from export.precision import (DEFAULT_MAX_PROB_DIFF, DEFAULT_MIN_IOU, Fp16Islands, PrecisionError, float_tensors,
                              islands_path, make_fp16, run_outputs, session, simulate_fp16, with_tensor_outputs)
from runtime import Predictor
from runtime.sidecar import Sidecar, sidecar_path
from train.models import list_models

try:
    from small_exports import fresh_copy, small_export
except ImportError:  # tests/ used as a package
    from .small_exports import fresh_copy, small_export

# The stated parity of the mixed graph vs FP32 (export.fp16's defaults): every probability
# within 1e-2, masks on decided pixels (|p - 0.5| > 1e-3) with IoU >= 0.99. Measured on the
# small random-weight models (16 images): 3.7e-5 .. 3.7e-4 with FP16 storage simulated, IoU 1.0.
TOLERANCE = 1e-2
MIN_IOU = 0.99
assert (DEFAULT_MAX_PROB_DIFF, DEFAULT_MIN_IOU) == (TOLERANCE, MIN_IOU)
FP32_OPS = ("Softmax", "LayerNormalization")


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return types


def _to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


@pytest.mark.parametrize("name", list_models())
def test_mixed_precision_onnx_matches_fp32(name, tmp_path):
    src = fresh_copy(name, tmp_path)
    out = tmp_path / f"{name}.fp16.onnx"
    assert fp16_main([str(src), "--out", str(out), "--calib", "3"]) == 0

    # parity through the runtime, on images the tool never saw
    side = Sidecar.load(sidecar_path(out))
    assert side.variant["precision"] == "fp16-mixed" and side.parity.passed
    fp16, fp32 = Predictor(out), Predictor(src)
    for sample in load_images("synthetic", 2, size=96, start=EVAL_START):
        a, b = fp32.predict(sample.image), fp16.predict(sample.image)
        assert np.abs(a.prob - b.prob).max() <= TOLERANCE
        decided = np.abs(a.prob - 0.5) > 1e-3
        union = (a.mask | b.mask)[decided].sum()
        assert union == 0 or (a.mask & b.mask)[decided].sum() / union >= MIN_IOU

    # really mixed: FP16 weights inside, FP32 at the interface, the rule ops in FP32
    mixed, original = onnx.load(str(out)), onnx.load(str(src))
    types = _types(mixed)
    assert any(t.data_type == TensorProto.FLOAT16 for t in mixed.graph.initializer)
    assert {types[v.name] for v in list(mixed.graph.input) + list(mixed.graph.output)} == {TensorProto.FLOAT}
    rule_nodes = [n for n in mixed.graph.node if n.op_type in FP32_OPS]
    assert rule_nodes
    for node in rule_nodes:
        assert types[node.input[0]] == TensorProto.FLOAT, node.name
    for target in TARGETS:  # what TensorRT 10.x / 11.x can parse
        report = check_graph(mixed, target)
        assert report.ok, (target, report.problems[:3])
    # no FP32 -> FP16 -> FP32 round trip left between islands
    producers = {o: n for n in mixed.graph.node for o in n.output}
    for node in mixed.graph.node:
        first = producers.get(node.input[0]) if node.op_type == "Cast" and _to(node) == TensorProto.FLOAT else None
        assert not (first is not None and first.op_type == "Cast" and _to(first) == TensorProto.FLOAT16
                    and types.get(first.input[0]) == TensorProto.FLOAT), node.name

    # the island list: every rule op of the FP32 graph, in the TensorRT 10 form, in the sidecar
    islands = Fp16Islands.load(islands_path(out))
    assert islands.source == src.name and islands.source_sha256 == Sidecar.load(sidecar_path(src)).artifact.sha256
    for node in original.graph.node:
        if node.op_type in FP32_OPS:
            assert node.name in islands.nodes and f"{node.name}:fp32" in islands.layer_precisions().split(",")
    assert side.extra["precision"]["islands"] == sorted(islands.nodes)
    assert side.extra["precision"]["tensorrt10_layer_precisions"] == islands.layer_precisions()


def test_attention_stays_one_fp32_pattern(tmp_path):
    """Q.K^T reaches its Softmax in FP32 with no Cast in between (the converter alone would
    store it in FP16 between the two island nodes), and the whole Mul(Q) -> MatMul ->
    Softmax -> MatMul pattern still passes the project's lint."""
    src = small_export("m2sformer")
    model = onnx.load(str(src))
    images = load_images("synthetic", 2, size=64)
    side = Sidecar.load(sidecar_path(src))
    from export.calibration import input_batches

    result = make_fp16(model, input_batches(images, side.preprocess))
    mixed = result.mixed
    producers = {o: n for n in mixed.graph.node for o in n.output}
    softmaxes = [n for n in mixed.graph.node if n.op_type == "Softmax"]
    assert softmaxes
    for node in softmaxes:
        chain, x = [], node.input[0]
        while x in producers and producers[x].op_type != "MatMul":
            chain.append(producers[x].op_type)
            x = producers[x].input[0]
        assert x in producers and "Cast" not in chain, (node.name, chain)
    report = lint(mixed)
    assert report.ok and report.attention_patterns == len(softmaxes), report.problems[:3]


# --------------------------------------------------------------------------- planted graphs

def planted(offset: float, size: int = 8) -> onnx.ModelProto:
    """image -> Conv -> (+offset) -> (-offset) -> square -> Conv -> Sigmoid = prob; score = max."""
    inits = [numpy_helper.from_array(np.full((1, 3, 1, 1), 0.3, np.float32), "w"),
             numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w2"),
             numpy_helper.from_array(np.array([offset], np.float32), "offset"),
             numpy_helper.from_array(np.array([1], np.int64), "axis")]
    nodes = [helper.make_node("Conv", ["image", "w"], ["y"], name="conv"),
             helper.make_node("Add", ["y", "offset"], ["shifted"], name="add"),
             helper.make_node("Sub", ["shifted", "offset"], ["back"], name="sub"),
             helper.make_node("Mul", ["back", "back"], ["square"], name="square"),
             helper.make_node("Conv", ["square", "w2"], ["logit"], name="conv2"),
             helper.make_node("Sigmoid", ["logit"], ["prob"], name="sigmoid"),
             helper.make_node("ReduceMax", ["prob"], ["peak"], name="peak", keepdims=0, axes=[1, 2, 3]),
             helper.make_node("Unsqueeze", ["peak", "axis"], ["score"], name="score")]
    graph = helper.make_graph(nodes, "planted", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                [1, 3, size, size])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1, size, size]),
                               helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _inputs(n: int = 3) -> list[np.ndarray]:
    return [np.random.default_rng(k).normal(0, 1, (1, 3, 8, 8)).astype(np.float32) for k in range(n)]


def _prob_error(model: onnx.ModelProto, candidate: onnx.ModelProto, batches) -> float:
    ref, can = session(model), session(candidate)
    return max(float(np.abs(run_outputs(ref, b)["prob"] - run_outputs(can, b)["prob"]).max()) for b in batches)


def test_range_rule_keeps_overflowing_tensor_fp32():
    model = planted(50_000.0)  # "shifted" holds ~5e4: beyond the limit, near FP16's 65504
    result = make_fp16(model, _inputs())
    assert result.overflowing == ["shifted"]
    for node in ("add", "sub"):  # producer and consumer of the hot tensor
        assert result.islands.nodes[node][1].startswith("overflow")
    assert result.cpu_agreement.max_abs_prob <= TOLERANCE
    # without the islands, FP16 storage of "shifted" wrecks the map
    assert _prob_error(model, simulate_fp16(model, Fp16Islands()), _inputs()) > 0.1


def test_measured_growth_finds_cancellation():
    """(y + 1000) - 1000 in FP16 loses y to the rounding of the sum: in range, no rule
    covers it, only the measured growth finds the two nodes."""
    model = planted(1000.0)
    assert _prob_error(model, simulate_fp16(model, Fp16Islands()), _inputs()) > TOLERANCE
    result = make_fp16(model, _inputs())
    assert not result.overflowing
    assert {n for n, (_, why) in result.islands.nodes.items() if why.startswith("measured")} == {"add", "sub"}
    assert len(result.rounds) >= 2 and result.agreement.max_abs_prob <= TOLERANCE
    with pytest.raises(PrecisionError, match="no FP16 island set"):
        make_fp16(model, _inputs(), max_rounds=0)


def test_simulation_rounds_every_fp16_tensor_like_numpy():
    model = planted(3.0)
    x = _inputs(1)[0]
    sim = session(with_tensor_outputs(simulate_fp16(model, Fp16Islands()), ["y", "shifted"]))
    out = run_outputs(sim, x, ["y", "shifted"])
    half = lambda a: np.asarray(a, np.float32).astype(np.float16).astype(np.float32)  # noqa: E731
    y = half(np.einsum("nchw,c->nhw", half(x), half(np.full(3, 0.3)))[:, None])
    np.testing.assert_allclose(out["y"], y, rtol=0, atol=1e-3)  # conv sums in another order
    np.testing.assert_array_equal(out["shifted"], half(out["y"] + half(3.0)))


def test_with_tensor_outputs_exposes_every_float_tensor():
    model = onnx.load(str(small_export("m2sformer")))
    names = list(float_tensors(model))
    exposed = with_tensor_outputs(model, names)
    assert {o.name for o in exposed.graph.output} >= set(names) and len(names) > 500
    sess = session(exposed)
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 64, 64)).astype(np.float32)
    values = run_outputs(sess, x)
    plain = run_outputs(session(model), x, ["prob", "score"])
    np.testing.assert_allclose(values["prob"], plain["prob"], atol=1e-6)
    assert all(values[n].dtype == np.float32 for n in names)


def test_island_list_tensorrt10_form_and_round_trip(tmp_path):
    islands = Fp16Islands()
    ops = {"/a/Softmax": "Softmax", "/a/MatMul": "MatMul", "/pos/Sin": "Sin", "Constant_3": "Constant"}
    reasons = {"/a/Softmax": "softmax: Softmax", "/a/MatMul": "attention: Q.K^T feeding Softmax",
               "/pos/Sin": "static: constant/shape arithmetic", "Constant_3": "static: constant used only in FP32"}
    for name, op in ops.items():
        islands.add(helper.make_node(op, [], [], name=name), reasons[name])
    assert islands.layer_precisions() == "/a/MatMul:fp32,/a/Softmax:fp32"  # folded nodes are no layers
    assert islands.trtexec_args() == ["--precisionConstraints=obey", "--layerPrecisions=/a/MatMul:fp32,/a/Softmax:fp32",
                                      "--layerOutputTypes=/a/MatMul:fp32,/a/Softmax:fp32"]
    path = islands.save(tmp_path / "i.json")
    assert Fp16Islands.load(path).nodes == islands.nodes
    assert json.loads(path.read_text())["tensorrt10"]["layers"] == ["/a/MatMul", "/a/Softmax"]
    islands.add(helper.make_node("Exp", [], [], name="ok:name"), "exp/log: Exp")
    assert "ok:name:fp32" in islands.layer_precisions().split(",")  # trtexec splits on the last colon
    islands.add(helper.make_node("Exp", [], [], name="bad,name"), "exp/log: Exp")
    with pytest.raises(PrecisionError, match="cannot be a trtexec layer spec"):
        islands.layer_precisions()
    (tmp_path / "bad.json").write_text('{"schema": "other"}')
    with pytest.raises(PrecisionError, match="not an FP16 island list"):
        Fp16Islands.load(tmp_path / "bad.json")


def test_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    assert fp16_main([str(tmp_path / "missing.onnx")]) == 1
    assert "missing.onnx: ONNX model not found" in capsys.readouterr().err
    bare = tmp_path / "bare.onnx"
    onnx.save(planted(1.0), str(bare))  # no sidecar
    assert fp16_main([str(bare)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sidecar" in err
    src = fresh_copy("m2sformer", tmp_path)
    assert fp16_main([str(src), "--data", str(tmp_path / "no-such-dataset")]) == 1
    assert "no-such-dataset" in capsys.readouterr().err
    assert fp16_main([str(src), "--tolerance", "0", "--max-rounds", "0", "--calib", "1"]) == 1
    assert "no FP16 island set meets the tolerance" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.onnx", src.name, src.name + ".json"]


def test_model_sidecar_and_island_list_appear_together_or_not_at_all(tmp_path):
    """write_model_with_sidecar stages every file first: a failing sidecar or a failing extra
    file leaves no model, no sidecar, no island list and no temporary file behind."""
    from export.precision import write_model_with_sidecar

    src = small_export("m2sformer")
    model, side = onnx.load(str(src)), Sidecar.load(sidecar_path(src))
    out = tmp_path / "m.fp16.onnx"

    def broken(_tmp):
        raise ValueError("planted")

    with pytest.raises(ValueError, match="planted"):
        write_model_with_sidecar(model, out, broken, also={islands_path(out): b"{}"})
    (tmp_path / "blocker").write_text("a file where a folder is expected")
    with pytest.raises(OSError):
        write_model_with_sidecar(model, out, lambda _tmp: side, also={tmp_path / "blocker" / "i.json": b"{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]

    write_model_with_sidecar(model, out, lambda _tmp: side, also={islands_path(out): b"{}"})
    assert out.is_file() and sidecar_path(out).is_file() and islands_path(out).read_bytes() == b"{}"
    assert Sidecar.load(sidecar_path(out)).artifact.file == out.name


def test_onnxruntime_run_failure_is_one_line_naming_the_model(tmp_path):
    from export.precision import naming

    src = small_export("m2sformer")
    sess = session(onnx.load(str(src)))
    with pytest.raises(PrecisionError, match=r"onnxruntime failed to run the graph on a \(1, 3, 7, 7\) batch") as err:
        run_outputs(sess, np.zeros((1, 3, 7, 7), np.float32))
    line = naming(src, err.value)
    assert line.startswith(f"{src}: onnxruntime failed") and "\n" not in line
    assert naming(src, PrecisionError(f"{src}: stale sidecar")) == f"{src}: stale sidecar"

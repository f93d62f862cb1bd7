"""INT8 Q/DQ (python -m export.quantize) and the calibration images: the Q/DQ ONNX is
symmetric INT8 with zero points 0 and per-channel weights, leaves the FP16-unsafe islands
unquantized, runs through the runtime, and its reported accuracy delta is what
scikit-learn computes on the same evaluation images."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from sklearn.metrics import f1_score

from export.calibration import (EVAL_START, CalibrationError, input_batches, load_images, masks_at)
from export.precision import run_outputs, session
from export.quantize import inline_constants, main as quantize_main, qdq_summary
from export.trt_support import TARGETS, check_graph
from runtime import Predictor
from runtime.sidecar import Sidecar, sidecar_path
from train.models import list_models

try:
    from small_exports import fresh_copy
except ImportError:  # tests/ used as a package
    from .small_exports import fresh_copy

CALIB, EVAL = 3, 3
UNSAFE_OPS = ("Softmax", "LayerNormalization")


@pytest.mark.parametrize("name", list_models())
def test_qdq_onnx_is_symmetric_int8_and_reports_its_delta(name, tmp_path, capsys):
    src = fresh_copy(name, tmp_path)
    out = tmp_path / f"{name}.int8.onnx"
    figure = tmp_path / "masks.png"
    assert quantize_main([str(src), "--out", str(out), "--calib", str(CALIB), "--eval", str(EVAL),
                          "--figure", str(figure)]) == 0
    report = capsys.readouterr().out
    assert "F1 FP32" in report and "INT8 vs FP32 on onnxruntime CPU" in report
    with Image.open(figure) as png:
        assert png.format == "PNG" and png.width > 500

    qdq, fp32 = onnx.load(str(out)), onnx.load(str(src))
    onnx.checker.check_model(qdq)
    for target in TARGETS:  # what TensorRT 10.x / 11.x can parse, zero points included
        report = check_graph(qdq, target)
        assert report.ok, (target, report.problems[:3])
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    kinds = {t.name: t.data_type for t in qdq.graph.initializer}
    qnodes = [n for n in qdq.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qnodes
    for node in qnodes:  # explicit, symmetric INT8: every zero point is a constant int8 0
        assert len(node.input) == 3 and kinds[node.input[2]] == TensorProto.INT8, node.name
        assert not inits[node.input[2]].any(), node.name
    producers = {o: n for n in qdq.graph.node for o in n.output}
    convs = [n for n in qdq.graph.node if n.op_type == "Conv"]
    for conv in convs:  # weights per output channel
        dq = producers.get(conv.input[1])
        assert dq is not None and dq.op_type == "DequantizeLinear", conv.name
        out_channels = inits[dq.input[0]].shape[0]
        assert inits[dq.input[1]].size == out_channels and inits[dq.input[0]].dtype == np.int8
    # the FP16-unsafe islands stay in float: no Dequantize feeds them
    unsafe = [n for n in qdq.graph.node if n.op_type in UNSAFE_OPS]
    assert len(unsafe) == sum(1 for n in fp32.graph.node if n.op_type in UNSAFE_OPS)
    for node in unsafe:
        assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)

    # the sidecar reports the delta, and the numbers are sklearn's on the same images
    side = Sidecar.load(sidecar_path(out))
    assert side.variant["precision"] == "int8-qdq"
    ev = side.extra["precision"]["evaluation"]
    images = load_images("synthetic", EVAL, size=side.preprocess.size[0], start=EVAL_START)
    batches = input_batches(images, side.preprocess)
    truth = masks_at(images, side.preprocess.size)
    for key, model in (("fp32", fp32), ("int8", qdq)):
        sess = session(model)
        probs = [run_outputs(sess, b, ["prob"])["prob"][0, 0] for b in batches]
        f1s = [f1_score(t.ravel(), (p > side.threshold).ravel(), zero_division=0.0)
               for p, t in zip(probs, truth) if t.any()]
        if f1s:
            assert ev[key]["per_image"]["f1"] == pytest.approx(np.mean(f1s), abs=1e-6)
        assert ev[key]["forged_images"] == len(f1s)
    if ev["fp32"]["per_image"]["f1"] is not None:
        assert ev["f1_delta"] == pytest.approx(ev["int8"]["per_image"]["f1"] - ev["fp32"]["per_image"]["f1"])
    assert 0.0 <= ev["agreement"]["mask_iou"] <= 1.0
    Predictor(out).predict(images[0].image)  # the runtime runs it


def test_accuracy_gate_fails_and_writes_nothing(tmp_path, capsys):
    src = fresh_copy("m2sformer", tmp_path)
    assert quantize_main([str(src), "--calib", "2", "--eval", "2", "--min-iou", "1.01"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars: one line
    assert last.startswith("error: ") and "INT8 accuracy gate failed: mask IoU vs FP32" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name, src.name + ".json"]


def test_inline_constants_restores_initializers():
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1), "w")
    nodes = [helper.make_node("Identity", ["w"], ["w_shared"], name="id"),
             helper.make_node("Constant", [], ["b"], name="const",
                              value=numpy_helper.from_array(np.array([1.0, -1.0], np.float32))),
             helper.make_node("Conv", ["x", "w_shared", "b"], ["y"], name="conv")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).normal(size=(1, 3, 2, 2)).astype(np.float32)
    before = session(model).run(None, {"x": x})[0]
    assert inline_constants(model) == 2
    assert [n.op_type for n in model.graph.node] == ["Conv"] and list(model.graph.node[0].input) == ["x", "w", "b"]
    np.testing.assert_array_equal(session(model).run(None, {"x": x})[0], before)


def test_qdq_summary_flags_asymmetric_quantization():
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(3, np.uint8), "zp")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [scale, zp])
    summary = qdq_summary(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert summary.nonzero_zero_points == ["zp"] and summary.other_types == ["zp: UINT8"]


def test_calibration_images_from_a_dataset_and_generated(tmp_path):
    from train.synth import generate

    root = generate(tmp_path / "ds", 3, size=48, seed=5, progress=False)
    for source in (root, root / "data.json"):
        images = load_images(source, 2, start=1)
        assert len(images) == 2 and images[0].image.dtype == np.uint8 and images[0].mask.shape == (48, 48)
    generated = load_images("synthetic", 3, size=48, seed=5)
    again = load_images("synthetic", 1, size=48, seed=5, start=2)
    np.testing.assert_array_equal(generated[2].image, again[0].image)  # index-addressed: disjoint ranges are disjoint
    on_disk = load_images(root, 3)
    np.testing.assert_array_equal(on_disk[0].mask, generated[0].mask)
    with pytest.raises(CalibrationError, match="no such file"):
        load_images(tmp_path / "nothing", 2)
    with pytest.raises(CalibrationError, match="at least one"):
        load_images("synthetic", 0)

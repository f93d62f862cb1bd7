"""``python -m bench.ops``: per-op and per-module CPU time of an exported model from the
onnxruntime profiler and OpenVINO's per-layer counters, its FLOP arithmetic checked against the
ONNX graph's own shapes, and its errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from bench.ops import (OUTSIDE, graph_modules, kernel_gflop, main, module_of, profile_onnxruntime,
                       read_ort_trace)
from runtime.errors import RuntimeInputError
from small_exports import small_export

ROOT = Path(__file__).resolve().parents[1]


def graph_conv_gflop(path: Path) -> float:
    """Conv FLOPs of an ONNX file from its own inferred shapes: 2 x output elements x the
    weight's MACs per output element."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*g.value_info, *g.output]}
    shapes.update({t.name: list(t.dims) for t in g.initializer})
    total = 0.0
    for node in g.node:
        if node.op_type == "Conv":
            total += 2.0 * np.prod(shapes[node.output[0]]) * np.prod(shapes[node.input[1]][1:])
    return total / 1e9


def test_module_of_reads_node_paths_and_the_graphs_name_map():
    assert module_of("/stages.0/blocks.1/attn/MatMul", 1) == "stages.0"
    assert module_of("/stages.0/blocks.1/attn/MatMul", 2) == "stages.0/blocks.1"
    assert module_of("/stages.0/blocks.1/attn/MatMul", 9) == "stages.0/blocks.1/attn"
    assert module_of("ReorderInput_token_12", 1) == OUTSIDE and module_of("/Conv", 1) == OUTSIDE
    names = {"relu_3": ["encoder", "stages_0"], "node_MatMul_7": ["decoder.1", "mlp"]}
    assert module_of("relu_3_nchwc", 2, names) == "encoder/stages_0"  # onnxruntime's layout rewrite
    assert module_of("node_MatMul_7/MatMulAddFusion", 1, names) == "decoder.1"  # a fusion of that node
    assert module_of("relu_4_nchwc", 1, names) == OUTSIDE


def test_graph_modules_from_both_exporters():
    """The dynamo export's name_scopes and the TorchScript export's node paths give the same
    top-level modules of the model, minus the export wrapper."""
    from train.models import build_model

    children = {name for name, _ in build_model("m2sformer", small=True).named_children()}
    for exporter in ("dynamo", "torchscript"):
        found = {parts[0].split(".")[0] for parts in graph_modules(small_export("m2sformer", exporter)).values() if parts}
        assert found and found <= children, (exporter, found, children)
        assert {"encoder", "decoder"} <= found


def test_kernel_flops_of_conv_matmul_and_attention():
    # a grouped 3x3 conv: 4 output channels over 2 input channels each, 8x8 output
    assert kernel_gflop("Conv", [[1, 4, 8, 8], [4, 2, 3, 3]], [1, 4, 8, 8]) * 1e9 == pytest.approx(2 * 256 * 18)
    assert kernel_gflop("Gemm", [[5, 7], [7, 3]], [5, 3]) * 1e9 == pytest.approx(2 * 5 * 3 * 7)
    # FusedMatMul with transposed A: A is (K, M) = (7, 5)
    assert kernel_gflop("FusedMatMul", [[2, 7, 5], [2, 7, 3]], [2, 5, 3]) * 1e9 == pytest.approx(2 * 2 * 5 * 3 * 7)
    # attention: QK^T (N x M x C) and AV (N x M x Cv) per batch item
    assert kernel_gflop("MultiHeadAttention", [[2, 6, 8], [2, 4, 8], [2, 4, 16]], [2, 6, 16]) * 1e9 == \
        pytest.approx(2 * 2 * 6 * 4 * (8 + 16))
    assert kernel_gflop("Relu", [[1, 4]], [1, 4]) is None
    assert kernel_gflop("Conv", [[1, 4, 8, 8]], [1, 4, 8, 8]) is None  # no weight shape


def contract_graph(path: Path) -> Path:
    """A hand-made model with the runtime's outputs: two convolutions whose channel counts
    (3 -> 16 -> 32) fit onnxruntime's blocked layout unpadded, a mean, a sigmoid."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
               for n, s in (("w1", (16, 3, 3, 3)), ("w2", (32, 16, 3, 3)))]
    nodes = [helper.make_node("Conv", ["image", "w1"], ["c1"], name="/block1/conv/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="/block1/act/Relu"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="/block2/conv/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["c2"], ["m"], name="/head/ReduceMean", axes=[1], keepdims=1),
             helper.make_node("Sigmoid", ["m"], ["prob"], name="/head/Sigmoid"),
             helper.make_node("ReduceMax", ["prob"], ["score"], name="/ReduceMax", axes=[2, 3], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1, 32, 32]),
                               helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_onnxruntime_profile_counts_the_graphs_flops_and_modules(tmp_path, capsys):
    """On a hand-made graph the trace's Conv FLOPs equal the graph's own, its groups add up to
    the run, the modules are the graph's, and the files follow the umask."""
    model = contract_graph(tmp_path / "two_convs.onnx")
    out = tmp_path / "ops"
    old = os.umask(0o027)
    try:
        assert main([str(model), "--rounds", "2", "--out", str(out), "--depth", "1"]) == 0
    finally:
        os.umask(old)
    printed = capsys.readouterr().out
    assert "op type" in printed and "module (depth 1)" in printed
    record = json.loads((out / "two_convs.ops.json").read_text())
    png = out / "two_convs.ops.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all((p.stat().st_mode & 0o777) == 0o640 for p in (png, out / "two_convs.ops.json"))
    assert record["backend"] == "onnxruntime" and record["rounds"] == 2
    conv = [k for k in record["kernels"] if k["op"] == "Conv"]
    assert len(conv) == 2 and sum(k["gflop"] for k in conv) == pytest.approx(graph_conv_gflop(model), rel=1e-9)
    for groups in (record["by_op"], record["by_module"]):
        assert sum(g["ms"] for g in groups) == pytest.approx(record["ms_per_call"], rel=1e-6)
        assert sum(g["share"] for g in groups) == pytest.approx(1.0, rel=1e-6)
    assert {g["key"] for g in record["by_module"]} - {OUTSIDE} == {"block1", "block2", "head"}


def test_onnxruntime_profile_of_a_small_model():
    """A real (dynamo) export: every module found is a top-level child of the model, and
    the Conv work the kernels did is at least the graph's (the blocked layout pads narrow
    layers' channels, never drops any)."""
    from train.models import build_model

    model = small_export("m2sformer")
    assert main([str(model), "--rounds", "1", "--no-files", "--top", "5"]) == 0
    kernels, _ = profile_onnxruntime(model, 1, None, None)
    assert sum(k.gflop for k in kernels if k.op == "Conv") >= graph_conv_gflop(model) * (1 - 1e-9)
    names = graph_modules(model)
    modules = {module_of(k.name, 1, names).split(".")[0] for k in kernels} - {OUTSIDE}
    children = {name for name, _ in build_model("m2sformer", small=True).named_children()}
    assert "encoder" in modules and modules <= children, (modules, children)
    inside = sum(k.ms for k in kernels if module_of(k.name, 1, names) != OUTSIDE)
    assert inside > 0.5 * sum(k.ms for k in kernels)  # most of the time is attributed to a module


def test_openvino_per_layer_counts(capsys):
    pytest.importorskip("openvino", reason="openvino is not installed (imlkit-runtime[cpu] brings it)")
    assert main([str(small_export("m2sformer")), "--backend", "openvino", "--rounds", "1", "--no-files"]) == 0
    printed = capsys.readouterr().out
    assert "openvino" in printed.splitlines()[0] and "Convolution" in printed


def test_openvino_bf16_profile_runs_bf16_kernels_and_is_filed_beside_the_fp32_one(tmp_path, capsys):
    """--precision bf16 profiles OpenVINO's BF16 kernels (their implementation names say so,
    the FP32 profile's never do) into its own tagged files; onnxruntime refuses it."""
    pytest.importorskip("openvino", reason="openvino is not installed (imlkit-runtime[cpu] brings it)")
    from runtime.machine import has_bf16

    if not has_bf16():
        pytest.skip("this CPU has no native BF16 (AVX-512 BF16, AMX or Arm BF16)")
    model, out = small_export("m2sformer"), tmp_path / "ops"
    stem = model.name[: -len(".onnx")]
    impls = {}
    for precision in ("fp32", "bf16"):
        assert main([str(model), "--backend", "openvino", "--precision", precision, "--rounds", "1",
                     "--out", str(out)]) == 0
        tag = "openvino" + ("-bf16" if precision == "bf16" else "")
        record = json.loads((out / f"{stem}.{tag}.ops.json").read_text())
        assert record["precision"] == precision and (out / f"{stem}.{tag}.ops.png").is_file()
        impls[precision] = {k["impl"] for k in record["kernels"]}
    assert "BF16" in capsys.readouterr().out
    assert any("bf16" in i for i in impls["bf16"]) and not any("bf16" in i for i in impls["fp32"]), impls
    with pytest.raises(SystemExit) as exit_:
        main([str(model), "--precision", "bf16", "--no-files"])
    assert exit_.value.code == 2 and "--backend openvino" in capsys.readouterr().err
    with pytest.raises(RuntimeInputError, match="precision bf16: onnxruntime"):
        profile_onnxruntime(model, 1, None, None, "bf16")


def test_a_trace_with_fewer_runs_than_asked_is_refused(tmp_path):
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps([{"cat": "Session", "name": "model_run", "ts": 0, "dur": 5}]))
    with pytest.raises(RuntimeInputError, match="1 runs recorded, expected 2"):
        read_ort_trace(trace, 2)


@pytest.mark.parametrize("content", [None, b"not an onnx file"])
def test_bad_model_is_one_line_and_writes_nothing(tmp_path, content):
    model = tmp_path / "m.onnx"
    if content is not None:
        model.write_bytes(content)
    out = tmp_path / "ops"
    proc = subprocess.run([sys.executable, "-m", "bench.ops", str(model), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: model ") and str(model) in lines[0]
    assert ("file not found" if content is None else "not a loadable ONNX model") in lines[0]
    assert not out.exists()


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    model = contract_graph(tmp_path / "two_convs.onnx")
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    assert main([str(model), "--rounds", "1", "--out", str(blocker / "ops")]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and "not_a_folder" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_folder", "two_convs.onnx"]

"""The TensorRT op-support lint (``export.check`` / ``export.trt_support``): every registered
model's export passes every target; planted graphs fail and name their node; each release
gets the facts up to it (DFT from 11.2, Swish from 11.0, dynamic Squeeze axes from 10.7, ...)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.check import main as check_main
from export import trt_support
from export.trt_support import FEATURES, TARGETS, check_graph, get_target, target_for_version
from export.verify import FORBIDDEN_OPS, lint
from train.models import list_models

try:
    from small_exports import small_export
except ImportError:  # tests/ used as a package
    from .small_exports import small_export

ROOT = Path(__file__).resolve().parents[1]
ALL = tuple(TARGETS)


@pytest.fixture(scope="module")
def seed_exports():
    """Every registered model exported (``export_model(..., small=True)``: same ops as full
    size) once per session, shared with the precision tests; only read here."""
    return {name: small_export(name) for name in list_models()}


def _graph(nodes, inputs, outputs, opset=17, initializers=()):
    g = helper.make_graph(nodes, "planted", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _const(name, values, dtype="int64"):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def dft_graph():
    return _graph([helper.make_node("DFT", ["x"], ["y"], name="planted_dft")],
                  [_vi("x", [1, 8, 1])], [_vi("y", ["n", "m", 2])])


def attention_graph(extra_inputs=(), opset=23):
    names = ["q", "k", "v", *extra_inputs]
    node = helper.make_node("Attention", names, ["y"], name="planted_attention")
    return _graph([node], [_vi(n, [1, 2, 4, 8]) for n in names if n], [_vi("y", [1, 2, 4, 8])], opset=opset)


def reduce_graph(constant_axes: bool):
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="planted_reduce")]
    inits = [_const("axes", [1])]
    if not constant_axes:  # axes computed from the input's shape at run time
        nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape_of_x"),
                 helper.make_node("Slice", ["s", "start", "end"], ["axes"], name="axes_from_shape")] + nodes
        inits = [_const("start", [1]), _const("end", [2])]
    return _graph(nodes, [_vi("x", [1, 2, 3])], [_vi("y", ["a", "b", "c"])], initializers=inits)


def test_every_seed_model_passes_every_target(seed_exports):
    assert seed_exports, "no registered models"
    for name, path in seed_exports.items():
        model = onnx.load(str(path))
        for target in ALL:
            report = check_graph(model, target)
            assert report.ok, (name, target, report.problems[:3])
            assert sum(report.op_counts.values()) == len(model.graph.node)


def test_cli_passes_a_seed_model_for_all_targets(seed_exports):
    path = seed_exports["m2sformer"]
    proc = subprocess.run([sys.executable, "-m", "export.check", str(path), "--target", "all", "--sources"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(f"vs {t} " in proc.stdout for t in ALL) and proc.stdout.count(": OK") == len(ALL)
    assert "operators.md" in proc.stdout


@pytest.mark.parametrize("target", ALL)
def test_dft_parses_from_11_2_only_naming_the_node(target):
    report = check_graph(dft_graph(), target)
    if target in ("trt11.2", "trt11.4", "trt11.5"):
        assert report.ok, report.problems
    else:
        assert any("planted_dft" in p and "DFT needs TensorRT 11.2+" in p for p in report.problems), report.problems


def test_check_cli_dft_per_release(tmp_path, capsys):
    path = tmp_path / "dft.onnx"
    onnx.save(dft_graph(), str(path))
    assert check_main([str(path), "--target", "trt11.0"]) == 1
    assert check_main([str(path), "--target", "trt11.2"]) == 0
    assert check_main([str(path), "--target", "trt10.3"]) == 1
    assert check_main([str(path), "--target", "trt11"]) == 0  # the newest 11.x
    out = capsys.readouterr().out
    assert out.count("planted_dft") == 2 and "vs trt11.5 " in out


def test_auto_takes_the_installed_release(tmp_path, capsys, monkeypatch):
    path = tmp_path / "dft.onnx"
    onnx.save(dft_graph(), str(path))
    monkeypatch.setattr(trt_support, "installed_version", lambda: "11.3.0.99")
    import export.check as check

    monkeypatch.setattr(check, "installed_version", lambda: "11.3.0.99")
    assert check_main([str(path), "--target", "auto"]) == 0
    assert "vs trt11.3 (TensorRT 11.3" in capsys.readouterr().out
    monkeypatch.setattr(check, "installed_version", lambda: None)
    assert check_main([str(path), "--target", "auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --target auto") and len(err.splitlines()) == 1


def test_opset23_attention_needs_10_14():
    model = attention_graph()
    report = check_graph(model, "trt10.3")
    assert any("planted_attention" in p and "10.14" in p for p in report.problems)
    assert any("opset 23" in p and "9-20" in p for p in report.problems)
    assert any("10.14" in p for p in check_graph(model, "trt10.12").problems)
    for target in ("trt10.16", "trt11.0", "trt11"):
        assert check_graph(model, target).ok, target
    # a release between the targets gets exactly its own table
    assert target_for_version("10.14.1.48").supports("Attention")
    assert not target_for_version("10.13.3").supports("Attention")
    assert not check_graph(model, target_for_version("10.13.3")).ok and check_graph(model, target_for_version("10.15")).ok
    # the kit-wide export lint still forbids the Attention op
    assert not lint(model).ok and "Attention" in FORBIDDEN_OPS


def test_attention_with_kv_cache_fails_even_where_attention_parses():
    report = check_graph(attention_graph(extra_inputs=("", "past_key")), "trt11")
    assert any("planted_attention" in p and "past_key" in p for p in report.problems)


@pytest.mark.parametrize("target", ALL)
def test_non_constant_reduce_axes_fail_constant_ones_pass(target):
    report = check_graph(reduce_graph(constant_axes=False), target)
    assert any("planted_reduce" in p and "axes" in p for p in report.problems), report.problems
    assert check_graph(reduce_graph(constant_axes=True), target).ok


@pytest.mark.parametrize("mode,coord,ok", [("linear", "half_pixel", True), ("cubic", "half_pixel", False),
                                           ("linear", "tf_crop_and_resize", False),
                                           ("nearest", "asymmetric", True)])
def test_resize_modes(mode, coord, ok):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="planted_resize", mode=mode,
                            coordinate_transformation_mode=coord)
    model = _graph([node], [_vi("x", [1, 3, 4, 4])], [_vi("y", [1, 3, 8, 8])],
                   initializers=[_const("scales", [1, 1, 2, 2], "float32")])
    for target in ALL:
        report = check_graph(model, target)
        assert report.ok == ok, (target, report.problems)
        if not ok:
            assert all("planted_resize" in p for p in report.problems)


def test_scatternd_reduction_and_nonzero_quantization_zero_point():
    scatter = helper.make_node("ScatterND", ["x", "idx", "upd"], ["y"], name="planted_scatter", reduction="add")
    model = _graph([scatter], [_vi("x", [4]), _vi("idx", [1, 1], TensorProto.INT64), _vi("upd", [1])], [_vi("y", [4])],
                   opset=18)
    assert any("planted_scatter" in p and "reduction" in p for p in check_graph(model, "trt10.16").problems)
    q = helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="planted_quant")
    dq = helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="planted_dequant")
    for zp, ok in ((0, True), (3, False)):
        model = _graph([q, dq], [_vi("x", [4])], [_vi("y", [4])],
                       initializers=[_const("s", 0.1, "float32"), _const("zp", zp, "int8")])
        report = check_graph(model, "trt11")
        assert report.ok == ok, report.problems
        if not ok:
            assert {p.split(":")[0] for p in report.problems} == {"node planted_quant", "node planted_dequant"}


def test_trt10_3_restrictions_lifted_later():
    einsum = helper.make_node("Einsum", ["a", "b"], ["y"], name="planted_einsum", equation="...ij,...jk->...ik")
    model = _graph([einsum], [_vi("a", [2, 3, 4]), _vi("b", [2, 4, 5])], [_vi("y", [2, 3, 5])])
    assert any("planted_einsum" in p for p in check_graph(model, "trt10.3").problems)
    assert check_graph(model, "trt10.16").ok
    pad = helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], name="planted_pad")
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Slice", ["s", "st", "en"], ["axes"]), pad]
    model = _graph(nodes, [_vi("x", [1, 2, 3])], [_vi("y", ["a", "b", "c"])], opset=18,
                   initializers=[_const("pads", [1, 1]), _const("st", [2]), _const("en", [3])])
    assert any("planted_pad" in p and "axes" in p for p in check_graph(model, "trt10.3").problems)
    assert check_graph(model, "trt10.16").ok


def test_unlisted_op_and_unsupported_type():
    node = helper.make_node("StringNormalizer", ["x"], ["y"], name="planted_strings")
    model = _graph([node], [_vi("x", [2], TensorProto.STRING)], [_vi("y", [2], TensorProto.STRING)], opset=17)
    problems = check_graph(model, "trt10.16").problems
    assert any("planted_strings" in p and "StringNormalizer" in p for p in problems)
    assert any("STRING" in p for p in problems)


def test_table_facts():
    assert set(TARGETS) == {"trt10.3", "trt10.8", "trt10.12", "trt10.16", "trt11.0", "trt11.2", "trt11.4", "trt11.5"}
    for t in TARGETS.values():
        assert not t.supports("Unique") and t.supports("Conv") and t.supports("LayerNormalization") and t.sources
    assert (get_target("trt10.3").opset_min, get_target("trt10.3").opset_max) == (9, 20)
    assert get_target("trt10.16").opset_max == get_target("trt11.4").opset_max == 24
    assert get_target("trt11.5").opset_max == 25 and get_target("trt11").name == "trt11.5"
    assert not get_target("trt10.3").supports("Attention") and get_target("trt10.16").supports("Attention")
    assert not get_target("trt10.16").supports("Swish") and get_target("trt11.0").supports("Swish")
    assert not get_target("trt11.0").supports("DFT") and get_target("trt11.2").supports("DFT")
    assert target_for_version("10.3.0.30").name == "trt10.3" and target_for_version("10.6").name == "trt10.6"
    assert target_for_version("10.16.1").name == "trt10.16" and target_for_version("11.4.0.106").name == "trt11.4"
    assert target_for_version("10.17").version == "10.17" and not target_for_version("10.17").supports("Swish")
    assert all(src for _, _, src in FEATURES) and all(any(s.endswith(src) for s in get_target("trt11.5").sources)
                                                      for _, _, src in FEATURES)
    with pytest.raises(KeyError):
        get_target("trt9")
    with pytest.raises(KeyError):
        target_for_version("8.6")


def _lint(nodes, inputs, outputs, target, opset=17, inits=()):
    return check_graph(_graph(nodes, inputs, outputs, opset=opset, initializers=inits), target)


def test_swish_from_11_0():
    node = helper.make_node("Swish", ["x"], ["y"], name="planted_swish")
    for target, ok in (("trt10.16", False), ("trt11.0", True)):
        report = check_graph(helper.make_model(helper.make_graph([node], "g", [_vi("x", [1, 4])], [_vi("y", [1, 4])]),
                                               opset_imports=[helper.make_opsetid("", 24)]), target)
        assert report.ok == ok, (target, report.problems)


def test_gridsample_5d_from_11_2():
    node = helper.make_node("GridSample", ["x", "g"], ["y"], name="planted_grid")
    five = dict(nodes=[node], inputs=[_vi("x", [1, 2, 4, 4, 4]), _vi("g", [1, 4, 4, 4, 3])],
                outputs=[_vi("y", [1, 2, 4, 4, 4])], opset=20)
    four = dict(nodes=[node], inputs=[_vi("x", [1, 2, 4, 4]), _vi("g", [1, 4, 4, 2])], outputs=[_vi("y", [1, 2, 4, 4])],
                opset=20)
    assert any("planted_grid" in p and "4-D" in p for p in _lint(target="trt11.0", **five).problems)
    assert _lint(target="trt11.2", **five).ok and _lint(target="trt10.3", **four).ok


def test_squeeze_axes_dynamic_from_10_7_and_absent_from_11_5():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Slice", ["s", "st", "en"], ["axes"]),
             helper.make_node("Squeeze", ["x", "axes"], ["y"], name="planted_squeeze")]
    inits = [_const("st", [0]), _const("en", [1])]
    dynamic = dict(nodes=nodes, inputs=[_vi("x", [1, 3])], outputs=[_vi("y", ["a"])], inits=inits)
    assert any("planted_squeeze" in p and "10.7" in p for p in _lint(target="trt10.3", **dynamic).problems)
    assert _lint(target="trt10.8", **dynamic).ok
    bare = dict(nodes=[helper.make_node("Squeeze", ["x"], ["y"], name="planted_bare")], inputs=[_vi("x", [1, 3])],
                outputs=[_vi("y", [3])])
    assert any("planted_bare" in p and "11.5" in p for p in _lint(target="trt11.4", **bare).problems)
    assert _lint(target="trt11.5", **bare).ok


def test_integer_pow_and_einsum_broadcasting_before_10_12():
    pow_int_base = dict(nodes=[helper.make_node("Pow", ["x", "e"], ["y"], name="planted_pow")],
                        inputs=[_vi("x", [4], TensorProto.INT32), _vi("e", [4])], outputs=[_vi("y", [4], TensorProto.INT32)])
    assert any("integer base" in p for p in _lint(target="trt10.8", **pow_int_base).problems)
    assert _lint(target="trt10.12", **pow_int_base).ok
    pow_int_exp = dict(nodes=[helper.make_node("Pow", ["x", "e"], ["y"], name="planted_pow")],
                       inputs=[_vi("x", [4]), _vi("e", [4], TensorProto.INT64)], outputs=[_vi("y", [4])])
    assert any("integer exponent" in p for p in _lint(target="trt10.3", **pow_int_exp).problems)
    assert _lint(target="trt10.8", **pow_int_exp).ok
    einsum = dict(nodes=[helper.make_node("Einsum", ["a", "b"], ["y"], name="planted_einsum", equation="bij,bjk->bik")],
                  inputs=[_vi("a", [1, 3, 4]), _vi("b", [5, 4, 2])], outputs=[_vi("y", [5, 3, 2])])
    assert any("broadcasting" in p for p in _lint(target="trt10.8", **einsum).problems)
    assert _lint(target="trt10.12", **einsum).ok


def test_attention_inputs_must_be_4d():
    names = ["q", "k", "v"]
    node = helper.make_node("Attention", names, ["y"], name="planted_attention", q_num_heads=2, kv_num_heads=2)
    report = _lint([node], [_vi(n, [1, 4, 16]) for n in names], [_vi("y", [1, 4, 16])], "trt11.4", opset=23)
    assert any("planted_attention" in p and "4-D" in p for p in report.problems)


def test_cli_exit_codes(tmp_path, capsys):
    planted = tmp_path / "dft.onnx"
    onnx.save(dft_graph(), str(planted))
    assert check_main([str(planted), "--target", "trt10.3"]) == 1
    out = capsys.readouterr().out
    assert "planted_dft" in out and "error:" in out
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    assert check_main([str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "bad.onnx" in err and len(err.splitlines()) == 1

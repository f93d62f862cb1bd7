"""The benchmark machinery's parts: round planning and percentiles, the papers' tables joined
with the model specs, trtexec JSON ingestion, artifact precision and the export cache key,
memory / footprint helpers, cost counting at any size, and M2SFormer's encoder swap."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from bench.artifacts import code_fingerprint, discover, onnx_precision
from bench.memory import _maxrss_mib, installed_mib
from bench.papers import M2SFORMER_TABLE6, QMANET_TABLE10, Row, Table, profile_points, table_rows
from bench.subject import Subject, meta_gmacs
from bench.timing import Plan, percentiles
from bench.trtexec_results import TrtexecError, parse_spec, read_trtexec
from train.models import build_model, get_spec, list_models


def test_rounds_fill_the_budget_within_limits():
    plan = Plan(target_s=2.0, min_rounds=3, max_rounds=10)
    assert plan.rounds(0.5) == 4
    assert plan.rounds(30.0) == 3  # slow model: the minimum
    assert plan.rounds(1e-4) == 10  # fast model: the maximum
    with pytest.raises(ValueError):
        Plan(1.0, 5, 2).rounds(1.0)


def test_percentiles_match_numpy():
    times = list(np.random.default_rng(0).gamma(2.0, 0.01, 37))
    got = percentiles(times)
    assert got == {f"p{p}": pytest.approx(np.percentile(times, p)) for p in (50, 90, 99)}
    assert got["p50"] <= got["p90"] <= got["p99"]


def test_table_rows_take_our_models_figures_from_the_spec():
    rows = {r.label: r for r in table_rows(M2SFORMER_TABLE6)}
    fig = next(f for f in get_spec("m2sformer").figures if f.source.startswith("M2SFormer paper, Table 6"))
    assert (rows["M2SFormer"].params_m, rows["M2SFormer"].gflops) == (fig.params_m, fig.gflops)
    assert rows["UNet"].params_m == 29.9 and rows["UNet"].model is None
    fake = Table("t", "t", "s", 256, (Row("X", model="not_a_model"),), spec_source="M2SFormer paper, Table 6")
    assert "not registered" in table_rows(fake)[0].note
    if "qmanet" in list_models():
        qma = {r.label: r for r in table_rows(QMANET_TABLE10)}["QMA-Net"]
        assert qma.params_m == get_spec("qmanet").figures[0].params_m


def test_profile_points_cover_paper_and_table_sizes():
    points = profile_points()
    for name in list_models():
        assert (name, get_spec(name).input_size) in points
    if "transforensics" in list_models():
        assert ("transforensics", 256) in points  # M2SFormer's Table 6 lists it at 256


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_trtexec_times_and_profile(tmp_path):
    lat = [1.0 + 0.1 * k for k in range(20)]
    times = _write(tmp_path / "m2sformer.fp16.times.json",
                   [{"startComputeMs": k, "latencyMs": v, "computeMs": v - 0.2} for k, v in enumerate(lat)])
    rec = read_trtexec(parse_spec(str(times), list_models()))
    assert rec["kind"] == "trtexec_times" and rec["model"] == "m2sformer" and rec["label"] == "fp16"
    assert rec["inferences"] == 20 and rec["latencyMs"]["p90"] == pytest.approx(np.percentile(lat, 90))
    prof = _write(tmp_path / "p.json", [{"count": 10}, {"name": "conv1", "timeMs": 5.0, "averageMs": 0.5,
                                                         "percentage": 62.5},
                                        {"name": "mm", "timeMs": 3.0, "averageMs": 0.3, "percentage": 37.5}])
    rec = read_trtexec(parse_spec(f"m2sformer:int8={prof}", list_models()))
    assert rec["kind"] == "trtexec_profile" and rec["label"] == "int8" and rec["total_ms"] == pytest.approx(0.8)
    assert [t["name"] for t in rec["top"]] == ["conv1", "mm"]


def test_trtexec_bad_files_name_the_file(tmp_path):
    bad = _write(tmp_path / "m2sformer.json", {"not": "a list"})
    with pytest.raises(TrtexecError, match=str(bad)):
        read_trtexec(parse_spec(str(bad), list_models()))
    with pytest.raises(TrtexecError, match="cannot tell the model"):
        parse_spec(str(tmp_path / "engine.json"), list_models())


def _graph(nodes, inits, dtype=TensorProto.FLOAT):
    x = helper.make_tensor_value_info("x", dtype, [1, 4])
    y = helper.make_tensor_value_info("y", dtype, [1, 4])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_precision_reads_the_graph(tmp_path):
    w32 = helper.make_tensor("w", TensorProto.FLOAT, [4], [1, 2, 3, 4])
    w16 = helper.make_tensor("w", TensorProto.FLOAT16, [4], np.ones(4, np.float16).view(np.uint16).tolist())
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zp = helper.make_tensor("z", TensorProto.INT8, [], [0])
    cases = {
        "fp32": _graph([helper.make_node("Add", ["x", "w"], ["y"])], [w32]),
        "fp16": _graph([helper.make_node("Add", ["x", "w"], ["y"])], [w16], TensorProto.FLOAT16),
        "int8": _graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], [scale, zp]),
    }
    for want, model in cases.items():
        path = tmp_path / f"{want}.onnx"
        onnx.save(model, str(path))
        assert onnx_precision(path) == want


def test_discover_reports_artifacts_without_sidecar(tmp_path):
    onnx.save(_graph([helper.make_node("Relu", ["x"], ["y"])], []), str(tmp_path / "m.onnx"))
    found, problems = discover(tmp_path, list_models())
    assert found == [] and len(problems) == 1 and "no sidecar" in problems[0] and "m.onnx" in problems[0]
    assert discover(tmp_path / "missing", list_models())[1] == [f"{tmp_path / 'missing'}: not a folder"]


def test_code_fingerprint_follows_sources(tmp_path):
    (tmp_path / "train").mkdir()
    src = tmp_path / "train" / "a.py"
    src.write_text("x = 1\n")
    first = code_fingerprint(tmp_path, ("train",))
    assert code_fingerprint(tmp_path, ("train",)) == first
    src.write_text("x = 2\n")
    assert code_fingerprint(tmp_path, ("train",)) != first


def test_installed_footprint_follows_requirements():
    rt = installed_mib(("onnxruntime",))
    assert {"onnxruntime", "numpy"} <= set(rt["distributions"])
    assert rt["total_mib"] == pytest.approx(sum(rt["distributions"].values())) and rt["total_mib"] > 1
    assert _maxrss_mib() > 10


def test_meta_count_matches_a_real_count_and_grows_with_size():
    from torch.utils.flop_counter import FlopCounterMode
    import torch

    from train.models.blocks.attention import set_fused_attention

    subject = Subject.paper("m2sformer", small=True)
    model = subject.build()
    set_fused_attention(model, False)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.predict(torch.rand(1, 3, subject.size, subject.size))
    assert meta_gmacs(subject) == pytest.approx(counter.get_total_flops() / 2e9)
    assert meta_gmacs(Subject("m2sformer", 2 * subject.size, small=True)) > 3 * meta_gmacs(subject)


@pytest.mark.parametrize("encoder, channels", [("mit_b0", [32, 64, 160, 256]), ("resnet18", [64, 128, 256, 512])])
def test_m2sformer_encoder_swap(encoder, channels):
    import torch

    model = build_model("m2sformer", small=True, encoder=encoder).eval()
    assert [m.in_channels for m in (r[0] for r in model.m2s.reduce)] == channels
    with torch.no_grad():
        prob, score = model.predict(torch.rand(1, 3, 64, 64))
    assert prob.shape == (1, 1, 64, 64) and score.shape == (1, 1)


def test_machine_peak_is_the_best_gemm_of_torch_onnxruntime_and_openvino():
    from bench.backends import openvino_installed
    from bench.peak import machine_peak

    peak = machine_peak((128, 256), calls=1, repeats=1)
    libraries = ("torch", "onnxruntime") + (("openvino",) if openvino_installed() else ())
    assert set(peak.samples) == {f"{lib} n={n}" for lib in libraries for n in (128, 256)}
    assert peak.gflops == max(peak.samples.values()) > 0 and peak.precision == "fp32"
    assert f"{peak.source} n={peak.n}" in peak.samples and peak.samples[f"{peak.source} n={peak.n}"] == peak.gflops
    with pytest.raises(ValueError, match="fp32, bf16"):
        machine_peak((128,), precision="fp16")


def test_bf16_peak_is_the_best_of_torch_and_openvino():
    from bench.backends import openvino_installed
    from bench.backends import bf16_unavailable
    from bench.peak import machine_peak

    why = bf16_unavailable()
    if why:
        with pytest.raises(ValueError, match="no BF16 peak"):
            machine_peak((128,), precision="bf16")
        pytest.skip(f"no BF16 peak to measure: {why}")
    peak = machine_peak((256,), calls=1, repeats=1, precision="bf16")
    libraries = ("torch",) + (("openvino",) if openvino_installed() else ())
    assert set(peak.samples) == {f"{lib} n=256" for lib in libraries}  # onnxruntime has no BF16 GEMM here
    assert peak.precision == "bf16" and peak.gflops == max(peak.samples.values()) > 0


def test_store_keeps_one_runtime_session_open(tmp_path):
    """ort then ort-prepost share one Predictor; any other backend closes it first, so its
    thread pool is gone (nothing references it) before the next session is built."""
    import gc
    import weakref

    from bench.artifacts import code_fingerprint
    from bench.backends import unavailable
    from bench.conftest import Store
    from small_exports import small_export

    if unavailable("ov"):
        pytest.skip(f"ov: {unavailable('ov')}")
    store = Store(["m2sformer"], ["ort", "ort-prepost", "ov"], True, [2], [64], Plan(0.1, 1, 2), 8.0, tmp_path, [],
                  [], code_fingerprint())
    subject = Subject.paper("m2sformer", small=True)
    store.latency[(subject, "ort")] = 0.01  # plans the calibration images without measuring the matmul peak
    path = small_export("m2sformer")
    ort = store.runner(subject, "ort", path)
    store.ran(ort, subject, 0.01)
    prepost = store.runner(subject, "ort-prepost", path)
    assert prepost.predictor is ort.predictor and prepost.warm_s == 0.01
    assert ort.info["settings"]["backend"] == "onnxruntime"
    gone = weakref.ref(ort.predictor)
    del ort, prepost
    ov = store.runner(subject, "ov", path)
    assert gone() is None, "the onnxruntime session outlived the switch to OpenVINO"
    assert ov.info["settings"]["backend"] == "openvino" and ov.info["settings"]["precision"] == "fp32"
    assert {"threads", "spin"} <= set(ov.info["settings"]) and ov.warm_s is None
    agree = store.agreement(subject, ov)  # against the onnxruntime FP32 outputs computed before ov opened
    assert agree["reference"] == "ort" and agree["images"] >= 1 and 0.0 <= agree["flipped"] <= 1.0
    gone = weakref.ref(ov.predictor)
    del ov
    store.runner(subject, "torch")
    gc.collect()
    assert gone() is None and store._session is None


def test_tune_arguments_keep_slow_models_short():
    from bench.artifacts import calibration_count, tune_arguments

    assert tune_arguments(None) == ["--n-images", "4"]
    assert tune_arguments(0.01) == ["--n-images", "4", "--rounds", "10", "--warmup", "2"]
    assert tune_arguments(4.0) == ["--n-images", "4", "--rounds", "5", "--warmup", "1"]
    assert tune_arguments(20.0) == ["--n-images", "1", "--rounds", "3", "--warmup", "1"]  # TransForensics-like
    assert [calibration_count(s) for s in (0.001, 6.0, 11.0, 60.0)] == [4, 3, 1, 1]

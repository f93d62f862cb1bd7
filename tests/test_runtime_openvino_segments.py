"""One ONNX graph run on OpenVINO as consecutive segments at their own precisions
(``runtime.backends.openvino_segments``): cut anywhere into FP32 pieces it gives the whole FP32
model's outputs; a BF16 head with an FP32 tail runs both precisions; the bytes a cut hands on
are counted exactly on a hand-built graph; bad ranges are refused in one line; and
``runtime.tune`` searches for such a split where plain BF16 misses the budget."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import Predictor
from runtime.backends import open_backend
from runtime.errors import BackendError

try:
    from small_exports import fresh_copy
except ImportError:  # tests/ used as a package
    from .small_exports import fresh_copy

ov = pytest.importorskip("openvino", reason="openvino is not installed (imlkit-runtime[openvino])")
from runtime.backends import openvino_backend, openvino_segments as seg  # noqa: E402
from runtime.backends.openvino_backend import shared_core  # noqa: E402
from runtime.tune import cut_points, tune  # noqa: E402

HAS_BF16 = "bf16" in openvino_backend.supported_precisions()
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU's OpenVINO plugin has no BF16 (AVX-512 BF16 / AMX)")
CONFIG = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return fresh_copy("m2sformer", tmp_path_factory.mktemp("segments"))


@pytest.fixture(scope="module")
def image(small):
    shape = [d.get_length() for d in shared_core().read_model(str(small)).input(0).get_partial_shape()]
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _whole(small, image, hint):
    compiled = shared_core().compile_model(str(small), "CPU", {**CONFIG, "INFERENCE_PRECISION_HINT": hint})
    result = compiled.create_infer_request().infer({0: image})
    return [np.array(result[k]) for k in range(len(result))]


@pytest.mark.parametrize("parts", [2, 7])
def test_fp32_pieces_give_the_whole_models_outputs(small, image, parts):
    core = shared_core()
    n = len(seg.compute_ops(seg.fold(core.read_model(str(small)))))
    runs = [(a, b, "f32") for a, b in seg.even_segments(n, parts)]
    segments, key = seg.partition(seg.fold(core.read_model(str(small))), runs)
    assert len(segments) == parts and all(s.inputs for s in segments)
    got = seg.SegmentChain(core, segments, key, CONFIG).infer(image)
    want = _whole(small, image, "f32")
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=2e-5, rtol=0)


@needs_bf16
def test_a_bf16_head_with_an_fp32_tail_runs_both_precisions(small, image):
    n = len(seg.compute_ops(seg.fold(shared_core().read_model(str(small)))))
    fp32 = open_backend(small, backend="openvino", precision="fp32").run(image)
    bf16 = open_backend(small, backend="openvino", precision="bf16").run(image)
    everything = open_backend(small, backend="openvino", precision="bf16", fp32_ranges=[(0, n)])
    mixed = open_backend(small, backend="openvino", precision="bf16", fp32_ranges=[(n // 2, n)])
    assert mixed.settings["segment_precisions"] == ["bf16", "f32"]
    assert mixed.settings["fp32_ranges"] == [[n // 2, n]] and mixed.settings["compute_ops"] == n
    assert everything.settings["segment_precisions"] == ["f32"]
    np.testing.assert_allclose(everything.run(image)["prob"], fp32["prob"], atol=2e-5, rtol=0)
    head = mixed.run(image)["prob"]
    assert np.abs(head - fp32["prob"]).max() > 1e-5  # the head really ran in BF16
    assert not np.array_equal(head, bf16["prob"])  # and the tail did not


def test_crossing_bytes_on_a_hand_built_graph():
    from openvino import opset13 as ops

    x = ops.parameter([1, 4], np.float32)
    r1 = ops.relu(x)  # compute op 0
    r2 = ops.relu(r1)  # 1
    out = ops.add(r1, r2)  # 2: reads r1 (made at 0) and r2 (made at 1)
    model = ov.Model([out], [x])
    # before op 0: the image; before 1: r1; before 2: r1 and r2; after the last: the output
    assert seg.crossing_bytes(model).tolist() == [16, 16, 32, 16]
    n, cuts = cut_points(model, parts=3)
    assert n == 3 and cuts == [1, 2]  # never 0: a cut there has no BF16 head


def test_ranges_are_checked_and_merged():
    assert seg.check_ranges([(5, 9), (0, 2), (8, 10)], 10) == [(0, 2), (5, 10)]
    assert seg.precision_runs(10, [(0, 2), (5, 10)], "bf16") == [(0, 2, "f32"), (2, 5, "bf16"), (5, 10, "f32")]
    for bad, message in [([(3, 3)], "not within"), ([(0, 11)], "not within"), ([(1,)], r"not a \[start, end\)")]:
        with pytest.raises(ValueError, match=message):
            seg.check_ranges(bad, 10)


def test_bad_fp32_ranges_are_one_line(small):
    with pytest.raises(BackendError, match=r"fp32 range \[4, 99999\) is not within the model's \d+ compute ops"):
        open_backend(small, backend="openvino", precision="bf16", fp32_ranges=[(4, 99999)])
    with pytest.raises(BackendError, match="precision fp32 runs all of it in FP32 already"):
        open_backend(small, backend="openvino", precision="fp32", fp32_ranges=[(0, 4)])
    with pytest.raises(BackendError, match="not onnxruntime's"):
        open_backend(small, backend="onnxruntime", fp32_ranges=[(0, 4)])


@needs_bf16
def test_tune_searches_for_an_fp32_tail_where_bf16_misses_the_budget(small):
    candidates = [("onnxruntime", "fp32"), ("openvino", "bf16")]
    first = tune(small, rounds=1, warmup=0, n_images=2, candidates=candidates, progress=False, write=False,
                 mixed=False)
    plain = first["candidates"][1]
    if plain["flipped"] == 0.0:
        pytest.skip("plain BF16 flips no mask pixel of this model on these images: no budget it misses")
    budget = plain["flipped"] / 2
    record = tune(small, rounds=1, warmup=0, n_images=2, candidates=candidates, progress=False, max_flip=budget)
    rows = record["candidates"]
    assert [(r["backend"], r["precision"]) for r in rows] == candidates + [("openvino", "bf16")] * 2
    assert rows[1]["ok"] is False
    for row, shape in zip(rows[2:], ("fp32-tail", "fp32-head")):
        search = row["search"]
        assert search["shape"] == shape
        probes = search["probes"]
        assert probes and all(p["cut"] in search["cuts"] for p in probes)
        fits = [p["cut"] for p in probes if p["flipped"] <= budget]
        misses = [p["cut"] for p in probes if p["flipped"] > budget]
        if search["cut"] is None:
            assert not fits and row["ok"] is False
            continue
        n = search["compute_ops"]
        if shape == "fp32-tail":  # the latest cut that fits, every later one probed misses
            assert search["cut"] == max(fits) and all(m > search["cut"] for m in misses)
            assert row["fp32_ranges"] == [[search["cut"], n]] and row["settings"]["segment_precisions"] == ["bf16", "f32"]
        else:  # the earliest cut that fits
            assert search["cut"] == min(fits) and all(m < search["cut"] for m in misses)
            assert row["fp32_ranges"] == [[0, search["cut"]]] and row["settings"]["segment_precisions"] == ["f32", "bf16"]
        # the timed child numbers the ops as the searching child did: the same split, the same flips
        assert row["flipped"] == next(p["flipped"] for p in probes if p["cut"] == search["cut"])
    chosen = min((r for r in rows if r["ok"]), key=lambda r: r["p50_s"])
    assert record["choice"].get("fp32_ranges") == chosen.get("fp32_ranges")
    pred = Predictor(small)  # backend="auto" reads the choice, split included
    assert pred.choice.source == "tune"
    assert pred.backend.settings.get("fp32_ranges") == record["choice"].get("fp32_ranges")

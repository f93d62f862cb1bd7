"""Predictor on a real (tiny) ONNX model: values against a numpy reference, errors, backends."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from runtime import Prediction, Predictor
from runtime.backends import open_backend
from runtime.backends.ort_backend import OrtBackend, choose_providers
from runtime.errors import BackendError, ModelError, RuntimeInputError, SidecarError
from runtime.preprocess import postprocess, preprocess
from runtime.sidecar import Sidecar, sidecar_path

try:
    from test_runtime_fixtures import (BIAS, MEAN, STD, WEIGHTS, build_tiny_onnx, make_model,
                                       make_sidecar, random_rgb, reference)
except ImportError:  # tests/ used as a package
    from .test_runtime_fixtures import (BIAS, MEAN, STD, WEIGHTS, build_tiny_onnx, make_model,
                                        make_sidecar, random_rgb, reference)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("model")


@pytest.fixture(scope="module")
def predictor(model_dir):
    return Predictor(make_model(model_dir))


@pytest.mark.parametrize("hw", [(37, 53), (32, 32), (2, 2), (101, 7)])
def test_prediction_matches_numpy_reference_at_original_size(predictor, hw):
    rgb = random_rgb(*hw, seed=hw[0])
    pred = predictor.predict(rgb)
    assert isinstance(pred, Prediction)
    assert pred.size == hw and pred.source == "<array>"
    assert pred.prob.shape == hw and pred.prob.dtype == np.float32
    assert pred.mask.shape == hw and pred.mask.dtype == bool
    ref_prob, ref_mask, ref_score = reference(rgb)
    np.testing.assert_allclose(pred.prob, ref_prob, atol=1e-5)
    assert abs(pred.score - ref_score) < 1e-5
    # The mask is the thresholded probability (ignore pixels sitting on the threshold).
    clear = np.abs(ref_prob - 0.5) > 1e-4
    np.testing.assert_array_equal(pred.mask[clear], ref_mask[clear])
    assert 0.0 < pred.tampered_fraction < 1.0


def test_model_size_input_needs_no_resize(predictor):
    rgb = random_rgb(32, 32, seed=9)
    x = (rgb / 255.0 - np.array(MEAN)) / np.array(STD)
    prob = 1 / (1 + np.exp(-(x @ WEIGHTS.astype(np.float64) + float(BIAS))))
    pred = predictor.predict(rgb)
    np.testing.assert_allclose(pred.prob, prob, atol=1e-5)
    assert abs(pred.score - prob.max()) < 1e-5


def test_path_pil_and_array_agree(predictor, tmp_path):
    rgb = random_rgb(37, 53, seed=7)
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    by_path = predictor.predict(path)
    by_str = predictor.predict(str(path))
    with Image.open(path) as img:
        by_pil = predictor.predict(img)
    by_array = predictor.predict(rgb)
    assert by_path.source == str(path)
    for other in (by_str, by_pil, by_array):
        np.testing.assert_array_equal(other.prob, by_path.prob)
        np.testing.assert_array_equal(other.mask, by_path.mask)
        assert other.score == by_path.score


def test_batch_of_mixed_sizes_equals_single_predictions(predictor):
    images = [random_rgb(37, 53, 1), random_rgb(20, 64, 2), random_rgb(32, 32, 3)]
    batch = predictor.predict_batch(images, batch_size=2)
    assert [p.size for p in batch] == [(37, 53), (20, 64), (32, 32)]
    for img, p in zip(images, batch):
        single = predictor.predict(img)
        np.testing.assert_allclose(p.prob, single.prob, atol=1e-6)
        assert abs(p.score - single.score) < 1e-6


def test_fixed_batch_one_model_runs_one_by_one(tmp_path, predictor):
    fixed = Predictor(make_model(tmp_path, batch=1))
    assert fixed.backend.fixed_batch == 1
    images = [random_rgb(37, 53, 4), random_rgb(16, 48, 5), random_rgb(40, 40, 6)]
    got = fixed.predict_batch(images)
    want = predictor.predict_batch(images)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.prob, w.prob, atol=1e-6)
        assert abs(g.score - w.score) < 1e-6


def test_threshold_override(model_dir, predictor):
    rgb = random_rgb(37, 53, 8)
    low = Predictor(model_dir / "tiny.onnx", threshold=0.0).predict(rgb)
    high = Predictor(model_dir / "tiny.onnx", threshold=1.0).predict(rgb)
    assert low.mask.all() and not high.mask.any()
    assert predictor.threshold == 0.5
    with pytest.raises(ValueError):
        Predictor(model_dir / "tiny.onnx", threshold=2.0)


def test_bad_image_in_batch_is_an_image_error(predictor, tmp_path):
    (tmp_path / "bad.png").write_text("nope")
    with pytest.raises(RuntimeInputError, match="bad.png"):
        predictor.predict_batch([random_rgb(8, 8), tmp_path / "bad.png"])


def test_providers(predictor):
    assert "CPUExecutionProvider" in predictor.providers
    assert choose_providers(["CPUExecutionProvider", "CUDAExecutionProvider",
                             "TensorrtExecutionProvider", "AzureExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(BackendError, match="CUDAExecutionProvider"):
        choose_providers(["CPUExecutionProvider"], ["CUDAExecutionProvider"])


def test_unavailable_provider_override(model_dir):
    with pytest.raises(BackendError, match="not available"):
        Predictor(model_dir / "tiny.onnx", providers=["NoSuchExecutionProvider"])
    p = Predictor(model_dir / "tiny.onnx", providers=["CPUExecutionProvider"])
    assert p.providers == ["CPUExecutionProvider"]


def test_backend_run_contract(model_dir):
    backend = open_backend(model_dir / "tiny.onnx")
    assert isinstance(backend, OrtBackend) and backend.input_name == "image"
    out = backend.run(np.zeros((3, 3, 32, 32), np.float32))
    assert set(out) == {"prob", "score"}
    assert out["prob"].shape == (3, 1, 32, 32) and out["score"].shape == (3, 1)
    assert out["prob"].dtype == np.float32 and out["score"].dtype == np.float32


def test_preprocess_and_postprocess_directly():
    rgb = random_rgb(10, 12)
    x = preprocess([rgb, rgb], (10, 12), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1 / 255)
    assert x.shape == (2, 3, 10, 12) and x.dtype == np.float32
    np.testing.assert_allclose(x[1, 2], rgb[:, :, 2] / 255.0, atol=1e-6)
    prob = np.array([[[0.0, 1.0], [1.0, 0.0]]], np.float32)
    full, mask = postprocess(prob, (6, 5), 0.5)
    assert full.shape == (6, 5) and full.dtype == np.float32 and mask.dtype == bool
    assert 0.0 <= full.min() and full.max() <= 1.0
    assert mask[0, -1] and not mask[0, 0]


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #


def test_missing_model(tmp_path):
    with pytest.raises(ModelError, match="file not found"):
        Predictor(tmp_path / "none.onnx")


def test_missing_sidecar_names_expected_path(tmp_path):
    path = build_tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(SidecarError) as e:
        Predictor(path)
    assert str(tmp_path / "m.onnx.json") in str(e.value) and "\n" not in str(e.value)


def test_non_onnx_file_is_a_model_error(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(os.urandom(4096))
    make_sidecar(path).save(sidecar_path(path))  # sidecar matches, so onnxruntime is reached
    with pytest.raises(ModelError) as e:
        Predictor(path)
    msg = str(e.value)
    assert str(path) in msg and "not a loadable ONNX model" in msg and "\n" not in msg


def test_stale_sidecar(tmp_path):
    path = make_model(tmp_path)
    build_tiny_onnx(path, size=(16, 16))  # artifact replaced after export
    with pytest.raises(ModelError) as e:
        Predictor(path)
    assert "stale sidecar" in str(e.value) and str(sidecar_path(path)) in str(e.value)


def test_invalid_sidecar_is_reported(tmp_path):
    path = make_model(tmp_path)
    d = json.loads(sidecar_path(path).read_text())
    d["version"] = 7
    sidecar_path(path).write_text(json.dumps(d))
    with pytest.raises(SidecarError, match="schema version 7, this runtime reads 1"):
        Predictor(path)


def test_sidecar_size_must_match_model_input(tmp_path):
    path = build_tiny_onnx(tmp_path / "m.onnx", size=(32, 32))
    make_sidecar(path, size=(64, 64)).save(sidecar_path(path))
    with pytest.raises(ModelError, match="input height is 32"):
        Predictor(path)


def test_model_without_contract_outputs(tmp_path):
    path = tmp_path / "m.onnx"
    build_tiny_onnx(path, outputs=("mask", "logits"))
    make_sidecar(path).save(sidecar_path(path))
    with pytest.raises(ModelError, match="missing output"):
        Predictor(path)


@pytest.mark.parametrize("suffix", [".engine", ".plan"])
def test_tensorrt_engines_are_not_in_this_build(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    path.write_bytes(b"\0" * 16)
    sc = make_sidecar(build_tiny_onnx(tmp_path / "m.onnx"))
    from runtime.sidecar import ArtifactInfo

    replace(sc, artifact=ArtifactInfo.from_file(path, "tensorrt")).save(sidecar_path(path))
    with pytest.raises(BackendError, match="TensorRT engines need the gpu extra"):
        Predictor(path)
    with pytest.raises(BackendError, match="TensorRT"):
        open_backend(path)


def test_format_mismatch(tmp_path):
    path = make_model(tmp_path)
    sc = Sidecar.load(sidecar_path(path))
    replace(sc, artifact=replace(sc.artifact, format="tensorrt")).save(sidecar_path(path))
    with pytest.raises(ModelError, match="tensorrt artifact"):
        Predictor(path)


def test_unknown_suffix():
    with pytest.raises(BackendError, match="unknown artifact type"):
        open_backend("model.tflite")


def test_providers_for_an_engine_are_refused_in_one_line(tmp_path):
    """onnxruntime providers mean nothing to a TensorRT engine: refused before TensorRT is
    even imported (so this holds on a machine without it), naming the file."""
    from runtime.errors import BackendError

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(BackendError) as err:
        open_backend(engine, providers=["CPUExecutionProvider"])
    assert str(engine) in str(err.value) and "CPUExecutionProvider" in str(err.value)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- #
# onnxruntime threads / session options; every deliberate error a RuntimeInputError
# --------------------------------------------------------------------------- #


def _session_options(p: Predictor):
    return p.backend._session.get_session_options()


def test_threads_set_onnxruntime_intra_op_threads(model_dir):
    path = make_model(model_dir)
    assert _session_options(Predictor(path, threads=3)).intra_op_num_threads == 3
    rgb = random_rgb(20, 30)
    np.testing.assert_allclose(Predictor(path, threads=1).predict(rgb).prob,
                               Predictor(path).predict(rgb).prob, atol=1e-6)


def test_session_options_are_used_as_given(model_dir):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    p = Predictor(make_model(model_dir), session_options=opts)
    got = _session_options(p)
    assert got.intra_op_num_threads == 2
    assert got.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert opts.intra_op_num_threads == 2  # the app's object is not changed


@pytest.mark.parametrize("kwargs, where", [
    ({"threshold": 2}, "threshold"),
    ({"threshold": float("nan")}, "threshold"),
    ({"threshold": "high"}, "threshold"),
    ({"threads": 0}, "threads"),
    ({"threads": 1.5}, "threads"),
    ({"threads": True}, "threads"),
    ({"session_options": {"intra_op_num_threads": 2}}, "session_options"),
    ({"threads": 2, "session_options": "set"}, "threads"),
])
def test_bad_arguments_are_one_line_runtime_input_errors(model_dir, kwargs, where):
    if kwargs.get("session_options") == "set":
        import onnxruntime as ort

        kwargs = {**kwargs, "session_options": ort.SessionOptions()}
    with pytest.raises(RuntimeInputError) as info:
        Predictor(make_model(model_dir), **kwargs)
    message = str(info.value)
    assert message.startswith(f"{where}: ") and "\n" not in message


def test_threads_for_an_engine_are_refused_in_one_line(tmp_path):
    with pytest.raises(BackendError, match="threads and spin configure CPU backends, not a TensorRT engine"):
        open_backend(tmp_path / "m.engine", threads=2)


def test_other_misuse_is_a_runtime_input_error(predictor):
    from runtime.overlay import overlay

    with pytest.raises(RuntimeInputError, match="batch_size"):
        predictor.predict_batch([random_rgb(4, 4)], batch_size=0)
    with pytest.raises(RuntimeInputError, match="differ in size"):
        overlay(random_rgb(4, 4), np.zeros((3, 4), bool))
    with pytest.raises(RuntimeInputError, match="expected a non-empty"):
        predictor.backend.run(np.zeros((0, 3, 32, 32), np.float32))
    with pytest.raises(RuntimeInputError):
        preprocess([], (32, 32), MEAN, STD)


def test_arrays_are_read_not_copied_and_left_unchanged(predictor):
    from runtime.io import load_image

    rgb = random_rgb(40, 30)
    before = rgb.copy()
    assert load_image(rgb, copy=False) is rgb
    assert load_image(rgb) is not rgb
    predictor.predict(rgb)
    np.testing.assert_array_equal(rgb, before)

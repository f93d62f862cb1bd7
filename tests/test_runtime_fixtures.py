"""Shared builders for the runtime tests: a tiny real ONNX model (no torch) and its sidecar.

The tiny model is ``prob = sigmoid(conv1x1(image))`` with distinct per-channel
weights (so a channel-order mistake changes the result) and
``score = max over (H, W) of prob``.  ``reference`` recomputes it in numpy.
Other runtime test modules import these helpers; the tests here check the
builders themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from runtime.sidecar import (
    ArtifactInfo,
    CheckpointInfo,
    InputSpec,
    ParityInfo,
    PreprocessSpec,
    Sidecar,
    contract_outputs,
    sidecar_path,
)

SIZE = (32, 32)
WEIGHTS = np.array([0.8, -0.5, 0.3], dtype=np.float32)
BIAS = np.float32(0.1)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def build_tiny_onnx(path: Path, size=SIZE, batch: int | str = "batch",
                    outputs=("prob", "score")) -> Path:
    """Write the tiny model (opset 17) to ``path``."""
    h, w = size
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, h, w])
    prob = helper.make_tensor_value_info(outputs[0], TensorProto.FLOAT, [batch, 1, h, w])
    score = helper.make_tensor_value_info(outputs[1], TensorProto.FLOAT, [batch, 1])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], WEIGHTS.tolist())
    bias = helper.make_tensor("b", TensorProto.FLOAT, [1], [float(BIAS)])
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], [outputs[0]]),
        helper.make_node("ReduceMax", [outputs[0]], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("Identity", ["pooled"], [outputs[1]]),
    ]
    graph = helper.make_graph(nodes, "tiny_iml", [x], [prob, score], initializer=[weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def make_sidecar(artifact: Path, size=SIZE, batch: int | str = "batch", **overrides) -> Sidecar:
    h, w = size
    fields = dict(
        model="tiny",
        variant={"width": 1},
        artifact=ArtifactInfo.from_file(artifact),
        input=InputSpec(shape=(batch, 3, h, w)),
        preprocess=PreprocessSpec(size=(h, w), mean=MEAN, std=STD),
        outputs=contract_outputs(batch, h, w),
        threshold=0.5,
        opset=17,
        exporter="tests",
        versions={"onnx": onnx.__version__},
        checkpoint=CheckpointInfo(),
        parity=ParityInfo(max_abs_diff=0.0, tolerance=1e-4, passed=True),
        extra={"note": "tiny"},
    )
    fields.update(overrides)
    return Sidecar(**fields)


def make_model(directory: Path, name: str = "tiny.onnx", size=SIZE,
               batch: int | str = "batch") -> Path:
    """Tiny ONNX model plus a matching sidecar in ``directory``; returns the model path."""
    path = build_tiny_onnx(Path(directory) / name, size=size, batch=batch)
    make_sidecar(path, size=size, batch=batch).save(sidecar_path(path))
    return path


def reference(rgb: np.ndarray, size=SIZE, threshold: float = 0.5):
    """Numpy/PIL re-computation of the tiny model's prediction at the original size."""
    h, w = size
    H, W = rgb.shape[:2]
    small = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR), dtype=np.float64)
    x = (small / 255.0 - np.array(MEAN)) / np.array(STD)
    logit = x @ WEIGHTS.astype(np.float64) + float(BIAS)
    prob_small = 1.0 / (1.0 + np.exp(-logit))
    score = prob_small.max()
    full = np.asarray(Image.fromarray(prob_small.astype(np.float32)).resize((W, H), Image.BILINEAR))
    return full.astype(np.float64), full > threshold, float(score)


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- #
# The builders are themselves checked, so a broken fixture cannot pass silently.
# --------------------------------------------------------------------------- #


def test_tiny_model_is_valid_onnx_with_contract_outputs(tmp_path):
    path = build_tiny_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    assert [o.name for o in model.graph.output] == ["prob", "score"]
    assert model.opset_import[0].version == 17


def test_reference_is_not_channel_symmetric():
    rgb = random_rgb(8, 8)
    a, _, _ = reference(rgb)
    b, _, _ = reference(rgb[:, :, ::-1].copy())
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.parametrize("batch", ["batch", 1])
def test_make_model_writes_loadable_sidecar(tmp_path, batch):
    path = make_model(tmp_path, batch=batch)
    sc = Sidecar.load(sidecar_path(path))
    assert sc.input.shape[0] == batch
    assert sc.artifact.file == "tiny.onnx"

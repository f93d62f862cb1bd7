"""Sidecar schema: round trip, strict validation with the file named, atomic save."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.errors import RuntimeInputError, SidecarError
from runtime.sidecar import SCHEMA, VERSION, Sidecar, sha256_file, sidecar_path

try:
    from test_runtime_fixtures import build_tiny_onnx, make_sidecar
except ImportError:  # tests/ used as a package
    from .test_runtime_fixtures import build_tiny_onnx, make_sidecar

KEYS = {"schema", "version", "model", "variant", "artifact", "input", "preprocess", "outputs",
        "threshold", "opset", "exporter", "versions", "checkpoint", "parity", "created", "extra"}


@pytest.fixture
def sidecar(tmp_path) -> Sidecar:
    return make_sidecar(build_tiny_onnx(tmp_path / "m.onnx"))


def write_json(path: Path, d) -> Path:
    path.write_text(json.dumps(d))
    return path


def test_sidecar_path_appends_json():
    assert sidecar_path("a/model.onnx") == Path("a/model.onnx.json")
    assert sidecar_path(Path("model.engine")) == Path("model.engine.json")
    assert sidecar_path("model.plan") != sidecar_path("model.onnx")


def test_round_trip_dict_and_file(tmp_path, sidecar):
    d = sidecar.to_dict()
    assert set(d) == KEYS
    assert d["schema"] == SCHEMA == "iml-sidecar" and d["version"] == VERSION == 1
    assert Sidecar.from_dict(d) == sidecar
    path = sidecar.save(tmp_path / "m.onnx.json")
    loaded = Sidecar.load(path)
    assert loaded == sidecar
    assert json.loads(path.read_text()) == d
    assert loaded.artifact.sha256 == sha256_file(tmp_path / "m.onnx")
    assert loaded.input.shape == ("batch", 3, 32, 32)


def test_parity_null_and_checkpoint_path_round_trip(tmp_path, sidecar):
    from dataclasses import replace

    from runtime.sidecar import CheckpointInfo

    sc = replace(sidecar, parity=None, opset=None,
                 checkpoint=CheckpointInfo(path="ckpt/best.pth", sha256="ab" * 32))
    assert Sidecar.load(sc.save(tmp_path / "x.json")) == sc


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path, sidecar):
    target = tmp_path / "out" / "m.onnx.json"
    target.parent.mkdir()
    sidecar.save(target)
    sidecar.save(target)  # overwrite
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.onnx.json"]


def test_save_refuses_invalid_sidecar_and_writes_nothing(tmp_path, sidecar):
    from dataclasses import replace

    bad = replace(sidecar, threshold=1.5)
    with pytest.raises(SidecarError, match="threshold"):
        bad.save(tmp_path / "bad.json")
    assert list(tmp_path.iterdir()) == [tmp_path / "m.onnx"]


def test_missing_key_names_file_and_key(tmp_path, sidecar):
    d = sidecar.to_dict()
    del d["preprocess"]
    path = write_json(tmp_path / "s.json", d)
    with pytest.raises(SidecarError) as e:
        Sidecar.load(path)
    msg = str(e.value)
    assert str(path) in msg and "preprocess" in msg and "missing" in msg
    assert "\n" not in msg


def test_missing_nested_key(tmp_path, sidecar):
    d = sidecar.to_dict()
    del d["preprocess"]["std"]
    with pytest.raises(SidecarError, match=r"missing key preprocess\.std"):
        Sidecar.load(write_json(tmp_path / "s.json", d))


def test_unknown_key_is_rejected(tmp_path, sidecar):
    d = sidecar.to_dict()
    d["colour"] = "rgb"
    path = write_json(tmp_path / "s.json", d)
    with pytest.raises(SidecarError, match=r"unknown key colour") as e:
        Sidecar.load(path)
    assert str(path) in str(e.value)


def test_newer_version_has_clear_message(tmp_path, sidecar):
    d = sidecar.to_dict()
    d["version"] = 2
    d["new_field"] = 1  # a newer schema may add keys: the version message wins
    path = write_json(tmp_path / "s.json", d)
    with pytest.raises(SidecarError) as e:
        Sidecar.load(path)
    assert str(e.value) == f"sidecar {path} has schema version 2, this runtime reads 1"


def test_wrong_schema_name(tmp_path, sidecar):
    d = sidecar.to_dict()
    d["schema"] = "something-else"
    with pytest.raises(SidecarError, match="schema"):
        Sidecar.load(write_json(tmp_path / "s.json", d))


def test_bad_json_names_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"schema": "iml-sidecar", ')
    with pytest.raises(SidecarError) as e:
        Sidecar.load(path)
    assert str(path) in str(e.value) and "not valid JSON" in str(e.value)
    assert "\n" not in str(e.value)


def test_nan_is_not_json(tmp_path, sidecar):
    text = json.dumps(sidecar.to_dict()).replace('"threshold": 0.5', '"threshold": NaN')
    path = tmp_path / "nan.json"
    path.write_text(text)
    with pytest.raises(SidecarError, match="NaN"):
        Sidecar.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(SidecarError, match="not found"):
        Sidecar.load(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d.update(model=3), "model must be a string"),
        (lambda d: d.update(version=True), "version must be 1, got True"),
        (lambda d: d.update(threshold="0.5"), "threshold must be a number"),
        (lambda d: d["input"].update(shape=[1, 3, 32]), "input.shape must have 4 entries"),
        (lambda d: d["input"].update(shape=[1, 1, 32, 32]), "input.shape[1] must be 3"),
        (lambda d: d["input"].update(layout="NHWC"), "input.layout"),
        (lambda d: d["input"].update(shape=[1, 3, 64, 32]), "differs from preprocess.size"),
        (lambda d: d["preprocess"].update(mean=[0.5, 0.5]), "preprocess.mean must have 3"),
        (lambda d: d["preprocess"].update(std=[1, 0, 1]), "preprocess.std[1] must be > 0, got 0"),
        (lambda d: d["artifact"].update(format="tflite"), "artifact.format"),
        (lambda d: d["artifact"].update(sha256="xyz"), "artifact.sha256 must be 64 lowercase hex digits, got 'xyz'"),
        (lambda d: d["artifact"].update(file="dir/m.onnx"), "artifact.file must be a bare file name"),
        (lambda d: d.update(outputs=d["outputs"][:1]), "lack contract output 'score'"),
        (lambda d: d["outputs"][1].update(name="logits"),
         "outputs[1].name is 'logits', expected one of 'prob', 'score'"),
        (lambda d: d["outputs"].append(dict(d["outputs"][0])), "outputs must have at most 2 entries, got 3"),
        (lambda d: d.update(outputs=[d["outputs"][0], d["outputs"][0]]), "lack contract output 'score'"),
        (lambda d: d["outputs"][1].update(shape=["batch", 1, 32, 32]), "outputs[1].shape must have 2 entries, got 4"),
        (lambda d: d["input"].update(shape=[0, 3, 32, 32]),
         "input.shape[0] must be a size >= 1 or the name of a dynamic axis"),
        (lambda d: d.update(threshold=float("nan")), "threshold must be finite, got nan"),
        (lambda d: d["variant"].update({1: "a"}), "variant keys must be strings"),
        (lambda d: d["extra"].update(pair=(1, 2)), "extra.pair is not plain JSON (a tuple)"),
        (lambda d: d.update(parity={}), "missing keys parity.reference, parity.max_abs_diff"),
        (lambda d: d.update(parity=3), "parity must be null or an object, got int"),
        (lambda d: d["checkpoint"].update(path=""), "checkpoint.path must be null or a non-empty string"),
        (lambda d: d.update(model=""), "model must not be empty"),
        (lambda d: d.update(threshold=1.5), "threshold must be <= 1, got 1.5"),
        (lambda d: d["outputs"][0].update(shape=["batch", 2, 32, 32]), "shape[1] must be 1"),
        (lambda d: d.update(versions={"torch": 2}), "versions.torch must be a string"),
        (lambda d: d["checkpoint"].update(sha256="none"), "checkpoint.sha256"),
        (lambda d: d["parity"].update(passed="yes"), "parity.passed"),
        (lambda d: d.update(created="yesterday"), "ISO 8601"),
        (lambda d: d.update(extra=[]), "extra must be an object"),
        (lambda d: d.update(opset=1.5), "opset must be an integer or null, got float"),
    ],
)
def test_field_validation(sidecar, mutate, fragment):
    d = json.loads(json.dumps(sidecar.to_dict()))
    mutate(d)
    with pytest.raises(SidecarError) as e:
        Sidecar.from_dict(d, source="side.json")
    assert fragment in str(e.value)
    assert str(e.value).startswith("sidecar side.json: ") and "\n" not in str(e.value)


def test_error_hierarchy():
    assert issubclass(SidecarError, RuntimeInputError)
    assert issubclass(SidecarError, ValueError)


def test_top_level_must_be_object(tmp_path):
    with pytest.raises(SidecarError, match="JSON object"):
        Sidecar.load(write_json(tmp_path / "list.json", [1, 2]))


def test_schema_is_valid_json_schema_and_matches_what_to_dict_writes(sidecar):
    """The schema file is a valid draft 2020-12 schema (jsonschema's metaschema check), it
    names every key ``to_dict`` writes and the contract outputs, and a written sidecar passes
    it when jsonschema validates it directly, without our wrapper."""
    import jsonschema

    from runtime.sidecar import CONTRACT_OUTPUTS, SCHEMA_FILE

    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    d = sidecar.to_dict()
    assert set(schema["required"]) == set(schema["properties"]) == set(d) == KEYS
    for part in ("artifact", "input", "preprocess", "checkpoint"):
        assert set(schema["properties"][part]["required"]) == set(d[part]), part
    assert schema["properties"]["schema"]["const"] == SCHEMA and schema["properties"]["version"]["const"] == VERSION
    assert schema["$defs"]["output"]["properties"]["name"]["enum"] == list(CONTRACT_OUTPUTS)
    jsonschema.validate(d, schema)
    d["input"]["layout"] = "NHWC"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(d, schema)


def test_integral_floats_are_integers_as_json_schema_says(sidecar):
    """JSON has one number type: 32.0 is an integer to JSON Schema; the Sidecar holds ints."""
    d = json.loads(json.dumps(sidecar.to_dict()))
    d["preprocess"]["size"] = [32.0, 32]
    d["input"]["shape"] = ["batch", 3, 32, 32.0]
    side = Sidecar.from_dict(d)
    assert side.preprocess.size == (32, 32) and side.input.shape == ("batch", 3, 32, 32)
    assert all(type(v) is int for v in (*side.preprocess.size, *side.input.shape[1:]))

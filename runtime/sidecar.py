"""The model sidecar: the one definition of the JSON file that travels with an artifact.

The exporter writes a sidecar through this module and the runtime validates it
on load, so both sides share a single schema.  A sidecar describes how to feed
the artifact (input tensor, preprocessing), what comes out (the "prob" and
"score" contract outputs), and where the artifact came from (checkpoint,
exporter, library versions, parity check against the torch reference).

File name: the sidecar of ``ARTIFACT`` is always ``ARTIFACT + ".json"``, e.g.
``model.onnx -> model.onnx.json`` and ``model.engine -> model.engine.json``, so an
ONNX file and an engine built from it never share a sidecar (see
:func:`sidecar_path`).

JSON keys (all required; ``to_dict`` always writes every one of them)::

    schema       "iml-sidecar"
    version      1
    model        registry name, e.g. "m2sformer"
    variant      {str: any}      build options, may be empty
    artifact     {"file": basename, "format": "onnx"|"tensorrt", "sha256": hex}
    input        {"name", "shape": [N, 3, H, W] (int or str for a dynamic dim),
                  "dtype": "float32", "layout": "NCHW", "color": "RGB"}
    preprocess   {"size": [H, W], "scale": float, "mean": [3 floats],
                  "std": [3 floats], "resize": "bilinear"}
    outputs      [{"name", "shape", "dtype", "meaning"}, ...], exactly the
                 contract outputs "prob" (N,1,H,W float32) and "score" (N,1 float32)
    threshold    float in [0, 1]
    opset        int or null
    exporter     str
    versions     {str: str}
    checkpoint   {"path": str or null, "sha256": hex or "random-init"}
    parity       null or {"reference": str, "max_abs_diff": float,
                          "tolerance": float, "passed": bool}
    created      ISO 8601 timestamp
    extra        {str: any}      free-form; a TensorRT engine's sidecar holds its build
                 info under extra["tensorrt"] (see :class:`TensorRTBuild`)

Unknown keys (at the top level or inside the fixed sub-objects) are errors.
Numbers must be finite: the file is strict JSON (no NaN / Infinity).

The rules live in one JSON Schema, ``sidecar.schema.json`` beside this module (draft 2020-12;
``python -m runtime.validate --schema`` prints it for apps in other languages), and the
jsonschema library applies them; this module adds what a schema does not say (strict JSON
values, input size against ``preprocess.size``, an ISO 8601 ``created``, an engine profile's
min <= opt <= max) and turns the first problem into one line naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from .atomic import atomic_write_bytes
from .errors import SidecarError, one_line

__all__ = [
    "SCHEMA",
    "VERSION",
    "CONTRACT_OUTPUTS",
    "Sidecar",
    "ArtifactInfo",
    "InputSpec",
    "PreprocessSpec",
    "OutputSpec",
    "CheckpointInfo",
    "ParityInfo",
    "TensorRTBuild",
    "SidecarError",
    "sidecar_path",
    "sha256_file",
]

SCHEMA = "iml-sidecar"
VERSION = 1
#: Output names every artifact must provide, with their rank.
CONTRACT_OUTPUTS = {"prob": 4, "score": 2}
RANDOM_INIT = "random-init"

Dim = int | str


def sidecar_path(artifact_path: str | os.PathLike) -> Path:
    """Sidecar location for an artifact: the artifact path with ``.json`` appended."""
    p = Path(artifact_path)
    return p.with_name(p.name + ".json")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- #
# Nested records
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class ArtifactInfo:
    file: str
    format: str
    sha256: str

    @classmethod
    def from_file(cls, path: str | os.PathLike, format: str | None = None) -> "ArtifactInfo":
        """Describe an artifact on disk (format guessed from the suffix if not given)."""
        p = Path(path)
        if format is None:
            format = "onnx" if p.suffix.lower() == ".onnx" else "tensorrt"
        return cls(file=p.name, format=format, sha256=sha256_file(p))


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[Dim, ...]
    name: str = "image"
    dtype: str = "float32"
    layout: str = "NCHW"
    color: str = "RGB"


@dataclass(frozen=True)
class PreprocessSpec:
    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 1.0 / 255.0
    resize: str = "bilinear"


@dataclass(frozen=True)
class OutputSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    meaning: str = ""


@dataclass(frozen=True)
class CheckpointInfo:
    path: str | None = None
    sha256: str = RANDOM_INIT


@dataclass(frozen=True)
class ParityInfo:
    max_abs_diff: float
    tolerance: float
    passed: bool
    reference: str = "torch"


def contract_outputs(batch: Dim = "batch", height: Dim = "height", width: Dim = "width") -> tuple[OutputSpec, ...]:
    """The two contract outputs with their standard meanings, for exporters."""
    return (
        OutputSpec("prob", (batch, 1, height, width), "float32",
                   "per-pixel tamper probability after sigmoid"),
        OutputSpec("score", (batch, 1), "float32", "image-level tamper score in [0, 1]"),
    )


# --------------------------------------------------------------------------- #
# The sidecar
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Sidecar:
    """Everything the runtime needs to know about one exported artifact."""

    model: str
    artifact: ArtifactInfo
    input: InputSpec
    preprocess: PreprocessSpec
    outputs: tuple[OutputSpec, ...] = field(default_factory=contract_outputs)
    variant: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5
    opset: int | None = None
    exporter: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    checkpoint: CheckpointInfo = field(default_factory=CheckpointInfo)
    parity: ParityInfo | None = None
    created: str = field(default_factory=_now_iso)
    extra: dict[str, Any] = field(default_factory=dict)

    SCHEMA = SCHEMA
    VERSION = VERSION

    # -- serialisation -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict with every key of the schema."""
        a, i, p, c = self.artifact, self.input, self.preprocess, self.checkpoint
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "model": self.model,
            "variant": dict(self.variant),
            "artifact": {"file": a.file, "format": a.format, "sha256": a.sha256},
            "input": {"name": i.name, "shape": list(i.shape), "dtype": i.dtype,
                      "layout": i.layout, "color": i.color},
            "preprocess": {"size": list(p.size), "scale": float(p.scale),
                           "mean": [float(v) for v in p.mean],
                           "std": [float(v) for v in p.std], "resize": p.resize},
            "outputs": [{"name": o.name, "shape": list(o.shape), "dtype": o.dtype,
                         "meaning": o.meaning} for o in self.outputs],
            "threshold": float(self.threshold),
            "opset": self.opset,
            "exporter": self.exporter,
            "versions": dict(self.versions),
            "checkpoint": {"path": c.path, "sha256": c.sha256},
            "parity": None if self.parity is None else {
                "reference": self.parity.reference,
                "max_abs_diff": float(self.parity.max_abs_diff),
                "tolerance": float(self.parity.tolerance),
                "passed": bool(self.parity.passed),
            },
            "created": self.created,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Any, source: str | os.PathLike | None = None) -> "Sidecar":
        """Validate a parsed sidecar and build it; ``source`` names the file in errors."""
        name = str(source) if source is not None else "<dict>"
        try:
            return _parse(d, name)
        except _Invalid as e:
            raise SidecarError(f"sidecar {name}: {e}") from None

    def validate(self) -> "Sidecar":
        """Check this object against the schema (what ``load`` would accept)."""
        return Sidecar.from_dict(self.to_dict(), source=f"<{self.model}>")

    def to_json(self) -> str:
        """The file's text (no validation: ``validate`` or ``save`` do that)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Validate, then write atomically (temp file in the same dir + os.replace)."""
        Sidecar.from_dict(self.to_dict(), source=path)
        return atomic_write_bytes(path, self.to_json().encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Sidecar":
        """Read and validate a sidecar file; every failure is a one-line SidecarError."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SidecarError(f"sidecar {path} not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SidecarError(f"sidecar {path}: cannot read ({one_line(e)})") from None
        try:
            d = json.loads(text, parse_constant=_reject_constant)
        except ValueError as e:
            raise SidecarError(f"sidecar {path}: not valid JSON ({one_line(e)})") from None
        return cls.from_dict(d, source=path)


# --------------------------------------------------------------------------- #
# Validation: the JSON Schema (sidecar.schema.json) checked by the jsonschema library,
# then the few checks across fields that a schema does not express
# --------------------------------------------------------------------------- #

#: The JSON Schema (draft 2020-12) of a sidecar, shipped beside this module so that apps in
#: other languages can validate sidecars too (``python -m runtime.validate --schema``).
SCHEMA_FILE = Path(__file__).with_name("sidecar.schema.json")


class _Invalid(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


@lru_cache(maxsize=None)
def _schema_document() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _validator(definition: str | None = None) -> Any:
    """A jsonschema validator for the whole sidecar, or for one of the schema's ``$defs``.
    jsonschema is imported here, not at module import, so ``import runtime`` stays cheap."""
    from jsonschema import Draft202012Validator

    doc = _schema_document()
    if definition is not None:  # the definition, resolved against the whole document
        doc = {"$schema": doc["$schema"], "$defs": doc["$defs"], "$ref": f"#/$defs/{definition}"}
    return Draft202012Validator(doc)


def _where(path: Any, prefix: str = "") -> str:
    """``preprocess.std[1]`` from a jsonschema path, ``prefix`` in front."""
    out = prefix
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _keys(keys: list[str], where: str) -> str:
    return ", ".join(f"{where}.{k}" if where else k for k in keys)


_TYPE_WORDS = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
               "object": "an object", "array": "a list", "null": "null"}


def _wanted(types: str | list[str]) -> str:
    """``an integer or null`` from a schema's ``type``."""
    return " or ".join(_TYPE_WORDS.get(t, t) for t in ([types] if isinstance(types, str) else types))


def _first_error(errors: Any) -> Any:
    """The error to report: the one highest up in the file, the first reported among those.
    A list that lacks an entry (``contains``) comes last: an entry's own error says why."""
    return min(errors, key=lambda e: (e.validator == "contains", len(e.absolute_path)), default=None)


def _describe(error: Any, prefix: str = "") -> str:
    """One sentence for a jsonschema ValidationError, naming the field as the file spells it."""
    kind, expected, value = error.validator, error.validator_value, error.instance
    where = _where(error.absolute_path, prefix)
    field_ = where or "top level"
    described = error.schema.get("description") if isinstance(error.schema, dict) else None
    if kind == "required":
        missing = [k for k in expected if k not in value]
        return f"missing key{'s' if len(missing) > 1 else ''} {_keys(missing, where)}"
    if kind == "additionalProperties":
        known = error.schema.get("properties", {})
        unknown = sorted(str(k) for k in value if k not in known)
        return f"unknown key{'s' if len(unknown) > 1 else ''} {_keys(unknown, where)}"
    if kind == "type":
        return f"{field_} must be {_wanted(expected)}, got {type(value).__name__}"
    if kind in ("minItems", "maxItems"):
        lo, hi = error.schema.get("minItems"), error.schema.get("maxItems")
        if lo is not None and lo == hi:
            return f"{field_} must have {lo} entries, got {len(value)}"
        bound = f"at least {lo}" if kind == "minItems" else f"at most {hi}"
        return f"{field_} must have {bound} entries, got {len(value)}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        return f"{field_} must be {sign} {expected:g}, got {value}"
    if kind == "minLength" and expected == 1:
        return f"{field_} must not be empty"
    if kind == "pattern":
        return f"{field_} must be {described or 'a string matching ' + expected}, got {value!r}"
    if kind == "enum":
        return f"{field_} is {value!r}, expected one of {', '.join(map(repr, expected))}"
    if kind == "const":
        return f"{field_} must be {expected!r}, got {value!r}"
    if kind == "contains":
        name = expected.get("properties", {}).get("name", {}).get("const") if isinstance(expected, dict) else None
        if name is not None:
            return f"{field_} lack contract output {name!r}"
    if kind in ("oneOf", "anyOf"):
        if described:
            return f"{field_} must be {described}, got {value!r}"
        # The alternatives the value's type rules out say nothing; of the others, the deepest.
        ruled_out = [e for e in error.context if e.validator == "type" and e.absolute_path == error.absolute_path]
        others = [e for e in error.context if e not in ruled_out]
        if others:
            return _describe(max(others, key=lambda e: len(e.absolute_path)), prefix)
        if ruled_out:
            wanted = " or ".join(_wanted(e.validator_value) for e in ruled_out)
            return f"{field_} must be {wanted}, got {type(value).__name__}"
    return f"{field_}: {' '.join(error.message.split())}"


def _check_schema(d: Any, definition: str | None = None, prefix: str = "") -> None:
    problem = _not_plain_json(d, prefix or "top level")
    if problem:
        raise _Invalid(problem)
    error = _first_error(_validator(definition).iter_errors(d))
    if error is not None:
        raise _Invalid(_describe(error, prefix))


def _not_plain_json(v: Any, where: str) -> str | None:
    """What keeps ``v`` from being written as strict JSON (the file has no NaN, no tuples,
    no numpy scalars, string keys only), or None. The schema cannot say it: jsonschema accepts
    any Python number and any Sequence."""
    if v is None or isinstance(v, (str, bool, int)):
        return None
    if isinstance(v, float):
        return None if math.isfinite(v) else f"{where} must be finite, got {v}"
    if isinstance(v, dict):
        for k, item in v.items():
            if not isinstance(k, str):
                return f"{where} keys must be strings, got {type(k).__name__}"
            problem = _not_plain_json(item, f"{where}.{k}" if where != "top level" else k)
            if problem:
                return problem
        return None
    if isinstance(v, list):
        return next((p for k, item in enumerate(v) if (p := _not_plain_json(item, f"{where}[{k}]"))), None)
    return f"{where} is not plain JSON (a {type(v).__name__})"


def _dims(shape: list[Dim]) -> tuple[Dim, ...]:
    return tuple(d if isinstance(d, str) else int(d) for d in shape)


def _parse(d: Any, name: str) -> Sidecar:
    if not isinstance(d, dict):
        raise _Invalid(f"top level must be a JSON object, got {type(d).__name__}")
    # Identify the schema and version before anything else, so a newer file
    # gets the version message rather than a list of unknown keys.
    if d.get("schema") != SCHEMA:
        raise _Invalid(f"schema is {d.get('schema')!r}, expected {SCHEMA!r}")
    if "version" not in d:
        raise _Invalid("missing key version")
    version = d["version"]
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise SidecarError(f"sidecar {name} has schema version {version}, "
                           f"this runtime reads {VERSION}")
    _check_schema(d)

    i, p, a, c, q = d["input"], d["preprocess"], d["artifact"], d["checkpoint"], d["parity"]
    ishape, size = _dims(i["shape"]), tuple(int(v) for v in p["size"])
    for k, axis in ((2, "height"), (3, "width")):
        if isinstance(ishape[k], int) and ishape[k] != size[k - 2]:
            raise _Invalid(f"input.shape {axis} {ishape[k]} differs from preprocess.size {list(size)}")
    try:
        datetime.fromisoformat(d["created"])
    except ValueError:
        raise _Invalid(f"created is not an ISO 8601 timestamp: {d['created']!r}") from None

    return Sidecar(
        model=d["model"],
        artifact=ArtifactInfo(a["file"], a["format"], a["sha256"]),
        input=InputSpec(shape=ishape, name=i["name"], dtype=i["dtype"], layout=i["layout"], color=i["color"]),
        preprocess=PreprocessSpec(size=size,  # type: ignore[arg-type]
                                  mean=tuple(float(v) for v in p["mean"]),  # type: ignore[arg-type]
                                  std=tuple(float(v) for v in p["std"]),  # type: ignore[arg-type]
                                  scale=float(p["scale"]), resize=p["resize"]),
        outputs=tuple(OutputSpec(o["name"], _dims(o["shape"]), o["dtype"], o["meaning"]) for o in d["outputs"]),
        variant=dict(d["variant"]),
        threshold=float(d["threshold"]),
        opset=None if d["opset"] is None else int(d["opset"]),
        exporter=d["exporter"],
        versions=dict(d["versions"]),
        checkpoint=CheckpointInfo(path=c["path"], sha256=c["sha256"]),
        parity=None if q is None else ParityInfo(max_abs_diff=float(q["max_abs_diff"]),
                                                 tolerance=float(q["tolerance"]), passed=q["passed"],
                                                 reference=q["reference"]),
        created=d["created"],
        extra=dict(d["extra"]),
    )


# --------------------------------------------------------------------------- #
# TensorRT build info (extra["tensorrt"] of an engine's sidecar)
# --------------------------------------------------------------------------- #

TENSORRT_EXTRA_KEY = "tensorrt"


@dataclass(frozen=True)
class TensorRTBuild:
    """How an engine was built, written by ``export.tensorrt`` into ``extra["tensorrt"]``.

    The runtime compares ``version`` and ``compute_capability`` (and ``gpu``) with the
    machine before it deserializes the engine: an engine runs only with the TensorRT
    version and the GPU architecture that built it.

    JSON keys (all required)::

        version             TensorRT version that built the engine, e.g. "10.3.0.30"
        gpu                 GPU name, e.g. "Orin (nvgpu)"
        compute_capability  "MAJOR.MINOR", e.g. "8.7"
        precision           "fp32" | "fp16" | "int8"
        strongly_typed      bool
        builder_flags       [str]   tensorrt.BuilderFlag names set
        profile             {"input": str, "min": [int], "opt": [int], "max": [int]}
        workspace_mib       int
        build_seconds       float
        fp32_layers         int     layers held in FP32 by precision constraints
        onnx                {"file": basename, "sha256": hex}   the ONNX it was built from
    """

    version: str
    gpu: str
    compute_capability: str
    precision: str
    strongly_typed: bool
    profile: dict[str, Any]
    workspace_mib: int
    build_seconds: float
    onnx_file: str
    onnx_sha256: str
    builder_flags: tuple[str, ...] = ()
    fp32_layers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "gpu": self.gpu, "compute_capability": self.compute_capability,
                "precision": self.precision, "strongly_typed": self.strongly_typed,
                "builder_flags": list(self.builder_flags), "profile": dict(self.profile),
                "workspace_mib": self.workspace_mib, "build_seconds": float(self.build_seconds),
                "fp32_layers": self.fp32_layers,
                "onnx": {"file": self.onnx_file, "sha256": self.onnx_sha256}}

    @classmethod
    def from_dict(cls, d: Any, source: str | os.PathLike | None = None) -> "TensorRTBuild":
        name = str(source) if source is not None else "<dict>"
        try:
            return _parse_trt(d)
        except _Invalid as e:
            raise SidecarError(f"sidecar {name}: {e}") from None

    @classmethod
    def of(cls, sidecar: Sidecar, source: str | os.PathLike | None = None) -> "TensorRTBuild | None":
        """The build info of ``sidecar`` (validated), or None when it has none."""
        d = sidecar.extra.get(TENSORRT_EXTRA_KEY)
        return None if d is None else cls.from_dict(d, source)


def _parse_trt(d: Any) -> TensorRTBuild:
    w = f"extra.{TENSORRT_EXTRA_KEY}"
    if not isinstance(d, dict):
        raise _Invalid(f"{w} must be an object, got {type(d).__name__}")
    _check_schema(d, "tensorrt_build", w)
    prof = d["profile"]
    dims = {k: [int(v) for v in prof[k]] for k in ("min", "opt", "max")}
    if not len(dims["min"]) == len(dims["opt"]) == len(dims["max"]):
        raise _Invalid(f"{w}.profile min/opt/max must have the same rank")
    if not all(a <= b <= c for a, b, c in zip(dims["min"], dims["opt"], dims["max"])):
        raise _Invalid(f"{w}.profile must have min <= opt <= max in every dimension")
    return TensorRTBuild(
        version=d["version"], gpu=d["gpu"], compute_capability=d["compute_capability"],
        precision=d["precision"], strongly_typed=d["strongly_typed"],
        profile={"input": prof["input"], **dims},
        workspace_mib=int(d["workspace_mib"]), build_seconds=float(d["build_seconds"]),
        onnx_file=d["onnx"]["file"], onnx_sha256=d["onnx"]["sha256"],
        builder_flags=tuple(d["builder_flags"]), fp32_layers=int(d["fp32_layers"]),
    )

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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

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
ARTIFACT_FORMATS = ("onnx", "tensorrt")
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
# Validation
# --------------------------------------------------------------------------- #


class _Invalid(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


_TOP_KEYS = ("schema", "version", "model", "variant", "artifact", "input", "preprocess",
             "outputs", "threshold", "opset", "exporter", "versions", "checkpoint",
             "parity", "created", "extra")


def _obj(v: Any, where: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(v, dict):
        raise _Invalid(f"{where} must be an object, got {type(v).__name__}")
    missing = [k for k in keys if k not in v]
    if missing:
        raise _Invalid(f"missing key{'s' if len(missing) > 1 else ''} "
                       + ", ".join(f"{where}.{k}" if where != "top level" else k for k in missing))
    unknown = sorted(str(k) for k in v if k not in keys)
    if unknown:
        raise _Invalid(f"unknown key{'s' if len(unknown) > 1 else ''} "
                       + ", ".join(f"{where}.{k}" if where != "top level" else k for k in unknown))
    return v


def _str(v: Any, where: str, *, allowed: tuple[str, ...] | None = None, empty_ok: bool = False) -> str:
    if not isinstance(v, str):
        raise _Invalid(f"{where} must be a string, got {type(v).__name__}")
    if not v and not empty_ok:
        raise _Invalid(f"{where} must not be empty")
    if allowed is not None and v not in allowed:
        raise _Invalid(f"{where} is {v!r}, expected one of {', '.join(map(repr, allowed))}")
    return v


def _int(v: Any, where: str, *, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Invalid(f"{where} must be an integer, got {type(v).__name__}")
    if minimum is not None and v < minimum:
        raise _Invalid(f"{where} must be >= {minimum}, got {v}")
    return v


def _float(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Invalid(f"{where} must be a number, got {type(v).__name__}")
    if not math.isfinite(v):
        raise _Invalid(f"{where} must be finite, got {v}")
    return float(v)


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise _Invalid(f"{where} must be true or false, got {type(v).__name__}")
    return v


def _list(v: Any, where: str, length: int | None = None) -> list:
    if not isinstance(v, list):
        raise _Invalid(f"{where} must be a list, got {type(v).__name__}")
    if length is not None and len(v) != length:
        raise _Invalid(f"{where} must have {length} entries, got {len(v)}")
    return v


def _sha(v: Any, where: str, *, random_ok: bool = False) -> str:
    s = _str(v, where)
    if random_ok and s == RANDOM_INIT:
        return s
    if len(s) != 64 or any(ch not in "0123456789abcdef" for ch in s):
        extra = f' or "{RANDOM_INIT}"' if random_ok else ""
        raise _Invalid(f"{where} must be 64 lowercase hex digits{extra}")
    return s


def _json_dict(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _Invalid(f"{where} must be an object, got {type(v).__name__}")
    for k in v:
        if not isinstance(k, str):
            raise _Invalid(f"{where} keys must be strings")
    try:
        json.dumps(v, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise _Invalid(f"{where} is not plain JSON ({one_line(e)})") from None
    return dict(v)


def _shape(v: Any, where: str, rank: int) -> tuple[Dim, ...]:
    dims = _list(v, where, rank)
    out: list[Dim] = []
    for k, d in enumerate(dims):
        if isinstance(d, str):
            out.append(_str(d, f"{where}[{k}]"))
        else:
            out.append(_int(d, f"{where}[{k}]", minimum=1))
    return tuple(out)


def _parse(d: Any, name: str) -> Sidecar:
    if not isinstance(d, dict):
        raise _Invalid(f"top level must be a JSON object, got {type(d).__name__}")
    # Identify the schema and version before anything else, so a newer file
    # gets the version message rather than a list of unknown keys.
    if d.get("schema") != SCHEMA:
        raise _Invalid(f"schema is {d.get('schema')!r}, expected {SCHEMA!r}")
    if "version" not in d:
        raise _Invalid("missing key version")
    version = _int(d["version"], "version", minimum=1)
    if version > VERSION:
        raise SidecarError(f"sidecar {name} has schema version {version}, "
                           f"this runtime reads {VERSION}")
    if version != VERSION:  # pragma: no cover - only version 1 exists so far
        raise _Invalid(f"schema version {version} is not supported")
    _obj(d, "top level", _TOP_KEYS)

    model = _str(d["model"], "model")
    variant = _json_dict(d["variant"], "variant")

    a = _obj(d["artifact"], "artifact", ("file", "format", "sha256"))
    afile = _str(a["file"], "artifact.file")
    if "/" in afile or "\\" in afile or afile in (".", ".."):
        raise _Invalid(f"artifact.file must be a bare file name, got {afile!r}")
    artifact = ArtifactInfo(afile, _str(a["format"], "artifact.format", allowed=ARTIFACT_FORMATS),
                            _sha(a["sha256"], "artifact.sha256"))

    i = _obj(d["input"], "input", ("name", "shape", "dtype", "layout", "color"))
    ishape = _shape(i["shape"], "input.shape", 4)
    if ishape[1] != 3:
        raise _Invalid(f"input.shape[1] must be 3 (RGB channels), got {ishape[1]!r}")
    inp = InputSpec(
        name=_str(i["name"], "input.name"),
        shape=ishape,
        dtype=_str(i["dtype"], "input.dtype", allowed=("float32",)),
        layout=_str(i["layout"], "input.layout", allowed=("NCHW",)),
        color=_str(i["color"], "input.color", allowed=("RGB",)),
    )

    p = _obj(d["preprocess"], "preprocess", ("size", "scale", "mean", "std", "resize"))
    size = tuple(_int(v, f"preprocess.size[{k}]", minimum=1)
                 for k, v in enumerate(_list(p["size"], "preprocess.size", 2)))
    mean = tuple(_float(v, f"preprocess.mean[{k}]")
                 for k, v in enumerate(_list(p["mean"], "preprocess.mean", 3)))
    std = tuple(_float(v, f"preprocess.std[{k}]")
                for k, v in enumerate(_list(p["std"], "preprocess.std", 3)))
    if any(s <= 0 for s in std):
        raise _Invalid(f"preprocess.std must be positive, got {list(std)}")
    scale = _float(p["scale"], "preprocess.scale")
    if scale <= 0:
        raise _Invalid(f"preprocess.scale must be positive, got {scale}")
    pre = PreprocessSpec(size=size, mean=mean, std=std, scale=scale,  # type: ignore[arg-type]
                         resize=_str(p["resize"], "preprocess.resize", allowed=("bilinear",)))
    for k, axis in ((2, "height"), (3, "width")):
        if isinstance(ishape[k], int) and ishape[k] != size[k - 2]:
            raise _Invalid(f"input.shape {axis} {ishape[k]} differs from preprocess.size {list(size)}")

    outs = _list(d["outputs"], "outputs")
    outputs: list[OutputSpec] = []
    for k, o in enumerate(outs):
        where = f"outputs[{k}]"
        o = _obj(o, where, ("name", "shape", "dtype", "meaning"))
        oname = _str(o["name"], f"{where}.name")
        if oname not in CONTRACT_OUTPUTS:
            raise _Invalid(f"{where}.name is {oname!r}, outputs must be exactly "
                           f"{', '.join(map(repr, CONTRACT_OUTPUTS))}")
        if any(x.name == oname for x in outputs):
            raise _Invalid(f"output {oname!r} is listed twice")
        oshape = _shape(o["shape"], f"{where}.shape", CONTRACT_OUTPUTS[oname])
        if oshape[1] != 1:
            raise _Invalid(f"{where}.shape[1] must be 1, got {oshape[1]!r}")
        outputs.append(OutputSpec(oname, oshape,
                                  _str(o["dtype"], f"{where}.dtype", allowed=("float32",)),
                                  _str(o["meaning"], f"{where}.meaning", empty_ok=True)))
    absent = [n for n in CONTRACT_OUTPUTS if not any(x.name == n for x in outputs)]
    if absent:
        raise _Invalid(f"outputs lack contract output{'s' if len(absent) > 1 else ''} "
                       + ", ".join(map(repr, absent)))

    threshold = _float(d["threshold"], "threshold")
    if not 0.0 <= threshold <= 1.0:
        raise _Invalid(f"threshold must be in [0, 1], got {threshold}")

    opset = None if d["opset"] is None else _int(d["opset"], "opset", minimum=1)
    exporter = _str(d["exporter"], "exporter", empty_ok=True)

    versions = _json_dict(d["versions"], "versions")
    for k, v in versions.items():
        _str(v, f"versions.{k}", empty_ok=True)

    c = _obj(d["checkpoint"], "checkpoint", ("path", "sha256"))
    checkpoint = CheckpointInfo(
        path=None if c["path"] is None else _str(c["path"], "checkpoint.path"),
        sha256=_sha(c["sha256"], "checkpoint.sha256", random_ok=True),
    )

    parity = None
    if d["parity"] is not None:
        q = _obj(d["parity"], "parity", ("reference", "max_abs_diff", "tolerance", "passed"))
        parity = ParityInfo(
            reference=_str(q["reference"], "parity.reference"),
            max_abs_diff=_float(q["max_abs_diff"], "parity.max_abs_diff"),
            tolerance=_float(q["tolerance"], "parity.tolerance"),
            passed=_bool(q["passed"], "parity.passed"),
        )

    created = _str(d["created"], "created")
    try:
        datetime.fromisoformat(created)
    except ValueError:
        raise _Invalid(f"created is not an ISO 8601 timestamp: {created!r}") from None

    return Sidecar(model=model, artifact=artifact, input=inp, preprocess=pre,
                   outputs=tuple(outputs), variant=variant, threshold=threshold, opset=opset,
                   exporter=exporter, versions=versions, checkpoint=checkpoint, parity=parity,
                   created=created, extra=_json_dict(d["extra"], "extra"))


# --------------------------------------------------------------------------- #
# TensorRT build info (extra["tensorrt"] of an engine's sidecar)
# --------------------------------------------------------------------------- #

TENSORRT_EXTRA_KEY = "tensorrt"
_TRT_KEYS = ("version", "gpu", "compute_capability", "precision", "strongly_typed", "builder_flags",
             "profile", "workspace_mib", "build_seconds", "fp32_layers", "onnx")


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
    d = _obj(d, w, _TRT_KEYS)
    cc = _str(d["compute_capability"], f"{w}.compute_capability")
    if not all(part.isdigit() for part in cc.split(".")) or cc.count(".") != 1:
        raise _Invalid(f"{w}.compute_capability must be MAJOR.MINOR, got {cc!r}")
    prof = _obj(d["profile"], f"{w}.profile", ("input", "min", "opt", "max"))
    dims = {k: [_int(v, f"{w}.profile.{k}[{i}]", minimum=1) for i, v in enumerate(_list(prof[k], f"{w}.profile.{k}"))]
            for k in ("min", "opt", "max")}
    if not len(dims["min"]) == len(dims["opt"]) == len(dims["max"]):
        raise _Invalid(f"{w}.profile min/opt/max must have the same rank")
    if not all(a <= b <= c for a, b, c in zip(dims["min"], dims["opt"], dims["max"])):
        raise _Invalid(f"{w}.profile must have min <= opt <= max in every dimension")
    onnx_ref = _obj(d["onnx"], f"{w}.onnx", ("file", "sha256"))
    flags = _list(d["builder_flags"], f"{w}.builder_flags")
    seconds = _float(d["build_seconds"], f"{w}.build_seconds")
    if seconds < 0:
        raise _Invalid(f"{w}.build_seconds must be >= 0, got {seconds}")
    return TensorRTBuild(
        version=_str(d["version"], f"{w}.version"),
        gpu=_str(d["gpu"], f"{w}.gpu"),
        compute_capability=cc,
        precision=_str(d["precision"], f"{w}.precision", allowed=("fp32", "fp16", "int8")),
        strongly_typed=_bool(d["strongly_typed"], f"{w}.strongly_typed"),
        profile={"input": _str(prof["input"], f"{w}.profile.input"), **dims},
        workspace_mib=_int(d["workspace_mib"], f"{w}.workspace_mib", minimum=1),
        build_seconds=seconds,
        onnx_file=_str(onnx_ref["file"], f"{w}.onnx.file"),
        onnx_sha256=_sha(onnx_ref["sha256"], f"{w}.onnx.sha256"),
        builder_flags=tuple(_str(f, f"{w}.builder_flags[{i}]") for i, f in enumerate(flags)),
        fp32_layers=_int(d["fp32_layers"], f"{w}.fp32_layers", minimum=0),
    )

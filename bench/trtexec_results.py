"""Reading the JSON files trtexec exports back into benchmark records.

trtexec (TensorRT's command-line runner, see ``engines/``) writes, on request:
- ``--exportTimes=F``: a list with one object per timed inference, with the intervals
  ``latencyMs`` (host-to-device + compute + device-to-host), ``computeMs``, ``h2dMs`` and
  ``d2hMs`` beside the start/end timestamps of enqueue, H2D, compute and D2H;
- ``--exportProfile=F``: a list whose first object is ``{"count": N}`` (profiled runs) and
  whose others are layers: ``name``, ``timeMs`` (total), ``averageMs``, ``medianMs``,
  ``percentage``.
Those are the fields of TensorRT 10.x and 11.x trtexec (``samples/common/sampleReporting.cpp``).

``parse_spec`` reads the report's ``--trtexec [MODEL[:LABEL]=]PATH`` argument; without a
model the file name must start with a registered model name (``m2sformer.fp16.times.json``:
model m2sformer, label "fp16").
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .timing import percentiles


class TrtexecError(ValueError):
    """A trtexec file that cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class TrtexecSpec:
    path: Path
    model: str
    label: str


def _label_from_name(name: str, model: str) -> str:
    stem = name[len(model):] if name.startswith(model) else name
    for suffix in (".json", ".times", ".profile", "-times", "-profile", "_times", "_profile"):
        stem = stem[: -len(suffix)] if stem.endswith(suffix) else stem
    return stem.strip("._-") or "engine"


def parse_spec(text: str, models: list[str]) -> TrtexecSpec:
    """``[MODEL[:LABEL]=]PATH`` -> TrtexecSpec (model inferred from the file name if absent)."""
    head, sep, tail = text.partition("=")
    if sep:
        model, _, label = head.partition(":")
        path = Path(tail)
    else:
        path, model, label = Path(text), "", ""
    if not model:
        matches = [m for m in models if path.name.startswith(m)]
        if not matches:
            raise TrtexecError(f"{path}: cannot tell the model from the file name; pass MODEL=PATH "
                               f"(models: {', '.join(models)})")
        model = max(matches, key=len)
    if model not in models:
        raise TrtexecError(f"{path}: unknown model {model!r} (models: {', '.join(models)})")
    return TrtexecSpec(path, model, label or _label_from_name(path.name, model))


def _load(path: Path) -> Any:
    if not path.is_file():
        raise TrtexecError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise TrtexecError(f"{path}: not JSON ({err})") from None


def read_trtexec(spec: TrtexecSpec) -> dict[str, Any]:
    """A record of kind "trtexec_times" or "trtexec_profile" from one exported file."""
    data = _load(spec.path)
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
        raise TrtexecError(f"{spec.path}: expected a non-empty list of objects (trtexec --exportTimes / --exportProfile)")
    base = {"model": spec.model, "label": spec.label, "file": str(spec.path)}
    if "count" in data[0] and all("name" in d for d in data[1:]):
        layers = data[1:]
        for d in layers:
            if not isinstance(d.get("averageMs"), (int, float)):
                raise TrtexecError(f"{spec.path}: layer {d.get('name')!r} has no numeric averageMs")
        top = sorted(layers, key=lambda d: d.get("averageMs", 0.0), reverse=True)[:10]
        return {"kind": "trtexec_profile", **base, "runs": data[0]["count"], "layers": len(layers),
                "total_ms": float(sum(d["averageMs"] for d in layers)),
                "top": [{"name": d["name"], "average_ms": float(d["averageMs"]),
                         "percentage": float(d.get("percentage", 0.0))} for d in top]}
    if all("latencyMs" in d for d in data):
        out = {"kind": "trtexec_times", **base, "inferences": len(data)}
        for key in ("latencyMs", "computeMs", "h2dMs", "d2hMs"):
            values = [d[key] for d in data if isinstance(d.get(key), (int, float))]
            if values:
                out[key] = {k: v for k, v in percentiles(values).items()}
        return out
    raise TrtexecError(f"{spec.path}: neither a trtexec times export (latencyMs per entry) "
                       "nor a profile export ({'count'} then layers)")

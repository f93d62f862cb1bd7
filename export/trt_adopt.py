"""``python -m export.tensorrt --adopt ENGINE --onnx MODEL.onnx [--plan plan.json]``: the sidecar
of an engine built elsewhere (trtexec on a Jetson, say), so the runtime loads it.

The runtime runs an engine only with its sidecar's ``extra.tensorrt`` (TensorRT version, GPU,
compute capability, profile). Here they come from the engine itself, on the GPU it runs on:
TensorRT's version, the GPU this machine has, the input's optimization-profile shapes (or
its static shape) and the output names read from the deserialized engine, the precision
from the engine inspector's layer information (trtexec builds with
``--profilingVerbosity=detailed``: any INT8 layer -> int8, else any FP16 layer -> fp16, else
fp32; without layer information the ONNX decides: Q/DQ -> int8, FP16 tensors -> fp16).
The preprocessing, threshold and contract come from the ONNX sidecar (its sha256 must match
the ONNX). ``--plan`` (``plan.json`` of ``python -m export.trtexec``) adds the builder flags
and workspace of the recipe; build time is unknown and written as 0.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runtime.errors import RuntimeInputError
from runtime.sidecar import Sidecar, TensorRTBuild, sha256_file, sidecar_path

from .check import load_graph
from .trt_plan import GraphPrecision, parse_version
from .trt_shapes import ShapeProfile


class AdoptError(RuntimeError):
    """An engine or ONNX that cannot be adopted; the message is one line."""


@dataclass(frozen=True)
class EngineFacts:
    """What a deserialized engine says about itself."""

    tensorrt: str
    input: str
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    outputs: tuple[str, ...]
    layer_precision: str | None  # from the inspector: int8 / fp16 / fp32, None without layer info


def precision_from_layers(info: str) -> str | None:
    """int8 / fp16 / fp32 from the inspector's JSON layer information, None when it has no
    per-layer detail (an engine built without detailed profiling verbosity)."""
    try:
        data = json.loads(info) if info else None
    except ValueError:
        return None
    layers = data.get("Layers") if isinstance(data, dict) else None
    if not layers or not all(isinstance(layer, dict) for layer in layers):
        return None  # names only (layer strings): no formats to read
    text = json.dumps(layers)
    if "Int8" in text or "INT8" in text:
        return "int8"
    if "Half" in text or "FP16" in text:
        return "fp16"
    return "fp32"


def read_engine(trt: Any, data: bytes, where: str) -> EngineFacts:
    """Deserialize ``data`` (needs the GPU) and read its I/O, profile and layer precisions."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise AdoptError(f"{where}: TensorRT {trt.__version__} could not deserialize it (another TensorRT "
                         "version or GPU built it, or it is not an engine)")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    if len(inputs) != 1:
        raise AdoptError(f"{where}: expected one input, found {len(inputs)}")
    shape = tuple(int(d) for d in engine.get_tensor_shape(inputs[0]))
    if min(shape) < 0:
        lo, opt, hi = (tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(inputs[0], 0))
    else:
        lo = opt = hi = shape
    inspector = engine.create_engine_inspector()
    info = inspector.get_engine_information(trt.LayerInformationFormat.JSON) if inspector is not None else ""
    return EngineFacts(trt.__version__, inputs[0], (lo, opt, hi), tuple(n for n in names if n not in inputs),
                       precision_from_layers(info))


def _load_plan(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise AdoptError(f"{path}: cannot read the trtexec plan ({getattr(err, 'strerror', None) or err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("plan"), dict):
        raise AdoptError(f"{path}: not a plan.json of python -m export.trtexec")
    return data


def adopted_build(facts: EngineFacts, gpu: Any, onnx_path: Path, graph: GraphPrecision,
                  plan: dict[str, Any]) -> TensorRTBuild:
    """The ``extra.tensorrt`` build info of an adopted engine."""
    p = plan.get("plan", {})
    precision = facts.layer_precision or ("int8" if graph.qdq_nodes else "fp16" if graph.float16_tensors else "fp32")
    major = parse_version(facts.tensorrt)[0]
    return TensorRTBuild(
        version=facts.tensorrt, gpu=gpu.name, compute_capability=gpu.compute_capability, precision=precision,
        strongly_typed=major >= 11 or bool(p.get("strongly_typed", False)),
        profile={"input": facts.input, "min": list(facts.profile[0]), "opt": list(facts.profile[1]),
                 "max": list(facts.profile[2])},
        workspace_mib=int(plan.get("workspace_mib") or 1024), build_seconds=0.0,
        onnx_file=onnx_path.name, onnx_sha256=sha256_file(onnx_path),
        builder_flags=tuple(p.get("builder_flags", ())), fp32_layers=len(p.get("fp32_nodes", ())))


def adopt_engine(engine_path: str | Path, onnx_path: str | Path, plan_path: str | Path | None = None, *,
                 device: int = 0, trt: Any = None, gpu: Any = None) -> Path:
    """Write ``ENGINE.json`` for ``engine_path`` built from ``onnx_path``; returns its path.
    ``trt`` / ``gpu`` default to the installed TensorRT and CUDA device ``device``."""
    from .tensorrt import _import_tensorrt, engine_sidecar

    engine_path, onnx_path = Path(engine_path), Path(onnx_path)
    if engine_path.suffix.lower() not in (".engine", ".plan"):
        raise AdoptError(f"{engine_path}: an engine must end in .engine or .plan (the runtime picks its backend by suffix)")
    if not engine_path.is_file():
        raise AdoptError(f"{engine_path}: file not found")
    try:
        model = load_graph(onnx_path)
    except ValueError as err:
        raise AdoptError(str(err)) from None
    if not sidecar_path(onnx_path).is_file():
        raise AdoptError(f"{onnx_path}: no sidecar {sidecar_path(onnx_path)} (export with python -m export.onnx)")
    onnx_side = Sidecar.load(sidecar_path(onnx_path))
    if onnx_side.artifact.sha256 != sha256_file(onnx_path):
        raise AdoptError(f"{onnx_path}: stale sidecar {sidecar_path(onnx_path)} (its sha256 is not this file's)")
    plan = _load_plan(plan_path)
    if plan.get("outputs", {}).get("engine") not in (None, engine_path.name):
        raise AdoptError(f"{plan_path}: the plan is for engine {plan['outputs']['engine']}, not {engine_path.name}")
    if trt is None:
        trt = _import_tensorrt()
    if gpu is None:
        from runtime.backends.tensorrt_backend import query_gpu

        try:
            gpu = query_gpu(device)
        except RuntimeInputError as err:
            raise AdoptError(str(err)) from None
    facts = read_engine(trt, engine_path.read_bytes(), str(engine_path))
    missing = [n for n in ("prob", "score") if n not in facts.outputs]
    if missing:
        raise AdoptError(f"{engine_path}: no output {missing[0]} (has {', '.join(facts.outputs) or 'none'})")
    if facts.input != onnx_side.input.name:
        raise AdoptError(f"{engine_path}: input {facts.input!r}, the ONNX sidecar's is {onnx_side.input.name!r}")
    build = adopted_build(facts, gpu, onnx_path, GraphPrecision.of(model), plan)
    profile = ShapeProfile(facts.input, *facts.profile)
    side = engine_sidecar(onnx_side, engine_path.name, sha256_file(engine_path), build, profile, None)
    side = replace(side, exporter=f"trtexec, adopted by export.tensorrt --adopt (TensorRT {build.version})")
    side.save(sidecar_path(engine_path))
    return sidecar_path(engine_path)


def main_adopt(engine: str, onnx: str, plan: str | None, device: int) -> int:
    from .tensorrt import BuildError

    try:
        path = adopt_engine(engine, onnx, plan, device=device)
    except (AdoptError, BuildError, RuntimeInputError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    build = TensorRTBuild.of(Sidecar.load(path))
    print(f"wrote {path}: TensorRT {build.version} on {build.gpu} (sm {build.compute_capability}), "
          f"{build.precision}, profile min {build.profile['min']} opt {build.profile['opt']} max {build.profile['max']}")
    return 0

"""``python -m export.triton --model NAME --onnx MODEL.onnx [--engine ENGINE] --out REPO``: a Triton
Inference Server model repository for the exported artifacts.

Writes ``REPO/NAME/config.pbtxt`` + ``REPO/NAME/1/model.onnx`` (platform ``onnxruntime_onnx``)
and, with ``--engine``, ``REPO/NAME_trt/config.pbtxt`` + ``REPO/NAME_trt/1/model.plan``
(``tensorrt_plan``). Each config declares the I/O read from the artifact ("image" in,
"prob" and "score" out), ``max_batch_size`` (the engine's profile maximum, or ``--max-batch``
for a dynamic-batch ONNX; 0 with no dynamic batching for a fixed-batch artifact), dynamic
batching and an instance group, and carries the preprocessing (mean, std, scale, size) as
parameters for clients. The artifact's sidecar is copied beside it. Each model folder is
assembled beside the repository and renamed into place.
"""
from __future__ import annotations

from train.cli import ArgumentParser, interrupts_in_one_line, one_line_errors, output_folder

interrupts_in_one_line(__name__)  # before the heavy imports

import json
import re
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from runtime.atomic import atomic_folder
from runtime.sidecar import Sidecar, TensorRTBuild, sha256_file, sidecar_path

from .check import load_graph
from .trt_shapes import graph_input

ONNX_TYPES = {TensorProto.FLOAT: "TYPE_FP32", TensorProto.FLOAT16: "TYPE_FP16", TensorProto.INT64: "TYPE_INT64",
              TensorProto.INT32: "TYPE_INT32", TensorProto.INT8: "TYPE_INT8", TensorProto.UINT8: "TYPE_UINT8",
              TensorProto.BOOL: "TYPE_BOOL"}
SIDECAR_TYPES = {"float32": "TYPE_FP32"}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class TritonError(ValueError):
    """An artifact that cannot be served as asked; the message is one line."""


class Enum(str):
    """A protobuf enum value: written without quotes."""


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str
    dims: tuple[int, ...]  # without the batch dim when max_batch_size > 0; -1 = variable


@dataclass(frozen=True)
class ModelConfig:
    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    instances: int = 1
    kind: str = "KIND_GPU"
    queue_delay_us: int = 100
    parameters: tuple[tuple[str, str], ...] = ()

    def as_message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"name": self.name, "platform": self.platform, "max_batch_size": self.max_batch_size,
                               "input": [_tensor(t) for t in self.inputs], "output": [_tensor(t) for t in self.outputs]}
        if self.max_batch_size > 0:
            preferred = sorted({b for b in (self.max_batch_size // 2, self.max_batch_size) if b > 1})
            msg["dynamic_batching"] = {"preferred_batch_size": preferred,
                                       "max_queue_delay_microseconds": self.queue_delay_us}
        msg["instance_group"] = [{"count": self.instances, "kind": Enum(self.kind)}]
        if self.parameters:
            msg["parameters"] = [{"key": k, "value": {"string_value": v}} for k, v in self.parameters]
        return msg

    def to_pbtxt(self) -> str:
        return to_pbtxt(self.as_message())


def _tensor(t: Tensor) -> dict[str, Any]:
    return {"name": t.name, "data_type": Enum(t.data_type), "dims": list(t.dims)}


def _scalar(v: Any) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string literal is a valid text-format string for these names


def to_pbtxt(msg: dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format for a nested dict (repeated messages as lists of dicts)."""
    pad = " " * indent
    lines = []
    for key, value in msg.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", to_pbtxt(value, indent + 2), f"{pad}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{pad}{key} [")
            for k, item in enumerate(value):
                lines += [f"{pad}  {{", to_pbtxt(item, indent + 4), f"{pad}  }}" + ("," if k < len(value) - 1 else "")]
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)


def _dims(dims: list[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in dims)


def _preprocess_parameters(side: Sidecar | None) -> tuple[tuple[str, str], ...]:
    if side is None:
        return ()
    p = side.preprocess
    return (("model", side.model), ("mean", ",".join(f"{v:g}" for v in p.mean)),
            ("std", ",".join(f"{v:g}" for v in p.std)), ("scale", f"{p.scale:.10g}"),
            ("size", f"{p.size[0]}x{p.size[1]}"), ("color", side.input.color), ("threshold", f"{side.threshold:g}"))


def onnx_config(name: str, model: onnx.ModelProto, side: Sidecar | None, *, max_batch: int = 8,
                instances: int = 1, kind: str = "KIND_GPU", queue_delay_us: int = 100) -> ModelConfig:
    """Config for an ONNX graph: dynamic batch -> ``max_batch``, fixed batch -> 0."""
    in_name, in_dims = graph_input(model)
    inits = {i.name for i in model.graph.initializer}
    value_infos = [i for i in model.graph.input if i.name not in inits] + list(model.graph.output)

    def tensor(v: onnx.ValueInfoProto, batched: bool) -> Tensor:
        elem = v.type.tensor_type.elem_type
        if elem not in ONNX_TYPES:
            raise TritonError(f"tensor {v.name} has type {TensorProto.DataType.Name(elem)}, not served here")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        return Tensor(v.name, ONNX_TYPES[elem], _dims(dims[1:] if batched else dims))

    batched = not isinstance(in_dims[0], int)
    io = {v.name: tensor(v, batched) for v in value_infos}
    return ModelConfig(name, "onnxruntime_onnx", max_batch if batched else 0, (io[in_name],),
                       tuple(io[o.name] for o in model.graph.output), instances, kind, queue_delay_us,
                       _preprocess_parameters(side))


def engine_config(name: str, side: Sidecar, *, instances: int = 1, queue_delay_us: int = 100) -> ModelConfig:
    """Config for a TensorRT engine from its sidecar: the profile's batch range decides."""
    build = TensorRTBuild.of(side)
    if build is None:
        raise TritonError("the engine's sidecar has no TensorRT build info (build it with python -m export.tensorrt)")
    lo, hi = build.profile["min"][0], build.profile["max"][0]
    batched = lo != hi or lo > 1 or isinstance(side.input.shape[0], str)
    max_batch = hi if batched else 0

    def tensor(name: str, dtype: str, shape: tuple) -> Tensor:
        return Tensor(name, SIDECAR_TYPES[dtype], _dims(list(shape[1:] if batched else shape)))

    inputs = (tensor(side.input.name, side.input.dtype, side.input.shape),)
    outputs = tuple(tensor(o.name, o.dtype, o.shape) for o in side.outputs)
    return ModelConfig(name, "tensorrt_plan", max_batch, inputs, outputs, instances, "KIND_GPU", queue_delay_us,
                       _preprocess_parameters(side))


def _install(repo: Path, config: ModelConfig, artifact: Path, filename: str, side: Sidecar | None) -> Path:
    with atomic_folder(repo / config.name) as tmp:
        (tmp / "1").mkdir()
        shutil.copyfile(artifact, tmp / "1" / filename)
        if side is not None:
            replace(side, artifact=replace(side.artifact, file=filename)).save(sidecar_path(tmp / "1" / filename))
        (tmp / "config.pbtxt").write_text(config.to_pbtxt() + "\n", encoding="utf-8")
    return repo / config.name


def write_repository(repo: str | Path, name: str, onnx_path: str | Path, engine: str | Path | None = None, *,
                     max_batch: int = 8, instances: int = 1, kind: str = "gpu",
                     queue_delay_us: int = 100) -> list[tuple[Path, ModelConfig]]:
    """Write the model folder(s) into ``repo``; returns each folder with its config."""
    if not _NAME.fullmatch(name):
        raise TritonError(f"model name {name!r}: use letters, digits, '_', '.', '-'")
    if max_batch < 1 or instances < 1 or queue_delay_us < 0:
        raise TritonError("--max-batch and --instances must be >= 1, --queue-delay-us >= 0")
    repo, onnx_path = Path(repo), Path(onnx_path)
    model = load_graph(onnx_path)
    side = Sidecar.load(sidecar_path(onnx_path)) if sidecar_path(onnx_path).is_file() else None
    kind_enum = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}[kind]
    configs = [(onnx_config(name, model, side, max_batch=max_batch, instances=instances, kind=kind_enum,
                            queue_delay_us=queue_delay_us), onnx_path, "model.onnx", side)]
    if engine is not None:
        engine = Path(engine)
        if not engine.is_file():
            raise TritonError(f"{engine}: engine not found")
        eside = Sidecar.load(sidecar_path(engine))
        if eside.artifact.sha256 != sha256_file(engine):
            raise TritonError(f"{engine}: stale sidecar {sidecar_path(engine)} (sha256 differs)")
        configs.append((engine_config(f"{name}_trt", eside, instances=instances, queue_delay_us=queue_delay_us),
                        engine, "model.plan", eside))
    return [(_install(repo, cfg, path, filename, sc), cfg) for cfg, path, filename, sc in configs]


@one_line_errors(ValueError, OSError)  # Ctrl-C: one line, exit 130; an unwritable --out: one line
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m export.triton", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Triton model name (the engine's model is NAME_trt)")
    parser.add_argument("--onnx", required=True, help="ONNX file (with its sidecar)")
    parser.add_argument("--engine", help="TensorRT engine built by python -m export.tensorrt")
    parser.add_argument("--out", required=True, help="model repository folder")
    parser.add_argument("--max-batch", type=int, default=8, help="max_batch_size of a dynamic-batch ONNX (default 8)")
    parser.add_argument("--instances", type=int, default=1, help="instances per GPU / CPU (default 1)")
    parser.add_argument("--kind", choices=("gpu", "cpu"), default="gpu", help="instance kind of the ONNX model")
    parser.add_argument("--queue-delay-us", type=int, default=100, help="dynamic batching queue delay (default 100)")
    args = parser.parse_args(argv)
    output_folder(args.out)
    try:
        written = write_repository(args.out, args.model, args.onnx, args.engine, max_batch=args.max_batch,
                                   instances=args.instances, kind=args.kind, queue_delay_us=args.queue_delay_us)
    except (TritonError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for folder, cfg in written:
        print(f"wrote {folder}/config.pbtxt and {folder}/1/ ({cfg.platform}, max_batch_size {cfg.max_batch_size})")
        if cfg.max_batch_size == 0:
            print(f"note: {cfg.name} has a fixed batch, so no dynamic batching "
                  "(export with --batch dynamic / build with a batch range to batch requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

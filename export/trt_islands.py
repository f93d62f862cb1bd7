"""FP32 islands on TensorRT 10.x weak typing: the one rule the Python builder
(``export.tensorrt``) and the trtexec recipe (``export.trtexec``) share, so both hold the
same layers and the same outputs in FP32.

Facts the rule rests on (TensorRT's ONNX parser and trtexec sources):

- The parser names the first layer it makes for a node after the node (an unnamed node:
  ``node_of_<first output>``); later layers of the same node get ``NAME_<n>`` with one
  counter for the whole network, so their names cannot be known before parsing. Each
  layer's metadata reads ``[ONNX Layer: NAME]``, or ``[ONNX Layer: NAME | Local Function:
  F]`` inside an ONNX local function.
- trtexec's ``--layerPrecisions`` / ``--layerOutputTypes`` match layer names exactly (its
  only pattern is one ``*`` wildcard, which would also catch other nodes that share a
  prefix, as PyTorch's ``/blk/Add`` and ``/blk/Add_1`` do); an exact match sets the
  layer's precision and, with one type given, every output's type.
- trtexec splits those lists on ``,`` and each ``NAME:TYPE`` pair on its last ``:`` (a
  ``:`` inside a name is fine); a name with a ``'`` throws unless the quotes pair up as
  trtexec's quoting, so names with ``,`` or ``'`` cannot be carried.

The rule: an island is an ONNX node name; the layer named exactly like it (its first
layer) is held in FP32, precision and every output. Nodes whose outputs are not all
floating point (shape arithmetic, Constant) are dropped first, because an exact match would
force their integer outputs to FP32. Later layers of an island node (``NAME_<n>``) are held
by neither path.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import onnx
import onnx.shape_inference
from onnx import TensorProto

from runtime.sidecar import Sidecar

from .trt_plan import PlanError

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE})
TRTEXEC_BAD_CHARS = (",", "'")
_METADATA = re.compile(r"\[ONNX Layer: (.*?)(?: \| [^\]]*)?\]")


def parser_layer_name(node: onnx.NodeProto) -> str:
    """The name TensorRT's ONNX parser gives the first layer of ``node``."""
    if not node.name and node.output:
        return f"node_of_{node.output[0]}"
    return node.name


def metadata_node(metadata: str | None) -> str | None:
    """The ONNX node named in a layer's metadata (``[ONNX Layer: X]``, also with
    ``| Local Function: F`` or other ``|`` properties), else None."""
    m = _METADATA.search(metadata or "")
    return m.group(1) if m else None


@dataclass(frozen=True)
class IslandLayers:
    """The layers both paths hold in FP32, and the island nodes left out (with why)."""

    layers: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...] = ()

    def notes(self) -> list[str]:
        if not self.dropped:
            return []
        name, why = self.dropped[0]
        return [f"{len(self.dropped)} FP32 island node(s) left out ({why}), e.g. {name}"]


def _types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph inference rejects: the declared types only
        inferred = model
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.output) + list(g.value_info)}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def island_layers(model: onnx.ModelProto, nodes: tuple[str, ...] | list[str]) -> IslandLayers:
    """Apply the rule to island ``nodes`` of ``model`` (names not in the graph: PlanError)."""
    by_name = {n.name: n for n in model.graph.node}
    missing = [n for n in nodes if n not in by_name]
    if missing:
        raise PlanError(f"FP32 island node {missing[0]!r} is not in the graph ({len(missing)} unknown)")
    types = _types(model)
    kept: list[str] = []
    dropped: list[tuple[str, str]] = []
    for name in dict.fromkeys(nodes):
        node = by_name[name]
        outs = [o for o in node.output if o]
        if node.op_type == "Constant":
            dropped.append((name, "Constant nodes make no layer"))
        elif any(types.get(o, TensorProto.UNDEFINED) not in FLOAT_TYPES for o in outs):
            dropped.append((name, "outputs not all floating point"))
        else:
            kept.append(parser_layer_name(node))
    return IslandLayers(tuple(kept), tuple(dropped))


def int8_islands(side: Sidecar) -> tuple[str, ...]:
    """The island nodes ``export.quantize`` left in float (``extra.precision.unquantized_islands``
    of a Q/DQ ONNX's sidecar), the FP32 islands of a 10.x weakly typed int8 build."""
    details = side.extra.get("precision")
    names = details.get("unquantized_islands") if isinstance(details, dict) else None
    return tuple(n for n in names if isinstance(n, str) and n) if isinstance(names, list) else ()


def check_trtexec_names(names: tuple[str, ...] | list[str]) -> None:
    """PlanError for a name trtexec's layer lists cannot carry."""
    for name in names:
        bad = [c for c in TRTEXEC_BAD_CHARS if c in name]
        if bad:
            raise PlanError(f"node name {name!r} has {bad[0]!r}, which trtexec's --layerPrecisions cannot carry "
                            "(it splits on ',' and takes \"'\" as quoting); rename the node")


def trtexec_island_args(layers: tuple[str, ...] | list[str]) -> list[str]:
    """``--layerPrecisions`` and ``--layerOutputTypes`` holding ``layers`` in FP32 (one type:
    trtexec applies it to every output of the layer)."""
    if not layers:
        return []
    check_trtexec_names(layers)
    spec = ",".join(f"{n}:fp32" for n in layers)
    return [f"--layerPrecisions={spec}", f"--layerOutputTypes={spec}"]


def constrain_layers(trt, network, layers: tuple[str, ...] | list[str]) -> tuple[int, list[str]]:
    """The builder's side of the rule on a parsed TensorRT 10.x network: every layer whose
    name is in ``layers`` gets FP32 precision and FP32 on every output, as trtexec does.
    Returns (layers constrained, island layers not found: fused, folded or renamed)."""
    wanted = set(layers)
    seen: set[str] = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name not in wanted:
            continue
        seen.add(layer.name)
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
    return len(seen), [n for n in layers if n not in seen]

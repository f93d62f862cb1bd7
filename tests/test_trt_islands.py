"""FP32 islands (``export.trt_islands``): the Python builder and the trtexec recipe hold the
same layers and outputs on a network named the way TensorRT's ONNX parser names layers;
trtexec's list syntax (split on ',' and the last ':', "'" as quoting) as its sources parse it;
the 10.x int8 recipe keeps the islands ``export.quantize`` left in float."""
import json
import shlex
from dataclasses import dataclass, field, replace

import onnx
import pytest
from onnx import TensorProto, helper

from export.recipes import load_recipes
from export.tensorrt import layer_node
from export.trt_islands import (check_trtexec_names, constrain_layers, int8_islands, island_layers, metadata_node,
                                parser_layer_name, trtexec_island_args)
from export.trt_plan import PlanError
from export.trtexec import main as trtexec_main
from export.trtexec import plan_job
from runtime.sidecar import ArtifactInfo, Sidecar, sidecar_path

try:
    from test_runtime_fixtures import make_model
except ImportError:  # tests/ used as a package
    from .test_runtime_fixtures import make_model


# --------------------------------------------------------------------------- a parsed network


@dataclass
class ParsedLayer:
    """A layer as TensorRT's ONNX parser leaves it: the node's name for its first layer,
    NAME_<counter> for later ones, metadata naming the node."""

    name: str
    metadata: str
    num_outputs: int = 1
    precision: object = None
    outputs: dict = field(default_factory=dict)

    def set_output_type(self, j, dtype):
        assert 0 <= j < self.num_outputs
        self.outputs[j] = dtype


class ParsedNetwork:
    def __init__(self, layers):
        self.layers = layers

    @property
    def num_layers(self):
        return len(self.layers)

    def get_layer(self, i):
        return self.layers[i]


class Dtypes:
    float32 = "float32"


def parsed(spec):
    """[(node, layers, outputs of each)] -> layers named as the parser names them."""
    counter, layers = 0, []
    for node, count, outputs in spec:
        for k in range(count):
            name = node if k == 0 else f"{node}_{counter}"
            counter += k > 0
            layers.append(ParsedLayer(name, f"[ONNX Layer: {node}]", outputs))
    return layers


def trtexec_layer_spec(flag_value):
    """trtexec's reading of --layerPrecisions / --layerOutputTypes (sampleOptions.cpp:
    split on ',', then on the last ':'; a name in "'" quotes is unquoted; any other "'" count throws)."""
    out = {}
    for item in flag_value.split(","):
        quotes = item.split("'")
        if len(quotes) not in (1, 3):
            raise ValueError(f"invalid number of quotes in {item}")
        if len(quotes) == 3:
            out[quotes[0] + quotes[1]] = quotes[2][1:]
        else:
            name, _, value = item.rpartition(":")
            out[name] = value
    return out


def trtexec_applies(args, layers):
    """What trtexec does with exact names (sampleEngines.cpp setLayerPrecisions /
    setLayerOutputTypes): precision, and one type broadcast to every output."""
    flags = dict(a.split("=", 1) for a in args)
    prec, types = trtexec_layer_spec(flags["--layerPrecisions"]), trtexec_layer_spec(flags["--layerOutputTypes"])
    return {layer.name: (prec[layer.name], {j: types[layer.name] for j in range(layer.num_outputs)})
            for layer in layers if layer.name in prec}


SPEC = [("/enc/attn/Softmax", 1, 1), ("/enc/norm/LayerNormalization", 2, 1), ("/enc/Add", 1, 1),
        ("/enc/Add_1", 1, 1), ("/head/Split", 1, 3), ("/head/Conv", 1, 1)]


def test_builder_and_trtexec_hold_the_same_layers_and_outputs():
    islands = ("/enc/attn/Softmax", "/enc/norm/LayerNormalization", "/enc/Add", "/head/Split")
    layers = parsed(SPEC)
    network = ParsedNetwork(layers)
    count, unmatched = constrain_layers(Dtypes, network, islands)
    builder = {layer.name: ("fp32" if layer.precision == "float32" else None,
                            {j: "fp32" for j, t in layer.outputs.items() if t == "float32"})
               for layer in layers if layer.precision is not None}
    assert count == 4 and unmatched == []
    assert builder == trtexec_applies(trtexec_island_args(islands), parsed(SPEC))
    # the first layer of each node only, every output of it; the node's later layer and the
    # other node sharing a prefix (/enc/Add_1) stay free on both paths
    assert set(builder) == set(islands) and builder["/head/Split"][1] == {0: "fp32", 1: "fp32", 2: "fp32"}
    assert "/enc/Add_1" not in builder and not any(n.startswith("/enc/norm/LayerNormalization_") for n in builder)


def test_a_fused_island_is_reported_unmatched():
    layers = [layer for layer in parsed(SPEC) if layer.name != "/enc/attn/Softmax"]
    count, unmatched = constrain_layers(Dtypes, ParsedNetwork(layers), ("/enc/attn/Softmax", "/enc/Add"))
    assert count == 1 and unmatched == ["/enc/attn/Softmax"]


def test_metadata_names_the_node_also_inside_local_functions():
    assert metadata_node("[ONNX Layer: /blk/Softmax]") == "/blk/Softmax"
    assert metadata_node("[ONNX Layer: /blk/Softmax | Local Function: LayerNorm]") == "/blk/Softmax"
    assert metadata_node("[ONNX Layer: a:b | Local Function: F | more]") == "a:b"
    assert metadata_node("") is None and metadata_node(None) is None

    class Layer:
        name = "/blk/Softmax_17"
        metadata = "[ONNX Layer: /blk/Softmax | Local Function: Attn]"

    assert layer_node(Layer()) == "/blk/Softmax"


@pytest.mark.parametrize("name,ok", [("/a/b:c", True), ("a::b", True), ("/a/b,c", False), ("it's", False),
                                     ("/enc/layer.0/Softmax", True)])
def test_trtexec_name_check_follows_trtexecs_parser(name, ok):
    if ok:
        check_trtexec_names([name])
        args = trtexec_island_args([name, "/x"])
        assert trtexec_layer_spec(args[0].split("=", 1)[1]) == {name: "fp32", "/x": "fp32"}
    else:
        with pytest.raises(PlanError, match="rename the node"):
            check_trtexec_names([name])
        try:  # what trtexec itself makes of it: an error, or other names
            read = trtexec_layer_spec(f"{name}:fp32,/x:fp32")
        except ValueError:
            read = None
        assert read != {name: "fp32", "/x": "fp32"}


def _graph_with_shape_island():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Softmax", ["x"], ["s"], name="/attn/Softmax"),
             helper.make_node("Shape", ["s"], ["shape"], name="/attn/Shape"),
             helper.make_node("Reshape", ["s", "shape"], ["r"], name="/attn/Reshape"),
             helper.make_node("Relu", ["r"], ["y"])]  # unnamed: the parser calls it node_of_y
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])


def test_island_layers_drop_integer_outputs_and_name_unnamed_nodes():
    model = _graph_with_shape_island()
    res = island_layers(model, ["/attn/Softmax", "/attn/Shape", "/attn/Reshape"])
    assert res.layers == ("/attn/Softmax", "/attn/Reshape")
    assert res.dropped == (("/attn/Shape", "outputs not all floating point"),) and "1 FP32" in res.notes()[0]
    assert parser_layer_name(model.graph.node[3]) == "node_of_y"
    with pytest.raises(PlanError, match="not in the graph"):
        island_layers(model, ["/nowhere"])


# --------------------------------------------------------------------------- 10.x int8 keeps the islands


def _qdq_with_islands(tmp_path):
    """The tiny model as a Q/DQ graph whose sidecar lists the islands export.quantize left in float."""
    path = make_model(tmp_path, name="tiny.int8.onnx")
    model = onnx.load(str(path))
    for k, node in enumerate(model.graph.node):
        node.name = f"/head/op_{k}"
    conv = model.graph.node[0]
    scale = helper.make_tensor("q_scale", TensorProto.FLOAT, [], [0.05])
    zero = helper.make_tensor("q_zero", TensorProto.INT8, [], [0])
    model.graph.initializer.extend([scale, zero])
    src = conv.input[0]
    conv.input[0] = "image_dq"
    model.graph.node.insert(0, helper.make_node("DequantizeLinear", ["image_q", "q_scale", "q_zero"], ["image_dq"],
                                                name="/q/dq"))
    model.graph.node.insert(0, helper.make_node("QuantizeLinear", [src, "q_scale", "q_zero"], ["image_q"],
                                                name="/q/q"))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    islands = [n.name for n in model.graph.node if n.name.startswith("/head/")][1:3]
    side = Sidecar.load(sidecar_path(path))
    side = replace(side, artifact=ArtifactInfo.from_file(path),
                   extra={**side.extra, "precision": {"mode": "int8-qdq", "unquantized_islands": islands}})
    side.save(sidecar_path(path))
    return path, islands


def test_trt10_int8_recipe_keeps_the_islands(tmp_path):
    book = load_recipes()
    path, islands = _qdq_with_islands(tmp_path)
    assert int8_islands(Sidecar.load(sidecar_path(path))) == tuple(islands)
    job = plan_job("tiny", path, book.get("server-trt10"), book, precision="int8")
    assert job.plan.builder_flags == ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS")
    spec = ",".join(f"{n}:fp32" for n in islands)
    assert "--int8" in job.build and "--fp16" in job.build and "--precisionConstraints=obey" in job.build
    assert f"--layerPrecisions={spec}" in job.build and f"--layerOutputTypes={spec}" in job.build
    assert any("export.quantize left in float" in n for n in job.notes)
    # 11.x: strongly typed, INT8 + FP32 from the graph, no island flags
    job11 = plan_job("tiny", path, book.get("server-trt11"), book, precision="int8")
    assert job11.plan.strongly_typed and not any(a.startswith("--layer") for a in job11.build)


def test_trt10_int8_cli_writes_the_island_flags(tmp_path, capsys):
    path, islands = _qdq_with_islands(tmp_path)
    out = tmp_path / "bundle"
    assert trtexec_main(["--model", "tiny", "--onnx", str(path), "--target", "server-trt10", "--precision", "int8",
                         "--out", str(out)]) == 0
    build = shlex.split((out / "commands.txt").read_text().splitlines()[0])
    assert any(a.startswith("--layerPrecisions=") and islands[0] in a for a in build)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["plan"]["fp32_nodes"] == islands and plan["workspace_mib"] == 4096

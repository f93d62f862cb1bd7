"""TensorRT's ONNX support per target version, as data with its sources, and the lint rules
that check a graph against one target (``python -m export.check`` runs them).

Targets: ``trt10.3`` (JetPack 6 on Jetson Orin), ``trt10.16`` (server GPUs, latest 10.x) and
``trt11`` (strongly typed 11.x). Where each fact comes from:

- ``OPS_10_15``, ``UNSUPPORTED_10_15`` and the restriction rules: the operator table of
  onnx/onnx-tensorrt ``docs/operators.md`` as released with TensorRT 10.15 GA ("TensorRT
  10.15 supports operators in the inclusive range of opset 9 to opset 24"), the newest table
  that could be read. 10.16 and 11.0-11.4 are taken to have the same table and range: the
  onnx-tensorrt release notes list no operator changes for them, and the first range change
  after 10.15 is opset 25 in 11.5 ("release/11.5-GA: Added support for ONNX opset 25").
- What 10.3 lacks: the onnx-tensorrt ``docs/Changelog.md`` entries after 10.3 GA
  (``ADDED_AFTER_10_3``, Pad tensor axes in 10.4, Einsum ellipsis/diagonal in 10.12, FP4 in
  10.8). The opset range 9-20 is the one operators.md states for 10.0; no 10.1-10.5 entry
  changes it (the ONNX submodule moves to 1.17 only in 10.6), so 10.3 keeps 9-20.
- TensorRT 11 removes weak typing (precision builder flags, precision constraints, implicit
  INT8 calibration): NVIDIA's "Migrating from TensorRT 10.x to 11.x" guide. That changes how
  engines are built (``export.trt_plan``), not which ops parse.

The rules reuse ``export.verify.lint``'s single walk over the graph: a target contributes
node rules and an empty forbidden set (the table decides, not the kit-wide export lint).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import onnx
import onnx.shape_inference
from onnx import TensorProto

from .trt_plan import parse_version
from .verify import GraphIndex, LintReport, NodeRule, default_opset, lint

# --------------------------------------------------------------------------------------- #
# The table (data)
# --------------------------------------------------------------------------------------- #

OPERATORS_MD = "onnx/onnx-tensorrt docs/operators.md (TensorRT 10.15 GA)"
CHANGELOG_MD = "onnx/onnx-tensorrt docs/Changelog.md"
MIGRATION_11 = "NVIDIA TensorRT docs: Migrating from TensorRT 10.x to 11.x"

#: Ops with "Y" in the operators.md support matrix (TensorRT 10.15).
OPS_10_15 = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
BatchNormalization BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape
Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum
Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If
ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual
Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter
ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter ThresholdedRelu Tile
TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

#: Ops with "N" in the same matrix (DFT and Unique among them: never supported).
UNSUPPORTED_10_15 = frozenset("""
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad
Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder
MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss
Optional OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch
SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength
SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit
TfIdfVectorizer Unique
""".split())

#: Ops the changelog adds after 10.3 GA, with the release that added them.
ADDED_AFTER_10_3 = {
    "BlackmanWindow": "10.4", "HammingWindow": "10.4", "HannWindow": "10.4",
    "STFT": "10.5", "Attention": "10.14",
    "RotaryEmbedding": "10.15", "RMSNormalization": "10.15", "TensorScatter": "10.15",
}

#: Tensor types the parser takes ("TensorRT supports the following ONNX data types"); FP8 is
#: E4M3. DOUBLE is cast down to FLOAT (a warning, not an error).
TYPES_10_15 = frozenset({
    TensorProto.DOUBLE, TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
    TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT4E2M1, TensorProto.INT32, TensorProto.INT64,
    TensorProto.INT8, TensorProto.INT4, TensorProto.UINT8, TensorProto.BOOL,
})

RESIZE_COORDINATE_MODES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                                     "asymmetric", "align_corners"})
RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_NEAREST_MODES = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})
REDUCE_OPS = frozenset({"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                        "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare"})
POOL_OPS = frozenset({"AveragePool", "MaxPool", "LpPool"})
TOPK_MAX_K = 3840


@dataclass(frozen=True)
class Target:
    """One TensorRT version the lint checks against."""

    name: str
    version: str
    description: str
    opset_min: int
    opset_max: int
    supported: frozenset[str]
    unsupported: frozenset[str]
    types: frozenset[int]
    since: dict[str, str]  # op -> first version with it, for ops this target lacks
    rules: tuple[NodeRule, ...]
    sources: tuple[str, ...]

    def supports(self, op_type: str) -> bool:
        return op_type in self.supported


# --------------------------------------------------------------------------------------- #
# Rules
# --------------------------------------------------------------------------------------- #


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _input(node: onnx.NodeProto, k: int) -> str:
    """Name of input ``k``, "" when absent (ONNX marks skipped optional inputs with "")."""
    return node.input[k] if len(node.input) > k else ""


def _output_used(node: onnx.NodeProto, k: int, index: GraphIndex) -> bool:
    if len(node.output) <= k or not node.output[k]:
        return False
    name = node.output[k]
    return bool(index.consumers.get(name)) or any(o.name == name for o in index.model.graph.output)


def _op_support(target_name: str, version: str, supported: frozenset[str],
                unsupported: frozenset[str], since: dict[str, str]) -> NodeRule:
    def rule(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
        op = node.op_type
        if op in supported:
            return
        if op in since:
            yield f"op {op} needs TensorRT {since[op]}+ (target {target_name} is TensorRT {version})"
        elif op in unsupported:
            yield f"op {op} is not supported by TensorRT {version} (\"N\" in onnx-tensorrt operators.md)"
        else:
            yield f"op {op} is not in TensorRT {version}'s ONNX operator table"
    return rule


def _resize(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type not in ("Resize", "Upsample"):
        return
    a = _attrs(node)
    coord = _text(a.get("coordinate_transformation_mode", "half_pixel"))
    mode = _text(a.get("mode", "nearest"))
    nearest = _text(a.get("nearest_mode", "round_prefer_floor"))
    if node.op_type == "Resize" and coord not in RESIZE_COORDINATE_MODES:
        yield f"Resize coordinate_transformation_mode {coord!r} is unsupported (supported: " \
              f"{', '.join(sorted(RESIZE_COORDINATE_MODES))})"
    if mode not in RESIZE_MODES:
        yield f"Resize mode {mode!r} is unsupported (supported: nearest, linear)"
    if mode == "nearest" and nearest not in RESIZE_NEAREST_MODES:
        yield f"Resize nearest_mode {nearest!r} is unsupported"
    if int(a.get("antialias", 0)):
        yield "Resize antialias is unsupported"
    policy = _text(a.get("keep_aspect_ratio_policy", "stretch"))
    if policy != "stretch":
        yield f"Resize keep_aspect_ratio_policy {policy!r} is unsupported (only stretch)"


def _reduce_axes(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type in REDUCE_OPS:
        axes = _input(node, 1)
        if axes and not index.is_constant(axes):
            yield f"{node.op_type} axes ({axes}) must be an initializer, not computed at run time"


def _constant_input(op_type: str, k: int, what: str) -> NodeRule:
    def rule(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
        if node.op_type == op_type:
            name = _input(node, k)
            if name and not index.is_constant(name):
                yield f"{op_type} {what} ({name}) must be a build-time constant"
    return rule


def _scatter_nd(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type == "ScatterND":
        reduction = _text(_attrs(node).get("reduction", "none"))
        if reduction != "none":
            yield f"ScatterND reduction {reduction!r} is unsupported (only none)"


def _pooling(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type not in POOL_OPS:
        return
    a = _attrs(node)
    kernel = list(a.get("kernel_shape", []))
    if kernel and len(kernel) not in (2, 3):
        yield f"{node.op_type} is {len(kernel)}D; only 2D or 3D pooling is supported"
    dilations = list(a.get("dilations", []))
    if any(d != 1 for d in dilations):
        yield f"{node.op_type} dilations {dilations} must be empty or all ones"
    if node.op_type == "MaxPool" and _output_used(node, 1, index):
        yield "MaxPool Indices output is unsupported"


def _single_output(op_type: str, what: str) -> NodeRule:
    def rule(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
        if node.op_type == op_type and any(_output_used(node, k, index) for k in range(1, len(node.output))):
            yield f"{op_type}: only the first output {what} is supported"
    return rule


def _dropout(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type != "Dropout":
        return
    training = _input(node, 2)
    if training:
        value = index.constant_value(training)
        if value is None:
            yield "Dropout is_training must be an initializer"
        elif bool(value.any()):
            yield "Dropout is_training must be False"


def _lstm(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type == "LSTM":
        a = _attrs(node)
        if int(a.get("input_forget", 0)):
            yield "LSTM input_forget must be 0"
        if int(a.get("layout", 0)):
            yield "LSTM layout must be 0"


def _zero_point(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
        return
    zp = _input(node, 2)
    if not zp:
        return
    value = index.constant_value(zp)
    if value is None:
        yield f"{node.op_type} zero point ({zp}) must be a constant zero"
    elif bool((value.astype("float64") != 0).any()):
        yield f"{node.op_type} zero point must be 0 (symmetric quantization)"


def _constant_attrs(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type == "Constant":
        bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
        if bad:
            yield f"Constant attribute {bad[0]} is unsupported"


def _topk(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type != "TopK":
        return
    if not int(_attrs(node).get("sorted", 1)):
        yield "TopK sorted must be 1"
    k = index.constant_value(_input(node, 1)) if _input(node, 1) else None
    if k is not None and k.size and int(k.reshape(-1)[0]) >= TOPK_MAX_K:
        yield f"TopK K={int(k.reshape(-1)[0])} must be less than {TOPK_MAX_K}"


def _attention(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type != "Attention":
        return
    for k, name in ((4, "past_key"), (5, "past_value"), (6, "nonpad_kv_seqlen")):
        if _input(node, k):
            yield f"Attention input {name} is unsupported"
    for k, name in ((1, "present_key"), (2, "present_value"), (3, "qk_matmul_output")):
        if _output_used(node, k, index):
            yield f"Attention output {name} is unsupported"
    a = _attrs(node)
    for name in ("qk_matmul_output_mode", "softcap"):
        if name in a and float(a[name]) != 0:
            yield f"Attention attribute {name} is unsupported"


def _einsum_before_10_12(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type != "Einsum":
        return
    equation = _text(_attrs(node).get("equation", "")).replace(" ", "")
    if "..." in equation:
        yield "Einsum ellipsis needs TensorRT 10.12+"
    for term in equation.split("->")[0].split(","):
        letters = term.replace("...", "")
        if len(set(letters)) != len(letters):
            yield f"Einsum diagonal ({term}) needs TensorRT 10.12+"


def _group_norm_opset21_before_10_9(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type == "GroupNormalization" and index.opset >= 21:
        yield "opset-21 GroupNormalization needs TensorRT 10.9+"


COMMON_RULES: tuple[NodeRule, ...] = (
    _resize, _reduce_axes, _scatter_nd, _pooling, _dropout, _lstm, _zero_point, _constant_attrs,
    _topk, _attention,
    _single_output("LayerNormalization", "Y"),
    _constant_input("CumSum", 1, "axis"),
    _constant_input("Squeeze", 1, "axes"),
    _constant_input("Unsqueeze", 1, "axes"),
    _constant_input("OneHot", 1, "depth"),
)


def _target(name: str, version: str, description: str, opset: tuple[int, int], *,
            missing: dict[str, str], extra_rules: tuple[NodeRule, ...] = (),
            types: frozenset[int] = TYPES_10_15, sources: tuple[str, ...]) -> Target:
    supported = OPS_10_15 - set(missing)
    rules = (_op_support(name, version, supported, UNSUPPORTED_10_15, missing),) + COMMON_RULES + extra_rules
    return Target(name, version, description, opset[0], opset[1], supported, UNSUPPORTED_10_15,
                  types, dict(missing), rules, sources)


TARGETS: dict[str, Target] = {t.name: t for t in (
    _target("trt10.3", "10.3", "Jetson Orin, JetPack 6 (TensorRT 10.3)", (9, 20),
            missing=ADDED_AFTER_10_3,
            extra_rules=(_constant_input("Pad", 3, "axes (tensor axes need 10.4+)"),
                         _einsum_before_10_12, _group_norm_opset21_before_10_9),
            types=TYPES_10_15 - {TensorProto.FLOAT4E2M1},
            sources=(OPERATORS_MD, f"{CHANGELOG_MD}: 10.4-10.15 entries (ops and features after 10.3)",
                     "operators.md for 10.0: opset 9 to 20")),
    _target("trt10.16", "10.16", "server GPU, latest TensorRT 10.x", (9, 24), missing={},
            sources=(OPERATORS_MD, f"{CHANGELOG_MD}: no operator change listed after 10.15")),
    _target("trt11", "11", "server GPU, TensorRT 11.x (strongly typed)", (9, 24), missing={},
            sources=(OPERATORS_MD, "onnx-tensorrt release/11.5-GA: opset 25 from 11.5", MIGRATION_11)),
)}


# --------------------------------------------------------------------------------------- #
# Checking a graph
# --------------------------------------------------------------------------------------- #


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(TARGETS)}") from None


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every typed tensor: graph I/O, initializers, inferred value infos."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph shape inference rejects still gets its declared types checked
        inferred = model
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(g.input) + list(g.output) + list(g.value_info) if v.type.HasField("tensor_type")}
    types.update({init.name: init.data_type for init in g.initializer})
    return {k: v for k, v in types.items() if v != TensorProto.UNDEFINED}


def check_graph(model: onnx.ModelProto, target: Target | str) -> LintReport:
    """Lint ``model`` against one TensorRT target: opset range, the op table, attribute and
    constant-input restrictions (one walk, through ``export.verify.lint``) and tensor types."""
    target = get_target(target) if isinstance(target, str) else target
    report = lint(model, forbidden=frozenset(), rules=target.rules)
    opset = default_opset(model)
    if not target.opset_min <= opset <= target.opset_max:
        report.problems.insert(0, f"graph opset {opset} is outside TensorRT {target.version}'s range "
                                  f"{target.opset_min}-{target.opset_max}")
    producers = {out: node for node in model.graph.node for out in node.output}
    bad: dict[int, list[str]] = {}
    for name, elem in _tensor_types(model).items():
        if elem == TensorProto.DOUBLE:
            report.warnings.append(f"tensor {name} is DOUBLE: TensorRT casts it down to FLOAT")
        elif elem not in target.types:
            bad.setdefault(elem, []).append(name)
    for elem, names in sorted(bad.items()):
        where = names[0]
        node = producers.get(where)
        label = f"node {node.name or node.op_type}: " if node is not None else ""
        more = f" (+{len(names) - 1} more)" if len(names) > 1 else ""
        report.problems.append(f"{label}tensor {where}{more} has type "
                               f"{TensorProto.DataType.Name(elem)}, which TensorRT {target.version} does not take")
    return report


def target_for_version(version: str) -> Target:
    """The lint target that stands for a TensorRT release: 11.x -> trt11, 10.0-10.3 -> trt10.3
    (the closest older table), 10.4 and later -> trt10.16 (the parser on the build machine
    has the last word on ops added between them)."""
    major, minor = parse_version(version)
    if major >= 11:
        return TARGETS["trt11"]
    if major == 10:
        return TARGETS["trt10.3"] if minor <= 3 else TARGETS["trt10.16"]
    raise KeyError(f"TensorRT {version} has no lint target (10.x and 11.x only)")

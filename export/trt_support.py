"""TensorRT's ONNX support per TensorRT release, as data with its sources, and the lint rules
that check a graph against one target (``python -m export.check`` runs them).

Targets, one per release where the facts differ: ``trt10.3`` (JetPack 6 on Jetson Orin),
``trt10.8``, ``trt10.12``, ``trt10.16`` (latest 10.x), ``trt11.0``, ``trt11.2``, ``trt11.4``
and ``trt11.5`` (``trt11`` is an alias of the newest). ``target_for_version`` builds the
table of any 10.x / 11.x release from the same facts (``auto`` in ``export.check``, and
``export.tensorrt`` before each build), so a release between two targets (10.4-10.15) gets
exactly what it has, never the next target's additions.

Every fact is one row of ``FEATURES`` (an op, a type, an opset, or a lifted restriction,
with the first release that has it) naming its source:

- the operator table and restrictions: onnx/onnx-tensorrt ``docs/operators.md`` of 10.15
  GA ("TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24");
- what changed release by release up to 10.15: the onnx-tensorrt ``docs/Changelog.md``
  entries (quoted in our words on each row);
- 11.x additions (Swish in 11.0; DFT through a cuFFT plugin and 5-D GridSample in 11.2;
  opset 25 and Squeeze without axes in 11.5): the onnx-tensorrt release notes of those
  releases, as reviewed against NVIDIA's sources in this project's issue 11 (the source
  index this kit was written with holds the changelog only up to 10.15);
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
RELEASE_11 = "onnx-tensorrt release notes (reviewed in issue 11)"
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

#: Ops with "N" in the same matrix (DFT among them: added in 11.2, see FEATURES).
UNSUPPORTED_10_15 = frozenset("""
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad
Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder
MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss
Optional OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch
SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength
SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit
TfIdfVectorizer Unique
""".split())

#: One row per fact: (key, first release that has it, source). Keys: ``op:NAME`` (an op the
#: 10.15 table lacks or that came after 10.3), ``type:NAME``, ``opset:N`` (highest opset),
#: ``feature:NAME`` (a restriction lifted). A release has every row up to its version.
FEATURES: tuple[tuple[str, str, str], ...] = (
    ("opset:20", "10.0", "operators.md of 10.0: opset 9 to 20"),
    ("op:BlackmanWindow", "10.4", f"{CHANGELOG_MD} 10.4: Blackman, Hamming and Hann windows added"),
    ("op:HammingWindow", "10.4", f"{CHANGELOG_MD} 10.4: Blackman, Hamming and Hann windows added"),
    ("op:HannWindow", "10.4", f"{CHANGELOG_MD} 10.4: Blackman, Hamming and Hann windows added"),
    ("feature:pad-tensor-axes", "10.4", f"{CHANGELOG_MD} 10.4: Pad takes tensor axes"),
    ("op:STFT", "10.5", f"{CHANGELOG_MD} 10.5: real-valued STFT added"),
    ("opset:22", "10.6", f"{CHANGELOG_MD} 10.6: ONNX submodule moved to 1.17 (opset 22)"),
    ("feature:squeeze-dynamic-axes", "10.7", f"{CHANGELOG_MD} 10.7: Squeeze and Unsqueeze take dynamic axes"),
    ("type:FLOAT4E2M1", "10.8", f"{CHANGELOG_MD} 10.8: FLOAT4E2M1 for quantized networks"),
    ("feature:pow-integer-exponent", "10.8", f"{CHANGELOG_MD} 10.8: Pow with integer-typed exponents"),
    ("feature:groupnorm-opset21", "10.9", f"{CHANGELOG_MD} 10.9: opset-21 GroupNormalization"),
    ("opset:23", "10.11", f"{CHANGELOG_MD} 10.11: ONNX moved to 1.18 (opset 23)"),
    ("feature:pow-integer-base", "10.12", f"{CHANGELOG_MD} 10.12: Pow with integer-typed base tensors"),
    ("feature:einsum-ellipsis-diagonal-broadcast", "10.12",
     f"{CHANGELOG_MD} 10.12: Einsum ellipses, diagonals and broadcasting"),
    ("op:Attention", "10.14", f"{CHANGELOG_MD} 10.14: Attention added"),
    ("op:RotaryEmbedding", "10.15", f"{CHANGELOG_MD} 10.15: RotaryEmbedding, RMSNormalization, TensorScatter added"),
    ("op:RMSNormalization", "10.15", f"{CHANGELOG_MD} 10.15: RotaryEmbedding, RMSNormalization, TensorScatter added"),
    ("op:TensorScatter", "10.15", f"{CHANGELOG_MD} 10.15: RotaryEmbedding, RMSNormalization, TensorScatter added"),
    ("opset:24", "10.15", f"{OPERATORS_MD}: opset 9 to 24"),
    ("op:Swish", "11.0", f"{RELEASE_11} 11.0: Swish added"),
    ("op:DFT", "11.2", f"{RELEASE_11} 11.2: DFT added (cuFFT plugin)"),
    ("feature:gridsample-5d", "11.2", f"{RELEASE_11} 11.2: 5-D GridSample"),
    ("opset:25", "11.5", f"{RELEASE_11} 11.5: opset 25"),
    ("feature:squeeze-without-axes", "11.5", f"{RELEASE_11} 11.5: Squeeze without axes"),
)
#: The newest release of each major the facts cover; later ones get its table.
NEWEST = {10: (10, 16), 11: (11, 5)}

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


def _ranks_and_types(index: GraphIndex) -> tuple[dict[str, int], dict[str, int]]:
    """Rank and element type of every tensor shape inference knows (computed once per lint)."""
    cached = getattr(index, "_trt_ranks_types", None)
    if cached is None:
        try:
            g = onnx.shape_inference.infer_shapes(index.model).graph
        except Exception:  # a graph inference rejects: the declared shapes only
            g = index.model.graph
        ranks, types = {}, {}
        for v in list(g.input) + list(g.output) + list(g.value_info):
            t = v.type.tensor_type
            if t.HasField("shape"):
                ranks[v.name] = len(t.shape.dim)
            types[v.name] = t.elem_type
        for init in g.initializer:
            ranks[init.name], types[init.name] = len(init.dims), init.data_type
        cached = (ranks, types)
        object.__setattr__(index, "_trt_ranks_types", cached)
    return cached


def _dims(index: GraphIndex, name: str) -> list[int | None] | None:
    for v in list(index.model.graph.input) + list(index.model.graph.value_info):
        if v.name == name and v.type.tensor_type.HasField("shape"):
            return [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
    init = index.initializers.get(name)
    return list(init.dims) if init is not None else None


def _einsum_before_10_12(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type != "Einsum":
        return
    equation = _text(_attrs(node).get("equation", "")).replace(" ", "")
    if "..." in equation:
        yield "Einsum ellipsis needs TensorRT 10.12+"
    terms = equation.split("->")[0].split(",")
    for term in terms:
        letters = term.replace("...", "")
        if len(set(letters)) != len(letters):
            yield f"Einsum diagonal ({term}) needs TensorRT 10.12+"
    sizes: dict[str, set[int]] = {}
    for term, name in zip(terms, node.input):
        dims = _dims(index, name)
        if dims is None or "..." in term or len(dims) != len(term):
            continue
        for letter, d in zip(term, dims):
            if d:
                sizes.setdefault(letter, set()).add(d)
    if any(len(v) > 1 and 1 in v for v in sizes.values()):
        yield "Einsum broadcasting (a size-1 dimension against a larger one) needs TensorRT 10.12+"


def _group_norm_opset21_before_10_9(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type == "GroupNormalization" and index.opset >= 21:
        yield "opset-21 GroupNormalization needs TensorRT 10.9+"


def _integer_pow(exponent: bool, base: bool) -> NodeRule:
    def rule(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
        if node.op_type != "Pow":
            return
        _, types = _ranks_and_types(index)
        integer = {TensorProto.INT32, TensorProto.INT64, TensorProto.INT8, TensorProto.UINT8}
        if base and types.get(_input(node, 0)) in integer:
            yield "Pow with an integer base needs TensorRT 10.12+"
        if exponent and types.get(_input(node, 1)) in integer:
            yield "Pow with an integer exponent needs TensorRT 10.8+"
    return rule


def _gridsample_4d(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type == "GridSample":
        rank = _ranks_and_types(index)[0].get(_input(node, 0))
        if rank is not None and rank != 4:
            yield f"GridSample input is {rank}-D; before TensorRT 11.2 only 4-D is supported (5-D from 11.2)"


def _gridsample_rank(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type == "GridSample":
        rank = _ranks_and_types(index)[0].get(_input(node, 0))
        if rank is not None and rank not in (4, 5):
            yield f"GridSample input is {rank}-D; only 4-D or 5-D is supported"


def _attention_ranks(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type != "Attention":
        return
    ranks = _ranks_and_types(index)[0]
    for k, label in ((0, "Q"), (1, "K"), (2, "V"), (3, "attn_mask")):
        name = _input(node, k)
        if name and ranks.get(name) is not None and ranks[name] != 4:
            yield f"Attention {label} is {ranks[name]}-D; Q, K, V and attn_mask must be 4-D"


def _squeeze_without_axes(node: onnx.NodeProto, index: GraphIndex) -> Iterable[str]:
    if node.op_type == "Squeeze":
        axes = _input(node, 1) if index.opset >= 13 else ("attr" if "axes" in _attrs(node) else "")
        if not axes:
            yield "Squeeze without axes needs TensorRT 11.5+"


COMMON_RULES: tuple[NodeRule, ...] = (
    _resize, _reduce_axes, _scatter_nd, _pooling, _dropout, _lstm, _zero_point, _constant_attrs,
    _topk, _attention, _attention_ranks,
    _single_output("LayerNormalization", "Y"),
    _constant_input("CumSum", 1, "axis"),
    _constant_input("OneHot", 1, "depth"),
)

#: The rule of each restriction a release lifts (``feature:`` rows of FEATURES): applied
#: to every release before it.
RESTRICTIONS: dict[str, tuple[NodeRule, ...]] = {
    "feature:pad-tensor-axes": (_constant_input("Pad", 3, "axes (tensor axes need 10.4+)"),),
    "feature:squeeze-dynamic-axes": (_constant_input("Squeeze", 1, "axes (dynamic axes need 10.7+)"),
                                     _constant_input("Unsqueeze", 1, "axes (dynamic axes need 10.7+)")),
    "feature:pow-integer-exponent": (_integer_pow(exponent=True, base=False),),
    "feature:groupnorm-opset21": (_group_norm_opset21_before_10_9,),
    "feature:pow-integer-base": (_integer_pow(exponent=False, base=True),),
    "feature:einsum-ellipsis-diagonal-broadcast": (_einsum_before_10_12,),
    "feature:gridsample-5d": (_gridsample_4d,),
    "feature:squeeze-without-axes": (_squeeze_without_axes,),
}


def _key(version: str) -> tuple[int, int]:
    major, minor = parse_version(version)
    return major, minor


def make_target(version: str, name: str | None = None, description: str = "") -> Target:
    """The lint target of TensorRT ``version`` (10.x or 11.x): every FEATURES row up to it."""
    major, minor = _key(version)
    if major not in NEWEST:
        raise KeyError(f"TensorRT {version} has no lint target (10.x and 11.x only)")
    here = min((major, minor), NEWEST[major])
    has = [row for row in FEATURES if _key(row[1]) <= here]
    lacks = [row for row in FEATURES if _key(row[1]) > here]
    since = {key[3:]: v for key, v, _ in lacks if key.startswith("op:")}
    added = {key[3:] for key, _, _ in has if key.startswith("op:")}
    supported = (OPS_10_15 | added) - set(since)
    unsupported = UNSUPPORTED_10_15 - added
    types = set(TYPES_10_15) - {getattr(TensorProto, key[5:]) for key, _, _ in lacks if key.startswith("type:")}
    opset_max = max(int(key[6:]) for key, _, _ in has if key.startswith("opset:"))
    label = name or f"trt{major}.{minor}"
    shown = f"{major}.{minor}"
    rules = (_op_support(label, shown, frozenset(supported), unsupported, since),) + COMMON_RULES
    for key, _, _ in lacks:
        rules += RESTRICTIONS.get(key, ())
    if (major, minor) >= (11, 2):
        rules += (_gridsample_rank,)
    sources = ((OPERATORS_MD,) + tuple(f"has ({v}+): {src}" for _, v, src in has)
               + tuple(f"lacks ({v}+): {src}" for _, v, src in lacks) + ((MIGRATION_11,) if major >= 11 else ()))
    return Target(label, shown, description or f"TensorRT {shown}", 9, opset_max, frozenset(supported),
                  frozenset(unsupported), frozenset(types), since, rules, tuple(dict.fromkeys(sources)))


TARGETS: dict[str, Target] = {t.name: t for t in (
    make_target("10.3", description="Jetson Orin, JetPack 6 (TensorRT 10.3)"),
    make_target("10.8", description="TensorRT 10.8 (FP4, integer Pow exponents, dynamic Squeeze axes)"),
    make_target("10.12", description="TensorRT 10.12 (Einsum ellipsis/diagonal/broadcasting, integer Pow bases)"),
    make_target("10.16", description="server GPU, latest TensorRT 10.x"),
    make_target("11.0", description="TensorRT 11.0 (strongly typed; Swish)"),
    make_target("11.2", description="TensorRT 11.2 (DFT, 5-D GridSample)"),
    make_target("11.4", description="TensorRT 11.4"),
    make_target("11.5", description="TensorRT 11.5 (opset 25, Squeeze without axes)"),
)}
#: Other names a target answers to: ``trt11`` is the newest 11.x.
ALIASES = {"trt11": f"trt{NEWEST[11][0]}.{NEWEST[11][1]}"}


# --------------------------------------------------------------------------------------- #
# Checking a graph
# --------------------------------------------------------------------------------------- #


def get_target(name: str) -> Target:
    """A target by name (``trt11`` and other aliases resolved); KeyError naming the known ones."""
    name = ALIASES.get(name, name)
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown target {name!r}; known: {', '.join([*TARGETS, *ALIASES])}") from None


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
    """The lint target of a TensorRT release: its exact table from FEATURES (10.4-10.15 get
    what they have, not the next target's additions); releases past the newest of their
    major (10.16, 11.5) get that one's."""
    major, minor = _key(version)
    for t in TARGETS.values():
        if _key(t.version) == (major, minor):
            return t
    return make_target(version)


def installed_version() -> str | None:
    """The TensorRT version installed here (pip wheel or a system install such as JetPack's
    python3-libnvinfer), or None."""
    from importlib import metadata

    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings", "tensorrt-cu12-bindings"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    try:
        import tensorrt
    except (ImportError, OSError):
        return None
    return str(getattr(tensorrt, "__version__", "")) or None

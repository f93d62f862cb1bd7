"""``python -m bench.ops MODEL.onnx``: where an exported model's CPU time goes, per op type and
per module of the model, read from onnxruntime's profiler or OpenVINO's per-layer counters.

The model runs through the runtime's own backends with their default settings (intra-op
threads = physical cores, no worker spinning; OpenVINO FP32 means FP32), one warm-up call and
then ``--rounds`` profiled calls on a seeded random input; times are means per call over
those rounds. Ops are the kernels the backend actually ran, after its own fusions (onnxruntime
reports ``FusedMatMul``, ``Gemm`` for MatMul + Add, ``ReorderInput`` / ``ReorderOutput`` for
its blocked NCHWc layout; OpenVINO its fused layers by the name of their first node). A
module is the leading ``depth`` parts of a node's ONNX name (``/stages.0/blocks.1/...`` ->
``stages.0`` at depth 1) for the TorchScript exporter's exports, the ``name_scopes`` the dynamo
exporter records for its own (``graph_modules``); the model's top-level ops and the nodes a
backend made and named itself (layout conversions, some fusions) count as ``(no module)``.

For onnxruntime, convolutions, matrix products and attention also get their achieved GFLOP/s
from the shapes in the trace (2 x multiply-adds), to set against ``python -m bench.peak``;
OpenVINO's counters carry no shapes, so its rows have none.
This is how the export's attention rewrites were found: QMA-Net at 512 spent ~12% of its
onnxruntime time in MatMul / Softmax / Transpose around attention cores that ``--attention
ort`` now fuses (README, Benchmarks).

``--precision bf16`` profiles OpenVINO's BF16 kernels (on a CPU with native BF16), to see
which layers gain from BF16 and which do not: set against the FP32 profile of the same file.

Writes ``OUT/<model>.ops.json`` (every kernel and the summaries) and ``OUT/<model>.ops.png``
(time by op type and by module) unless ``--no-files``; OpenVINO's get the tag
``<model>.openvino.ops.json`` (``openvino-bf16`` for BF16), so profiles of one file on the
two backends sit side by side; prints both tables.
"""
from __future__ import annotations

from train.cli import interrupts_in_one_line, one_line_errors

interrupts_in_one_line(__name__)  # before the heavy imports

import argparse
import json
import math
import sys
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.atomic import atomic_files
from runtime.errors import RuntimeInputError, one_line

BACKENDS = ("onnxruntime", "openvino")
OUTSIDE = "(no module)"  # the model's top-level ops and the nodes a backend made (layout conversions)
MATMUL_LIKE = ("Gemm", "MatMul", "FusedMatMul", "FusedGemm")


@dataclass
class Kernel:
    """One node of the executed graph, its mean time per call, (where known) its FLOPs, and
    (OpenVINO) the implementation that ran it, e.g. ``brgemm_avx512_bf16``: its precision."""
    name: str
    op: str
    ms: float
    gflop: float | None = None
    shapes: list[list[int]] = field(default_factory=list)
    impl: str = ""


@dataclass
class Group:
    """Kernels summed under one key (an op type or a module)."""
    key: str
    ms: float
    share: float
    kernels: int
    gflops: float | None  # achieved GFLOP/s over the kernels with known FLOPs
    top_ops: list[tuple[str, float]]  # (op, share of the whole run) for a module


def _dynamo_parts(scopes: list[str]) -> list[str]:
    """Module parts from the dynamo exporter's ``pkg.torch.onnx.name_scopes``: cumulative
    dotted paths, the export wrapper first and the op last (['', 'model.encoder',
    'model.encoder.stages_0', 'conv2d'] -> ['encoder', 'stages_0']), the wrapper's ``model``
    attribute dropped."""
    parts, previous = [], ""
    for scope in scopes[1:-1]:
        parts.append(scope[len(previous) + 1:] if previous and scope.startswith(previous + ".") else scope)
        previous = scope
    if parts and parts[0].split(".")[0] == "model":
        head = parts[0].split(".", 1)
        parts = head[1:] + parts[1:]
    return [p for p in parts if p]


def _path_parts(name: str) -> list[str]:
    """Module parts of a TorchScript-style ``/a/b/Op`` node name (['a', 'b'])."""
    return [p for p in name.split("/")[1:-1] if p]


def graph_modules(path: str | Path) -> dict[str, list[str]]:
    """Node and value names of an exported ONNX graph -> the module path of the node that makes
    them: the TorchScript exporter names nodes ``/a/b/Op``, the dynamo exporter records
    ``name_scopes`` metadata."""
    import ast

    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise RuntimeInputError(f"model {path}: not a loadable ONNX model ({one_line(e)})") from None
    names: dict[str, list[str]] = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        if "pkg.torch.onnx.name_scopes" in meta:
            parts = _dynamo_parts(ast.literal_eval(meta["pkg.torch.onnx.name_scopes"]))
        elif node.name.startswith("/"):
            parts = _path_parts(node.name)
        else:
            continue
        for name in (node.name, *node.output):
            names[name] = parts
    return names


def module_of(name: str, depth: int, names: dict[str, list[str]] | None = None) -> str:
    """The module a kernel belongs to, ``depth`` parts deep: looked up in ``names``
    (``graph_modules``) by the kernel's name or the value it is named after (onnxruntime's
    layout rewrite appends ``_nchwc``, its fusions and OpenVINO's a ``/Fusion`` part), else read
    from a ``/a/b/Op`` name."""
    parts = None
    base = name if name.startswith("/") else name.split("/")[0]
    for candidate in (name, base, base.removesuffix("_nchwc")):
        if names and candidate in names:
            parts = names[candidate]
            break
    if parts is None and name.startswith("/"):
        parts = _path_parts(name)
    return "/".join(parts[:depth]) if parts else OUTSIDE


def kernel_gflop(op: str, inputs: list[list[int]], output: list[int]) -> float | None:
    """FLOPs (2 x multiply-adds) of a Conv, matrix product or MultiHeadAttention kernel from its
    input and output shapes; None for other ops or shapes that do not fit."""
    try:
        if op in ("Conv", "FusedConv"):
            weight = inputs[1]  # (O, I / groups, kh, kw)
            return 2.0 * math.prod(output) * math.prod(weight[1:]) / 1e9
        if op in MATMUL_LIKE:
            a = inputs[0]
            m = output[-2] if len(output) >= 2 else 1
            k = a[-1] if len(a) < 2 or a[-2] == m else a[-2]  # transposed A (FusedMatMul transA)
            return 2.0 * math.prod(output) * k / 1e9
        if op == "MultiHeadAttention":
            q, k, v = inputs[:3]  # (B, N, C), (B, M, C), (B, M, Cv)
            return 2.0 * q[0] * q[1] * k[1] * (q[2] + v[2]) / 1e9
    except (IndexError, TypeError):
        return None
    return None


def _shape(entry: dict) -> list[int]:
    return list(next(iter(entry.values()))) if entry else []


def read_ort_trace(path: str | Path, rounds: int) -> list[Kernel]:
    """Kernels of the last ``rounds`` ``model_run`` calls of an onnxruntime profile trace."""
    events = json.loads(Path(path).read_text(encoding="utf-8"))
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")[-rounds:]
    if len(runs) < rounds:
        raise RuntimeInputError(f"profile {path}: {len(runs)} runs recorded, expected {rounds}")
    start = runs[0][0]
    total: dict[str, float] = defaultdict(float)
    info: dict[str, tuple[str, list[list[int]], list[int]]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < start:
            continue
        name = e["name"][: -len("_kernel_time")]
        total[name] += e["dur"]
        args = e.get("args", {})
        inputs = [_shape(d) for d in args.get("input_type_shape", [])]
        outputs = [_shape(d) for d in args.get("output_type_shape", [])]
        info[name] = (args.get("op_name", "?"), inputs, outputs[0] if outputs else [])
    kernels = []
    for name, us in total.items():
        op, inputs, output = info[name]
        kernels.append(Kernel(name, op, us / rounds / 1e3, kernel_gflop(op, inputs, output), inputs))
    return kernels


def _input(backend, size: int | None) -> np.ndarray:
    shape = [d if isinstance(d, int) and d > 0 else None for d in backend.input_shape]
    if len(shape) != 4:
        raise RuntimeInputError(f"model {backend.path}: expected an (N, 3, H, W) input, got {backend.input_shape}")
    n, c, h, w = shape
    if (h is None or w is None) and size is None:
        raise RuntimeInputError(f"model {backend.path}: its input size is dynamic; give --size")
    h, w = h or size, w or size
    return np.random.default_rng(0).standard_normal((n or 1, c or 3, h, w)).astype(np.float32)


def profile_onnxruntime(model: Path, rounds: int, threads: int | None, size: int | None,
                        precision: str = "fp32") -> tuple[list[Kernel], dict]:
    from runtime.backends.ort_backend import OrtBackend

    if precision != "fp32":
        raise RuntimeInputError(f"precision {precision}: onnxruntime's CPU kernels run FP32 here; profile it on openvino")
    with tempfile.TemporaryDirectory(prefix="iml-ops-") as folder:
        backend = OrtBackend(model, ["CPUExecutionProvider"], threads=threads, profile_prefix=Path(folder) / "ort")
        try:
            x = _input(backend, size)
            for _ in range(rounds + 1):  # warm-up first: read_ort_trace keeps the last `rounds`
                backend.run(x)
        finally:  # the trace is written now, while its folder exists, also when a run failed
            trace = backend.end_profiling()
        kernels = read_ort_trace(trace, rounds)
    return kernels, backend.settings


def profile_openvino(model: Path, rounds: int, threads: int | None, size: int | None,
                     precision: str = "fp32") -> tuple[list[Kernel], dict]:
    from runtime.backends.openvino_backend import OpenVinoBackend

    # one line if there is no openvino, or no native BF16 for precision="bf16"
    backend = OpenVinoBackend(model, precision=precision, threads=threads, perf_counts=True)
    from openvino import ProfilingInfo

    x = _input(backend, size)
    backend.run(x)
    total: dict[str, float] = defaultdict(float)
    kinds: dict[str, tuple[str, str]] = {}  # node -> (op type, implementation)
    for _ in range(rounds):
        backend.run(x)
        for layer in backend.profiling_info():
            if layer.status == ProfilingInfo.Status.EXECUTED:  # not the NOT_RUN / OPTIMIZED_OUT layers
                total[layer.node_name] += layer.real_time.total_seconds() * 1e3
                kinds[layer.node_name] = (layer.node_type, layer.exec_type)
    return ([Kernel(name, kinds[name][0], ms / rounds, impl=kinds[name][1]) for name, ms in total.items()],
            backend.settings)


def summarize(kernels: list[Kernel], key) -> list[Group]:
    """Kernels grouped by ``key(kernel)``, slowest first."""
    whole = sum(k.ms for k in kernels) or 1.0
    groups: dict[str, list[Kernel]] = defaultdict(list)
    for k in kernels:
        groups[key(k)].append(k)
    out = []
    for name, members in groups.items():
        ms = sum(k.ms for k in members)
        counted = [k for k in members if k.gflop is not None]
        counted_ms = sum(k.ms for k in counted)
        rate = sum(k.gflop for k in counted) / (counted_ms / 1e3) if counted and counted_ms > 0 else None
        by_op: dict[str, float] = defaultdict(float)
        for k in members:
            by_op[k.op] += k.ms
        top = sorted(by_op.items(), key=lambda kv: -kv[1])[:3]
        out.append(Group(name, ms, ms / whole, len(members), rate, [(op, t / whole) for op, t in top]))
    return sorted(out, key=lambda g: -g.ms)


def table(groups: list[Group], title: str, top: int, with_ops: bool) -> str:
    lines = [f"{title:<34} {'share':>6} {'ms/call':>9} {'kernels':>7} {'GFLOP/s':>8}" + ("  top ops" if with_ops else "")]
    for g in groups[:top]:
        rate = f"{g.gflops:8.1f}" if g.gflops is not None else f"{'-':>8}"
        ops = "  " + ", ".join(f"{op} {s:.1%}" for op, s in g.top_ops) if with_ops else ""
        lines.append(f"{g.key[:34]:<34} {g.share:6.1%} {g.ms:9.2f} {g.kernels:7d} {rate}{ops}")
    if len(groups) > top:
        rest = groups[top:]
        lines.append(f"{f'({len(rest)} more)':<34} {sum(g.share for g in rest):6.1%} {sum(g.ms for g in rest):9.2f}")
    return "\n".join(lines)


def plot(by_op: list[Group], by_module: list[Group], title: str, top: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * top + 1.5))
    for ax, groups, what in ((axes[0], by_op, "op type"), (axes[1], by_module, "module")):
        shown = groups[:top][::-1]
        ax.barh([g.key[:28] for g in shown], [g.ms for g in shown], color="#4c72b0")
        ax.set_xlabel("ms per call")
        ax.set_title(f"by {what}")
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@one_line_errors(RuntimeInputError, OSError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ops", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="an exported ONNX model (with the prob / score outputs)")
    parser.add_argument("--backend", choices=BACKENDS, default="onnxruntime")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: OpenVINO's BF16 kernels (default fp32)")
    parser.add_argument("--rounds", type=int, default=3, help="profiled calls after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
    parser.add_argument("--size", type=int, default=None, help="input size for a model with a dynamic one")
    parser.add_argument("--depth", type=int, default=1, help="module path parts to group by (default 1)")
    parser.add_argument("--top", type=int, default=15, help="rows per table (default 15)")
    parser.add_argument("--out", type=Path, default=Path("bench-out") / "ops", help="folder for the JSON and PNG")
    parser.add_argument("--no-files", action="store_true", help="print the tables only")
    args = parser.parse_args(argv)
    if min(args.rounds, args.depth, args.top) < 1:
        parser.error("--rounds, --depth and --top must be positive")
    if args.precision != "fp32" and args.backend == "onnxruntime":
        parser.error(f"--precision {args.precision}: onnxruntime's CPU kernels run FP32 here; use --backend openvino")
    if not args.model.is_file():
        raise RuntimeInputError(f"model {args.model}: file not found")
    names = graph_modules(args.model)  # first: a file that is no ONNX model fails here, in one line
    run = profile_onnxruntime if args.backend == "onnxruntime" else profile_openvino
    kernels, settings = run(args.model, args.rounds, args.threads, args.size, args.precision)
    if not kernels:
        raise RuntimeInputError(f"model {args.model}: the {args.backend} profile holds no kernels")
    by_op = summarize(kernels, lambda k: k.op)
    by_module = summarize(kernels, lambda k: module_of(k.name, args.depth, names))
    whole = sum(k.ms for k in kernels)
    head = (f"{args.model.name}: {args.backend} {settings.get('version', '')} {args.precision.upper()}, "
            f"threads {settings.get('threads')}, {args.rounds} profiled calls, kernels sum to {whole:.1f} ms per call")
    print(head)
    print(table(by_op, "op type", args.top, with_ops=False))
    print()
    print(table(by_module, f"module (depth {args.depth})", args.top, with_ops=True))
    if not args.no_files:
        stem = args.model.name[: -len(".onnx")] if args.model.name.endswith(".onnx") else args.model.name
        record: dict[str, Any] = {"model": str(args.model), "backend": args.backend, "precision": args.precision,
                                  "settings": settings,
                                  "rounds": args.rounds, "depth": args.depth, "ms_per_call": whole,
                                  "by_op": [asdict(g) for g in by_op], "by_module": [asdict(g) for g in by_module],
                                  "kernels": [asdict(k) for k in sorted(kernels, key=lambda k: -k.ms)]}
        fig = plot(by_op, by_module, head, args.top)
        made = not args.out.exists()
        args.out.mkdir(parents=True, exist_ok=True)
        if args.backend != "onnxruntime":
            stem += f".{args.backend}" + ("" if args.precision == "fp32" else f"-{args.precision}")
        json_path, png = args.out / f"{stem}.ops.json", args.out / f"{stem}.ops.png"
        try:
            with atomic_files([json_path, png]) as (json_tmp, png_tmp):  # both files or neither
                json_tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
                fig.savefig(png_tmp, format="png", dpi=110)
        except BaseException:
            if made:
                args.out.rmdir()
            raise
        print(f"wrote {json_path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

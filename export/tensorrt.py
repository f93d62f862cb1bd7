"""``python -m export.tensorrt MODEL.onnx --precision fp32|fp16|int8 [--shapes ...] --out ENGINE``:
build a TensorRT engine with the TensorRT Python API on the GPU it will run on, and write its
sidecar (``ENGINE.json``: the ONNX sidecar's contract plus ``extra.tensorrt`` with the TensorRT
version, GPU name and compute capability, precision, profile shapes and build time).
``python -m export.tensorrt --adopt ENGINE --onnx MODEL.onnx [--plan plan.json]`` writes that
sidecar for an engine built elsewhere (trtexec), from the engine itself (``export.trt_adopt``).

- TensorRT 10.x: weak typing with builder flags (FP16, INT8 on a Q/DQ graph) and the FP32
  islands (``--fp32-nodes``; for int8 by default the islands ``export.quantize`` left in
  float) as layer precision constraints, by the rule ``export.trt_islands`` shares with
  trtexec; ``--strongly-typed`` builds the 11.x way. TensorRT 11.x: always strongly typed,
  so fp16/int8 need the mixed-precision or Q/DQ ONNX (``export.trt_plan`` decides, the same
  way for ``export.trtexec``).
- One optimization profile (dynamic batch and size), a timing cache that is read before and
  written after the build (when TensorRT cannot make one, the build goes on without it and
  says so), and a workspace memory-pool limit.
- Before the build the graph is linted for the TensorRT version found (``export.check``);
  after it the engine runs once through the runtime's TensorRT backend against onnxruntime
  on the CPU (non-finite outputs fail the build; the difference goes into the sidecar).
Files appear only when the build succeeded (temp files beside the target, then renamed).
"""
from __future__ import annotations

from train.cli import interrupts_in_one_line, one_line_errors

interrupts_in_one_line(__name__)  # before the heavy imports

import argparse
import os
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from runtime.atomic import atomic_write_bytes, mkstemp
from runtime.errors import RuntimeInputError
from runtime.sidecar import (TENSORRT_EXTRA_KEY, ArtifactInfo, ParityInfo, Sidecar, TensorRTBuild, sha256_file,
                             sidecar_path)

from .check import load_graph
from .recipes import RecipeError, load_recipes
from .trt_islands import IslandLayers, constrain_layers, int8_islands, island_layers, metadata_node
from .trt_plan import PRECISIONS, BuildPlan, GraphPrecision, PlanError, load_fp32_nodes, parse_version, plan_build
from .trt_shapes import ShapeError, ShapeProfile, batch_range_problem, graph_input, parse_shapes
from .trt_support import check_graph, target_for_version

#: Parity tolerance of the built engine against onnxruntime CPU (max |diff| of prob and
#: score). FP32 builds still use TF32 matmuls (TensorRT's default), hence not 1e-5.
TOLERANCE = {"fp32": 1e-2, "fp16": 5e-2, "int8": 1e-1}


class BuildError(RuntimeError):
    """A failed engine build; the message is one line."""


@dataclass(frozen=True)
class BuildResult:
    engine: Path
    sidecar: Path
    plan: BuildPlan
    build: TensorRTBuild
    parity: ParityInfo | None
    notes: tuple[str, ...]


def engine_sidecar(onnx_side: Sidecar, engine_file: str, engine_sha: str, build: TensorRTBuild,
                   profile: ShapeProfile, parity: ParityInfo | None) -> Sidecar:
    """The engine's sidecar: the ONNX sidecar's preprocessing and outputs, the engine as the
    artifact, the profile's batch as the input batch, and the build info in extra."""
    batch: int | str = "batch" if profile.min[0] != profile.max[0] else profile.max[0]
    dims = list(onnx_side.input.shape)
    dims[0] = batch
    for k in (2, 3):  # a fixed profile size is the engine's size
        if profile.min[k] == profile.max[k]:
            dims[k] = profile.max[k]
    outputs = tuple(replace(o, shape=(batch, *o.shape[1:])) for o in onnx_side.outputs)
    return replace(
        onnx_side,
        artifact=ArtifactInfo(engine_file, "tensorrt", engine_sha),
        input=replace(onnx_side.input, shape=tuple(dims)),
        outputs=outputs,
        exporter=f"export.tensorrt (TensorRT {build.version}, {build.precision})",
        versions={**onnx_side.versions, "tensorrt": build.version},
        parity=parity,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        extra={**onnx_side.extra, TENSORRT_EXTRA_KEY: build.to_dict()},
    ).validate()


def layer_node(layer: Any) -> str | None:
    """The ONNX node a TensorRT layer came from (its metadata, else its name)."""
    return metadata_node(getattr(layer, "metadata", "")) or layer.name


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise BuildError("TensorRT is not installed here (the gpu-cu12 or gpu-cu13 extra, on the GPU machine), "
                         "or write a device script instead: python -m export.trtexec") from None
    return trt


def attach_timing_cache(config: Any, path: Path) -> tuple[Any, str | None]:
    """Read the timing cache at ``path`` (a new one when absent) into ``config``; returns
    (cache or None, a note). ``create_timing_cache`` can return None (NVIDIA's samples check
    for it): the build then goes on without a cache, and the note says so."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache, None
    note = None
    if data:  # unreadable, or made by another TensorRT version or device
        note = f"timing cache {path} was made by another TensorRT version or device, or is unreadable; started a new one"
        cache = config.create_timing_cache(b"")
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return cache, note
    return None, "warning: TensorRT could not create a timing cache; building without one"


def _parse(trt: Any, network: Any, logger: Any, onnx_path: Path) -> Any:
    """Parse the ONNX into ``network``; returns the parser, which owns the weights the network
    points to and must stay alive until the engine is built."""
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return parser
    errors = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        node = e.node_name() if hasattr(e, "node_name") else e.node()
        errors.append(f"node {node}: {e.desc()}")
    raise BuildError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse it: "
                     f"{errors[0] if errors else 'unknown error'} ({len(errors)} error(s))")


def _verify(engine_tmp: Path, side: Sidecar, onnx_path: Path, profile: ShapeProfile, precision: str,
            device: int) -> ParityInfo:
    from runtime.backends.ort_backend import OrtBackend
    from runtime.backends.tensorrt_backend import TensorRTBackend

    pre = side.preprocess
    rng = np.random.default_rng(0)
    x = rng.random(profile.opt, dtype=np.float32)
    x = ((x - np.asarray(pre.mean, np.float32).reshape(1, 3, 1, 1)) / np.asarray(pre.std, np.float32).reshape(1, 3, 1, 1))
    ref = OrtBackend(onnx_path, providers=["CPUExecutionProvider"]).run(x)
    with TensorRTBackend(engine_tmp, sidecar=side, device=device) as backend:
        got = backend.run(x)
    if not all(np.isfinite(got[k]).all() for k in ("prob", "score")):
        raise BuildError(f"the {precision} engine gives non-finite outputs (FP16 overflow?): keep the overflowing "
                         "layers in FP32 (--fp32-nodes from python -m export.fp16)")
    diff = max(float(np.abs(got[k] - ref[k]).max()) for k in ("prob", "score"))
    return ParityInfo(max_abs_diff=diff, tolerance=TOLERANCE[precision], passed=diff <= TOLERANCE[precision],
                      reference="onnxruntime-cpu")


def build_engine(onnx_path: str | Path, out: str | Path, *, precision: str = "fp32", shapes: str | None = None,
                 opt_batch: int | None = None, max_batch: int | None = None, workspace_mib: int = 1024,
                 timing_cache: str | Path | None = None, fp32_nodes: tuple[str, ...] | None = None,
                 strongly_typed: bool | None = None, opt_level: int | None = None, device: int = 0,
                 verify: bool = True, verbose: bool = False, batch_from_recipe: bool = False) -> BuildResult:
    """Build ``onnx_path`` into the engine ``out`` (+ sidecar); raises BuildError (or the
    PlanError / ShapeError of a request that cannot build).

    ``opt_batch`` / ``max_batch`` (default 1 / 8) shape a dynamic batch; given for a graph with
    a static batch they are a ShapeError, or a note with ``batch_from_recipe``. ``fp32_nodes``
    None takes the int8 islands of the Q/DQ sidecar on 10.x weak typing (none otherwise)."""
    onnx_path, out = Path(onnx_path), Path(out)
    model = load_graph(onnx_path)
    if not sidecar_path(onnx_path).is_file():
        raise BuildError(f"{onnx_path}: no sidecar {sidecar_path(onnx_path)} (export with python -m export.onnx)")
    onnx_side = Sidecar.load(sidecar_path(onnx_path))
    if onnx_side.artifact.sha256 != sha256_file(onnx_path):
        raise BuildError(f"{onnx_path}: stale sidecar {sidecar_path(onnx_path)} (its sha256 is not this file's; "
                         "re-export the model)")
    notes: list[str] = []
    name, dims = graph_input(model)
    if opt_batch is not None or max_batch is not None:
        problem = batch_range_problem(dims, opt_batch or 1, max_batch or max(8, opt_batch or 1))
        if problem and not batch_from_recipe:
            raise ShapeError(f"{onnx_path}: {problem}")
        if problem:
            notes.append(f"warning: {problem}")
    profile = parse_shapes(shapes, name, dims, size=tuple(onnx_side.preprocess.size),
                           opt_batch=opt_batch or 1, max_batch=max_batch or max(8, opt_batch or 1))

    trt = _import_tensorrt()
    from runtime.backends.tensorrt_backend import query_gpu

    target = target_for_version(trt.__version__)
    report = check_graph(model, target)
    if not report.ok:
        raise BuildError(f"{onnx_path}: fails the {target.name} lint: {report.problems[0]} "
                         f"({len(report.problems)} problem(s))")
    weak = parse_version(trt.__version__)[0] == 10 and not strongly_typed
    if fp32_nodes is None:
        fp32_nodes = int8_islands(onnx_side) if precision == "int8" and weak else ()
        if fp32_nodes:
            notes.append(f"FP32 islands: the {len(fp32_nodes)} node(s) export.quantize left in float")
    islands = island_layers(model, fp32_nodes)  # unknown names fail on every version
    if weak:
        notes += islands.notes()
    else:
        islands = IslandLayers(tuple(fp32_nodes))  # plan_build says why they are ignored
    plan = plan_build(trt.__version__, precision, GraphPrecision.of(model), islands.layers, strongly_typed)
    try:
        gpu = query_gpu(device)
    except RuntimeInputError as err:
        raise BuildError(str(err)) from None

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed:  # 10.x and 11.x both have the flag; 11.x networks are strongly typed regardless
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = _parse(trt, network, logger, onnx_path)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if opt_level is not None:
        config.builder_optimization_level = opt_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if profile.needs_profile:
        trt_profile = builder.create_optimization_profile()
        trt_profile.set_shape(profile.input, profile.min, profile.opt, profile.max)
        config.add_optimization_profile(trt_profile)
    cache_path = Path(timing_cache) if timing_cache else out.with_name(out.name + ".timing-cache")
    notes += plan.notes
    cache, cache_note = attach_timing_cache(config, cache_path)
    if cache_note:
        notes.append(cache_note)

    fp32_layers = 0
    if plan.fp32_nodes:  # 10.x weak typing only: 11.x layers have no precision to set
        fp32_layers, unmatched = constrain_layers(trt, network, plan.fp32_nodes)
        if unmatched:
            notes.append(f"{len(unmatched)} FP32 island layer(s) not in the parsed network (no layer carries "
                         f"the node's name: fused, folded or renamed), e.g. {unmatched[0]}")

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    del parser  # the weights it owns were needed up to here
    if serialized is None:
        raise BuildError(f"{onnx_path}: TensorRT {trt.__version__} could not build the engine "
                         "(rerun with --verbose for TensorRT's log)")
    data = bytes(serialized)

    build = TensorRTBuild(version=trt.__version__, gpu=gpu.name, compute_capability=gpu.compute_capability,
                          precision=plan.precision, strongly_typed=plan.strongly_typed,
                          profile=profile.as_dict(), workspace_mib=workspace_mib, build_seconds=round(seconds, 3),
                          onnx_file=onnx_path.name, onnx_sha256=sha256_file(onnx_path),
                          builder_flags=plan.builder_flags, fp32_layers=fp32_layers)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.write_bytes(data)
        digest = sha256_file(tmp)
        side = engine_sidecar(onnx_side, out.name, digest, build, profile, None)
        parity = _verify(tmp, side, onnx_path, profile, plan.precision, device) if verify else None
        if parity is not None:
            side = replace(side, parity=parity)
            if not parity.passed:
                notes.append(f"engine differs from onnxruntime by {parity.max_abs_diff:.3g} "
                             f"(> {parity.tolerance:g} for {plan.precision})")
        final_cache = config.get_timing_cache() if cache is not None else None
        if final_cache is not None:
            atomic_write_bytes(cache_path, bytes(final_cache.serialize()))
        os.replace(tmp, out)
        side.save(sidecar_path(out))
    finally:
        tmp.unlink(missing_ok=True)
    return BuildResult(out, sidecar_path(out), plan, build, side.parity, tuple(notes))


@one_line_errors()  # Ctrl-C: one line, exit 130 (this tool reports its own errors)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.tensorrt", description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="ONNX file with its sidecar (the mixed-precision / Q/DQ one for 11.x)")
    parser.add_argument("--out", help="engine path (.engine or .plan)")
    parser.add_argument("--adopt", metavar="ENGINE", help="write the sidecar of an engine built elsewhere "
                        "(trtexec), read from the engine itself; needs --onnx, runs on the engine's GPU")
    parser.add_argument("--onnx", help="with --adopt: the ONNX (with its sidecar) the engine was built from")
    parser.add_argument("--plan", help="with --adopt: plan.json of python -m export.trtexec (flags, workspace)")
    parser.add_argument("--recipe", help="take defaults from a recipe in engines/recipes.toml")
    parser.add_argument("--precision", choices=PRECISIONS, help="default fp32 (or the recipe's)")
    parser.add_argument("--shapes", help="[NAME:]OPT or [NAME:]MIN,OPT,MAX, shapes NxCxHxW")
    parser.add_argument("--opt-batch", type=int, help="profile batch to tune for (dynamic batch; default 1)")
    parser.add_argument("--max-batch", type=int, help="largest profile batch (dynamic batch; default 8)")
    parser.add_argument("--workspace-mib", type=int, help="workspace memory-pool limit (default 1024)")
    parser.add_argument("--timing-cache", help="timing cache file (default ENGINE.timing-cache)")
    parser.add_argument("--fp32-nodes", help="FP32 islands: JSON list / text file of ONNX node names (10.x)")
    parser.add_argument("--strongly-typed", action="store_true", help="10.x: build strongly typed (11.x always is)")
    parser.add_argument("--opt-level", type=int, choices=range(6), metavar="0-5", help="builder optimization level")
    parser.add_argument("--device", type=int, default=0, help="CUDA device (default 0)")
    parser.add_argument("--no-verify", action="store_true", help="skip the engine-vs-onnxruntime check")
    parser.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    parser.add_argument("--recipes", help="recipe file (default engines/recipes.toml)")
    args = parser.parse_args(argv)
    if args.adopt:
        if not args.onnx or args.model or args.out:
            parser.error("--adopt ENGINE takes --onnx MODEL.onnx (and --plan), not MODEL or --out")
        from .trt_adopt import main_adopt

        return main_adopt(args.adopt, args.onnx, args.plan, args.device)
    if not args.model or not args.out:
        parser.error("give MODEL.onnx and --out ENGINE (or --adopt ENGINE --onnx MODEL.onnx)")
    if args.onnx or args.plan:
        parser.error("--onnx and --plan go with --adopt")
    if Path(args.out).suffix.lower() not in (".engine", ".plan"):
        parser.error("--out must end in .engine or .plan (the runtime picks its backend by suffix)")
    try:
        recipe = load_recipes(args.recipes).get(args.recipe) if args.recipe else None

        def pick(value: Any, key: str, default: Any) -> Any:
            return value if value is not None else (getattr(recipe, key) if recipe else default)

        res = build_engine(
            args.model, args.out, precision=pick(args.precision, "precision", "fp32"), shapes=args.shapes,
            opt_batch=pick(args.opt_batch, "opt_batch", None), max_batch=pick(args.max_batch, "max_batch", None),
            batch_from_recipe=recipe is not None and args.opt_batch is None and args.max_batch is None,
            workspace_mib=pick(args.workspace_mib, "workspace_mib", 1024), timing_cache=args.timing_cache,
            fp32_nodes=load_fp32_nodes(args.fp32_nodes) if args.fp32_nodes else None,
            strongly_typed=True if args.strongly_typed else (recipe.strongly_typed if recipe else None),
            opt_level=pick(args.opt_level, "opt_level", None), device=args.device,
            verify=not args.no_verify, verbose=args.verbose)
    except (BuildError, PlanError, ShapeError, RecipeError, RuntimeInputError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    b = res.build
    for note in res.notes:
        print(f"note: {note}")
    print(f"wrote {res.engine} and {res.sidecar}: TensorRT {b.version} on {b.gpu} (sm {b.compute_capability}), "
          f"{b.precision}{' strongly typed' if b.strongly_typed else ''}, {b.fp32_layers} FP32 layer(s), "
          f"built in {b.build_seconds:.1f} s")
    print(f"profile {b.profile['input']}: min {b.profile['min']} opt {b.profile['opt']} max {b.profile['max']}")
    if res.parity is not None:
        print(f"engine vs onnxruntime CPU: max |diff| {res.parity.max_abs_diff:.2e} "
              f"(tolerance {res.parity.tolerance:g}: {'ok' if res.parity.passed else 'EXCEEDED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

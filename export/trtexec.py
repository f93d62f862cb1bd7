"""``python -m export.trtexec --model NAME --target RECIPE``: the exact trtexec commands for a
deployment target (``engines/recipes.toml``) and a folder to copy to the device that runs
them: the ONNX and its sidecar, ``build_and_profile.sh``, ``commands.txt``, ``plan.json``.

The script builds the engine (timing cache, workspace, optimization profile, precision flags
and FP32 islands as layer precision constraints on 10.x, strong typing on 11.x), writes its
sidecar with ``python -m export.tensorrt --adopt`` where this kit is installed on the device
(so the runtime loads the engine), then benchmarks it with ``--dumpProfile
--separateProfileRun --exportTimes --exportProfile --exportLayerInfo``;
``python -m bench.trtexec_json`` reads the JSON files back. Every flag is checked against the
trtexec flags of the recipe's TensorRT version, and the graph against the recipe's lint
target, before anything is written.

FP32 islands follow ``export.trt_islands`` (the rule the Python builder uses too): fp16 on
10.x takes ``export.fp16``'s island list, int8 on 10.x (``--int8 --fp16``) the islands
``export.quantize`` left in float (from the Q/DQ ONNX's sidecar), each as
``--precisionConstraints=obey --layerPrecisions=... --layerOutputTypes=...``. On 11.x the
graph is strongly typed: an int8 engine is INT8 where the Q/DQ graph quantizes and FP32
elsewhere, not FP16.
"""
from __future__ import annotations

from train.cli import ArgumentParser, interrupts_in_one_line, one_line_errors, output_folder

interrupts_in_one_line(__name__)  # before the heavy imports

from train.models.external import file_stem  # noqa: E402

import json
import shlex
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from runtime.atomic import atomic_folder, umask
from runtime.sidecar import Sidecar, sidecar_path

from .check import load_graph
from .recipes import Recipe, RecipeBook, RecipeError, load_recipes
from .trt_islands import int8_islands, island_layers, trtexec_island_args
from .trt_plan import PRECISIONS, BuildPlan, GraphPrecision, PlanError, load_fp32_nodes, plan_build
from .trt_shapes import ShapeError, ShapeProfile, batch_range_problem, graph_input, parse_shapes
from .trt_support import check_graph

SCRIPT = "build_and_profile.sh"
FLAG_ARGS = {"FP16": ["--fp16"], "INT8": ["--int8"], "OBEY_PRECISION_CONSTRAINTS": ["--precisionConstraints=obey"]}


@dataclass(frozen=True)
class TrtexecJob:
    recipe: Recipe
    plan: BuildPlan
    profile: ShapeProfile
    onnx: str
    engine: str
    build: list[str]
    bench: list[str]
    outputs: dict[str, str]  # what the script writes: engine, timing cache, JSON exports, logs
    notes: tuple[str, ...] = ()  # warnings for the user (a recipe batch range a static batch drops, ...)


def precision_args(plan: BuildPlan) -> list[str]:
    """trtexec flags for a build plan: precision flags and FP32 islands (10.x weak typing),
    --stronglyTyped on 10.x strong typing, nothing on 11.x (strong typing is always on)."""
    args: list[str] = []
    if plan.strongly_typed:
        return ["--stronglyTyped"] if plan.major == 10 else []
    for flag in plan.builder_flags:
        args += FLAG_ARGS[flag]
    return args + trtexec_island_args(plan.fp32_nodes)


def make_job(recipe: Recipe, plan: BuildPlan, profile: ShapeProfile, onnx_name: str, stem: str,
             book: RecipeBook | None = None, trtexec: str | None = None, notes: tuple[str, ...] = ()) -> TrtexecJob:
    """Both commands (argv lists) for one recipe; raises RecipeError on a flag the recipe's
    TensorRT version lacks."""
    exe = trtexec or recipe.trtexec
    out = {"engine": f"{stem}.engine", "timing_cache": "timing.cache", "times": "times.json",
           "profile": "profile.json", "layers": "layers.json", "build_log": "build.log", "bench_log": "bench.log"}
    build = [exe, f"--onnx={onnx_name}", f"--saveEngine={out['engine']}", f"--timingCacheFile={out['timing_cache']}",
             f"--memPoolSize=workspace:{recipe.workspace_mib}"]
    if profile.needs_profile:
        build += profile.trtexec_build_flags()
    build += precision_args(plan)
    build += [f"--builderOptimizationLevel={recipe.opt_level}", "--profilingVerbosity=detailed", "--skipInference"]
    bench = [exe, f"--loadEngine={out['engine']}"]
    if profile.needs_profile:
        bench.append(profile.trtexec_run_flag())
    bench += ["--dumpProfile", "--separateProfileRun", f"--exportTimes={out['times']}",
              f"--exportProfile={out['profile']}", f"--exportLayerInfo={out['layers']}", *recipe.bench]
    book = book or load_recipes()
    bad = book.invalid_flags(build[1:] + bench[1:], recipe.tensorrt)
    if bad:
        raise RecipeError(f"recipe {recipe.name}: trtexec of TensorRT {recipe.tensorrt} has no "
                          f"{', '.join(sorted({b.split('=')[0] for b in bad}))}")
    return TrtexecJob(recipe, plan, profile, onnx_name, out["engine"], build, bench, out, tuple(notes))


def render_script(job: TrtexecJob, model: str) -> str:
    """The device script: checks trtexec's major version, builds, then profiles."""
    r = job.recipe
    major = r.major
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    build = '"$TRTEXEC" ' + shlex.join(job.build[1:])
    bench = '"$TRTEXEC" ' + shlex.join(job.bench[1:])
    return f"""#!/usr/bin/env bash
# {model} for {r.name}: {r.description}
# Generated by `python -m export.trtexec` on {stamp}. TensorRT {r.tensorrt}, precision {job.plan.precision}
# ({'strongly typed' if job.plan.strongly_typed else 'weak typing'}), profile min/opt/max
# {'/'.join('x'.join(map(str, d)) for d in (job.profile.min, job.profile.opt, job.profile.max))}.
# Copy this folder to the device and run it there: bash {SCRIPT}   (TRTEXEC=/path/to/trtexec to override)
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-{r.trtexec}}}"
if ! command -v "$TRTEXEC" >/dev/null 2>&1; then
    echo "trtexec not found at $TRTEXEC (set TRTEXEC=...)" >&2; exit 1
fi
version=$("$TRTEXEC" --help 2>&1 | grep -o 'TensorRT v[0-9]*' | head -n 1 | tr -dc '0-9' || true)
if [ -n "$version" ] && [ "$((version / 10000))" != "{major}" ]; then
    echo "this script is for TensorRT {major}.x (recipe {r.name}); $TRTEXEC is TensorRT $((version / 10000)).$(((version / 100) % 100))" >&2
    exit 1
fi

echo "== build {job.engine}"
{build} 2>&1 | tee {job.outputs['build_log']}

# The engine's sidecar (ENGINE.json), read from the engine, so the runtime loads it.
PYTHON="${{PYTHON:-python3}}"
if "$PYTHON" -c "import export.tensorrt" >/dev/null 2>&1; then
    "$PYTHON" -m export.tensorrt --adopt {shlex.quote(job.engine)} --onnx {shlex.quote(job.onnx)} --plan plan.json \
        || echo "warning: no sidecar for {job.engine} (see the error above); the profile still runs" >&2
else
    echo "note: imlkit is not importable with $PYTHON here: no sidecar written; run" \
         "python -m export.tensorrt --adopt {shlex.quote(job.engine)} --onnx {shlex.quote(job.onnx)} --plan plan.json" \
         "where it is (on this device: the engine's GPU)" >&2
fi

echo "== profile {job.engine}"
{bench} 2>&1 | tee {job.outputs['bench_log']}

echo "wrote {job.engine}, {job.outputs['times']}, {job.outputs['profile']}, {job.outputs['layers']}"
echo "summary: python -m bench.trtexec_json --times {job.outputs['times']} --profile {job.outputs['profile']}"
"""


def write_bundle(job: TrtexecJob, model: str, onnx_path: Path, out: Path) -> Path:
    """Write the device folder atomically: assembled beside ``out``, then renamed into place."""
    with atomic_folder(out) as tmp:
        shutil.copyfile(onnx_path, tmp / job.onnx)
        if sidecar_path(onnx_path).is_file():
            shutil.copyfile(sidecar_path(onnx_path), sidecar_path(tmp / job.onnx))
        script = tmp / SCRIPT
        script.write_text(render_script(job, model), encoding="utf-8")
        script.chmod(0o777 & ~umask())
        (tmp / "commands.txt").write_text(shlex.join(job.build) + "\n" + shlex.join(job.bench) + "\n", encoding="utf-8")
        (tmp / "plan.json").write_text(json.dumps({
            "model": model, "recipe": job.recipe.name, "tensorrt": job.recipe.tensorrt, "lint": job.recipe.lint,
            "workspace_mib": job.recipe.workspace_mib, "notes": list(job.notes),
            "plan": job.plan.as_dict(), "profile": job.profile.as_dict(), "outputs": job.outputs,
            "build": job.build, "bench": job.bench}, indent=2) + "\n", encoding="utf-8")
    return out


def plan_job(model: str, onnx_path: Path, recipe: Recipe, book: RecipeBook, *, precision: str | None = None,
             shapes: str | None = None, fp32_nodes: tuple[str, ...] | None = None) -> TrtexecJob:
    """Lint the graph for the recipe's target, plan the build and make the commands.
    ``fp32_nodes`` None: for int8 on 10.x weak typing, the islands ``export.quantize`` left in
    float (the Q/DQ sidecar's ``extra.precision.unquantized_islands``); none otherwise."""
    graph = load_graph(onnx_path)
    report = check_graph(graph, recipe.lint)
    if not report.ok:
        raise PlanError(f"{onnx_path}: fails the {recipe.lint} lint: {report.problems[0]} "
                        f"({len(report.problems)} problem(s); python -m export.check for all)")
    side = Sidecar.load(sidecar_path(onnx_path)) if sidecar_path(onnx_path).is_file() else None
    precision = precision or recipe.precision
    weak = recipe.major == 10 and not recipe.strongly_typed
    notes: list[str] = []
    if fp32_nodes is None:
        fp32_nodes = int8_islands(side) if side is not None and precision == "int8" and weak else ()
        if fp32_nodes:
            notes.append(f"FP32 islands: the {len(fp32_nodes)} node(s) export.quantize left in float")
    islands = island_layers(graph, fp32_nodes)
    if weak:
        notes += islands.notes()
    layers = islands.layers if weak else tuple(fp32_nodes)
    plan = plan_build(recipe.tensorrt, precision, GraphPrecision.of(graph), layers,
                      strongly_typed=recipe.strongly_typed)
    name, dims = graph_input(graph)
    size = tuple(side.preprocess.size) if side is not None else None
    problem = batch_range_problem(dims, recipe.opt_batch, recipe.max_batch) if not shapes else None
    if problem:
        notes.append(f"warning: recipe {recipe.name}: {problem}")
    profile = parse_shapes(shapes, name, dims, size=size, opt_batch=recipe.opt_batch, max_batch=recipe.max_batch)
    return make_job(recipe, plan, profile, onnx_path.name, f"{model}-{plan.precision}", book, notes=tuple(notes))


def default_inputs(model: str, recipe: Recipe, precision: str, root: Path = Path("artifacts")) -> tuple[Path, Path | None]:
    """The ONNX and FP32 island file to use when none are given: the graph that carries the
    precision where the build needs it (``MODEL.fp16.onnx`` of ``export.precision`` under
    strong typing, ``MODEL.int8.onnx`` of ``export.quantize`` for int8), else ``MODEL.onnx``
    with the island list ``MODEL.fp16.islands.json`` for a weakly typed fp16 build, if present."""
    strong = recipe.strongly_typed or recipe.major >= 11
    if precision == "int8":
        return root / f"{model}.int8.onnx", None
    if precision == "fp16" and strong:
        return root / f"{model}.fp16.onnx", None
    islands = root / f"{model}.fp16.islands.json"
    return root / f"{model}.onnx", islands if precision == "fp16" and islands.is_file() else None


@one_line_errors(ValueError, OSError)  # Ctrl-C: one line, exit 130; an unwritable --out: one line
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m export.trtexec", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model name or package.module:factory (names the engine; "
                        "default ONNX artifacts/NAME.onnx, ':' as '.')")
    parser.add_argument("--target", required=True, help="recipe name in engines/recipes.toml")
    parser.add_argument("--onnx", help="ONNX file (default artifacts/MODEL.onnx; MODEL.fp16.onnx for a strongly "
                                       "typed fp16 build, MODEL.int8.onnx for int8)")
    parser.add_argument("--precision", choices=PRECISIONS, help="override the recipe's precision")
    parser.add_argument("--shapes", help="[NAME:]OPT or [NAME:]MIN,OPT,MAX, shapes NxCxHxW")
    parser.add_argument("--fp32-nodes", help="FP32 islands for 10.x fp16: export.fp16's island list, a JSON "
                                             "list or text file of node names (default artifacts/MODEL.fp16.islands.json "
                                             "if present)")
    parser.add_argument("--out", help="output folder (default artifacts/trtexec/MODEL-TARGET)")
    parser.add_argument("--recipes", help="recipe file (default engines/recipes.toml)")
    args = parser.parse_args(argv)
    stem = file_stem(args.model)  # an import path names files as export.onnx does
    out = output_folder(args.out or f"artifacts/trtexec/{stem}-{args.target}")
    try:
        book = load_recipes(args.recipes)
        recipe = book.get(args.target)
        default_onnx, default_islands = default_inputs(stem, recipe, args.precision or recipe.precision)
        onnx_path = Path(args.onnx) if args.onnx else default_onnx
        if not onnx_path.is_file():
            raise PlanError(f"{onnx_path}: ONNX not found (python -m export.onnx --model {args.model}; "
                            "export.fp16 / export.quantize write the .fp16 / .int8 graphs)")
        island_file = args.fp32_nodes or (default_islands if not args.onnx else None)
        islands = load_fp32_nodes(island_file) if island_file else None
        job = plan_job(stem, onnx_path, recipe, book, precision=args.precision, shapes=args.shapes,
                       fp32_nodes=islands)
        write_bundle(job, args.model, onnx_path, out)
    except (RecipeError, PlanError, ShapeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if island_file and not args.fp32_nodes:
        print(f"note: FP32 islands from {island_file}")
    for note in job.plan.notes + job.notes:
        print(note if note.startswith("warning:") else f"note: {note}")
    print(f"wrote {out}/ ({SCRIPT}, commands.txt, plan.json, {onnx_path.name})")
    print(shlex.join(job.build))
    print(shlex.join(job.bench))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench.exporters``: both ONNX exporters on the same model, side by side (the
"Exporters" table of the README).

For each exporter, one after the other in child processes: ``python -m export.onnx``
(export seconds as it reports them, node count, parity against torch from the sidecar), the
TensorRT op lint of every target (``export.trt_support``), then onnxruntime CPU latency: a
fresh process per measurement loads one graph (default graph optimisation, ``--threads``
intra-op threads), runs ``--warmup`` calls and reports the median of ``--runs`` timed calls
on one fixed input, in wall-clock time and in the process's CPU time (with one intra-op
thread onnxruntime computes on the calling thread, so CPU time leaves out the waits a shared
machine adds). The timing processes alternate between the exporters ``--repeat`` times
(each process times one graph only) and the best median counts, so a burst of load on a
shared machine does not land on one exporter alone. ``--optimized DIR`` also writes
onnxruntime's optimised graph of each export and counts its nodes (what it really runs).
"""
from __future__ import annotations

from train.cli import ArgumentParser, interrupts_in_one_line, one_line_errors

interrupts_in_one_line(__name__)  # before the heavy imports

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_TIMER = r"""
import json, statistics, sys, time
import numpy as np, onnxruntime as ort
path, threads, warmup, runs, size, optimized = sys.argv[1:7]
opts = ort.SessionOptions()
opts.intra_op_num_threads = int(threads)
opts.inter_op_num_threads = 1
if optimized:
    opts.optimized_model_filepath = optimized
sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((1, 3, int(size), int(size))).astype(np.float32)
for _ in range(int(warmup)):
    sess.run(None, {"image": x})
wall, cpu = [], []
for _ in range(int(runs)):
    t, c = time.perf_counter(), time.process_time()
    sess.run(None, {"image": x})
    wall.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
print(json.dumps({"p50_ms": 1e3 * statistics.median(wall), "cpu_p50_ms": 1e3 * statistics.median(cpu)}))
"""


def export_row(model: str, exporter: str, out_dir: Path, *, size: int | None, small: bool,
               variant: str | None) -> dict:
    """One row: export (in a child process) and lint per TensorRT target."""
    import onnx

    from export.trt_support import TARGETS, check_graph
    from runtime.sidecar import Sidecar, sidecar_path

    stem = "-".join([model] + ([variant] if variant else []) + (["small"] if small else []) + [exporter])
    path = out_dir / f"{stem}.onnx"
    cmd = [sys.executable, "-m", "export.onnx", "--model", model, "--out", str(path), "--exporter", exporter]
    cmd += (["--size", str(size)] if size else []) + (["--small"] if small else [])
    cmd += ["--variant", variant] if variant else []
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    row: dict = {"model": model, "variant": variant, "small": small, "exporter": exporter}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return row
    seconds = re.search(r" in ([0-9.]+) s", proc.stdout)
    side = Sidecar.load(sidecar_path(path))
    graph = onnx.load(str(path))
    row.update(size=side.preprocess.size[0], opset=side.opset, export_s=float(seconds.group(1)) if seconds else None,
               nodes=len(graph.graph.node), functions=len(graph.functions), parity=side.parity.max_abs_diff,
               lint={name: check_graph(graph, name).ok for name in TARGETS}, path=str(path), stem=stem)
    return row


def time_row(row: dict, *, threads: int, warmup: int, runs: int, optimized: Path | None) -> None:
    """onnxruntime CPU latency of the row's export in a fresh process; keeps the best median
    over calls (``p50_ms``) and every median (``p50s_ms``)."""
    import onnx

    opt_path = str(optimized / f"{row['stem']}.ort.onnx") if optimized else ""
    timer = subprocess.run([sys.executable, "-c", _TIMER, row["path"], str(threads), str(warmup), str(runs),
                            str(row["size"]), opt_path], cwd=ROOT, capture_output=True, text=True)
    if timer.returncode != 0:
        row["error"] = (timer.stderr.strip().splitlines() or ["timing failed"])[-1]
        return
    got = json.loads(timer.stdout.strip().splitlines()[-1])
    for key in ("p50_ms", "cpu_p50_ms"):
        row.setdefault(key + "_each", []).append(round(got[key], 2))
        row[key] = min(row[key + "_each"])
    if opt_path:
        row["ort_nodes"] = len(onnx.load(opt_path, load_external_data=False).graph.node)


def format_row(row: dict) -> str:
    if "error" in row:
        return f"| {row['model']} | {row['exporter']} | error: {row['error']} |"
    lint = ", ".join(f"{k} {'ok' if v else 'FAIL'}" for k, v in row["lint"].items())
    ort_nodes = f" ({row['ort_nodes']} after ort)" if "ort_nodes" in row else ""
    label = row["model"] + (f" {row['variant']}" if row["variant"] else "") + (" small" if row["small"] else "")
    return (f"| {label} {row['size']} | {row['exporter']} (opset {row['opset']}) | {row['export_s']:.1f} | "
            f"{row['nodes']}{ort_nodes} | {row['parity']:.1e} | {lint} | {row['p50_ms']:.1f} "
            f"({', '.join(f'{v:.0f}' for v in row['p50_ms_each'])}) | {row['cpu_p50_ms']:.1f} "
            f"({', '.join(f'{v:.0f}' for v in row['cpu_p50_ms_each'])}) |")


@one_line_errors(ValueError, OSError)  # Ctrl-C: one line, exit 130; bad input: one line
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench.exporters", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--size", type=int, help="input size (default: the paper's, or the small one)")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--variant")
    parser.add_argument("--exporters", default="dynamo,torchscript", help="comma list (default both)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2,
                        help="timing processes per export, alternating exporters (default 2; the best median counts)")
    parser.add_argument("--out", type=Path, help="keep the exports here (default: a temporary folder)")
    parser.add_argument("--optimized", type=Path, help="write onnxruntime's optimised graphs here")
    parser.add_argument("--json", type=Path, help="append the rows to this JSON-lines file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="imlkit-exporters-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        if args.optimized:
            args.optimized.mkdir(parents=True, exist_ok=True)
        rows = [export_row(args.model, exporter.strip(), out, size=args.size, small=args.small,
                           variant=args.variant) for exporter in args.exporters.split(",") if exporter.strip()]
        for _ in range(args.repeat):
            for row in rows:
                if "error" not in row:
                    time_row(row, threads=args.threads, warmup=args.warmup, runs=args.runs, optimized=args.optimized)
        print("| model size | exporter | export s | nodes | parity | TensorRT lint | ort p50 ms (each process) "
              "| ort CPU-time p50 ms (each) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for row in rows:
            print(format_row(row))
            if args.json:
                with args.json.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

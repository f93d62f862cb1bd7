"""Device checklist: run on the target GPU (a Jetson, a server, a GPU session) from the repo root:

    python engines/device_check.py [--model m2sformer] [--out device-check] [--budget-s 540]

It checks the whole TensorRT path of this kit on that machine, for one seed model, in under
ten minutes (the default budget is 9 minutes; a step that would start past it is recorded
as skipped):

1. exports the model's small configuration to ONNX (``export.onnx``), the FP16
   mixed-precision ONNX with its island list (``export.fp16``) and the Q/DQ INT8 ONNX
   (``export.quantize``), on synthetic calibration images;
2. builds an fp32, an fp16 and an int8 engine with ``export.tensorrt`` (10.x: weak typing,
   FP32 islands as constraints; 11.x: strongly typed from the mixed / Q/DQ graphs);
3. runs each engine through the runtime's TensorRT backend and the FP32 ONNX through
   onnxruntime on the CPU on the same synthetic images, and records the agreement
   (``runtime.agreement``: max |prob| difference, mask IoU, flipped pixels);
4. times each engine with trtexec where one is found (``--trtexec`` or ``trtexec`` on
   ``PATH``, ``/usr/src/tensorrt/bin/trtexec`` on JetPack): ``--exportTimes`` read back by
   ``bench.trtexec_json``;
5. writes ``OUT/device-check.json`` (schema ``imlkit-device-check``, version 1), which
   ``python -m bench.report --device-check OUT/device-check.json`` puts in its report.

A failing step is recorded with its one-line error and the checklist goes on; the exit
status is 1 when any engine failed to build or run. Nothing here runs without a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

SCHEMA = "imlkit-device-check"
VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _cli(module: str, *args: str, timeout: float) -> None:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=max(timeout, 1))
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()
        raise RuntimeError(f"python -m {module}: {lines[-1]}")


def find_trtexec(given: str | None) -> str | None:
    for candidate in (given, shutil.which("trtexec"), JETPACK_TRTEXEC):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def trtexec_times(trtexec: str, engine: Path, shape_flag: str | None, out: Path, timeout: float) -> dict:
    from bench.trtexec_json import read_trtexec

    times = out / f"{engine.stem}.times.json"
    cmd = [trtexec, f"--loadEngine={engine}", "--duration=3", "--warmUp=500", f"--exportTimes={times}"]
    cmd += [shape_flag] if shape_flag else []
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1))
    if proc.returncode != 0:
        raise RuntimeError(f"trtexec exit {proc.returncode}: {(proc.stdout.strip().splitlines() or [''])[-1]}")
    t = read_trtexec(times=times).timings
    return {"inferences": t["latency"].count, "latency_p50_ms": t["latency"].median_ms,
            "latency_p99_ms": t["latency"].p99_ms, "compute_p50_ms": t["compute"].median_ms, "file": times.name}


def run_checklist(model: str, out: Path, budget_s: float, images: int, trtexec: str | None) -> dict:
    import numpy as np

    from runtime.agreement import agreement
    from export.calibration import EVAL_START, input_batches, load_images
    from export.onnx import export_model
    from export.tensorrt import build_engine
    from export.trt_plan import parse_version
    from runtime.backends.ort_backend import OrtBackend
    from runtime.backends.tensorrt_backend import TensorRTBackend, query_gpu
    from runtime.sidecar import Sidecar, TensorRTBuild, sidecar_path

    import tensorrt

    start = time.monotonic()
    left = lambda: budget_s - (time.monotonic() - start)  # noqa: E731
    out.mkdir(parents=True, exist_ok=True)
    gpu = query_gpu(0)
    major = parse_version(tensorrt.__version__)[0]
    report: dict = {"schema": SCHEMA, "version": VERSION,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": model, "small": True,
                    "machine": {"gpu": gpu.name, "compute_capability": gpu.compute_capability,
                                "tensorrt": tensorrt.__version__, "trtexec": trtexec},
                    "engines": [], "steps": []}

    def step(name: str, fn):
        if left() <= 0:
            report["steps"].append({"step": name, "status": "skipped", "error": "time budget spent"})
            return None
        t0 = time.monotonic()
        try:
            value = fn()
        except Exception as err:  # recorded in one line; the checklist goes on
            report["steps"].append({"step": name, "status": "failed", "error": _one_line(err),
                                    "seconds": round(time.monotonic() - t0, 2)})
            return None
        report["steps"].append({"step": name, "status": "ok", "seconds": round(time.monotonic() - t0, 2)})
        return value

    fp32 = out / f"{model}.onnx"
    step("export onnx", lambda: export_model(model, fp32, small=True))
    if not fp32.is_file():
        return report
    side = Sidecar.load(sidecar_path(fp32))
    step("export fp16", lambda: _cli("export.fp16", str(fp32), "--calib", "4", timeout=left()))
    step("export int8", lambda: _cli("export.quantize", str(fp32), "--calib", "8", "--eval", "4", timeout=left()))
    batches = input_batches(load_images("synthetic", images, size=max(side.preprocess.size), start=EVAL_START),
                            side.preprocess)
    reference = [OrtBackend(fp32, providers=["CPUExecutionProvider"]).run(x) for x in batches]
    islands = out / f"{model}.fp16.islands.json"
    sources = {"fp32": (fp32, {}),
               "fp16": (out / f"{model}.fp16.onnx", {}) if major >= 11 else
                       (fp32, {"fp32_nodes": _islands(islands)} if islands.is_file() else {}),
               "int8": (out / f"{model}.int8.onnx", {})}
    for precision in PRECISIONS:
        onnx_path, kw = sources[precision]
        entry: dict = {"precision": precision, "onnx": onnx_path.name, "built": False, "error": None}
        report["engines"].append(entry)
        if not onnx_path.is_file():
            entry["error"] = f"{onnx_path.name} was not exported (see steps)"
            continue
        engine = out / f"{model}-{precision}.engine"
        res = step(f"build {precision}", lambda: build_engine(onnx_path, engine, precision=precision, max_batch=1,
                                                              opt_batch=1, verify=False, **kw))
        if res is None:
            entry["error"] = report["steps"][-1].get("error")
            continue
        b = TensorRTBuild.of(Sidecar.load(res.sidecar))
        entry.update(built=True, build_seconds=b.build_seconds, strongly_typed=b.strongly_typed,
                     fp32_layers=b.fp32_layers, notes=list(res.notes))

        def parity():
            with TensorRTBackend(engine) as backend:
                got = [backend.run(x) for x in batches]
            if not all(np.isfinite(g[k]).all() for g in got for k in ("prob", "score")):
                raise RuntimeError("non-finite outputs")
            return agreement(reference, got, threshold=side.threshold).to_dict()

        entry["parity"] = step(f"parity {precision}", parity)
        if entry["parity"] is None:
            entry["error"] = report["steps"][-1].get("error")
        if trtexec:
            shape = "x".join(str(d) for d in (1, 3, *side.preprocess.size))
            dynamic = any(isinstance(d, str) for d in Sidecar.load(res.sidecar).input.shape)
            flag = f"--shapes={side.input.name}:{shape}" if dynamic else None
            entry["trtexec"] = step(f"trtexec {precision}", lambda: trtexec_times(trtexec, engine, flag, out, left()))
    report["wall_seconds"] = round(time.monotonic() - start, 1)
    return report


def _islands(path: Path) -> tuple[str, ...]:
    from export.trt_plan import load_fp32_nodes

    return load_fp32_nodes(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python engines/device_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="m2sformer", help="seed model (small configuration; default m2sformer)")
    parser.add_argument("--out", type=Path, default=Path("device-check"), help="output folder (default device-check)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="time budget in seconds (default 540)")
    parser.add_argument("--images", type=int, default=4, help="synthetic images for the parity check (default 4)")
    parser.add_argument("--trtexec", help="trtexec binary (default: on PATH, or JetPack's)")
    args = parser.parse_args(argv)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        print("error: TensorRT is not installed here: run this on the target GPU with TensorRT "
              "(pip install -e ./runtime -e '.[gpu-cu12]' or '.[gpu-cu13]', or JetPack's python3-libnvinfer)", file=sys.stderr)
        return 2
    try:
        report = run_checklist(args.model, args.out, args.budget_s, args.images, find_trtexec(args.trtexec))
    except Exception as err:  # no GPU, unknown model: one line
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    path = args.out / "device-check.json"
    from runtime.atomic import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    for e in report["engines"]:
        par = e.get("parity") or {}
        print(f"{e['precision']}: {'built' if e['built'] else 'NOT built'}"
              + (f", mask IoU {par['mask_iou']:.4f}, max |prob diff| {par['max_abs_prob']:.2e}" if par else "")
              + (f", trtexec p50 {e['trtexec']['latency_p50_ms']:.3f} ms" if e.get("trtexec") else "")
              + (f" ({e['error']})" if e.get("error") else ""))
    print(f"wrote {path} in {report.get('wall_seconds', 0):.0f} s (python -m bench.report --device-check {path})")
    return 0 if all(e["built"] and e.get("parity") for e in report["engines"]) else 1


if __name__ == "__main__":
    sys.exit(main())

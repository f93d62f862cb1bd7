"""``python -m bench.prepare`` fills the cache a benchmark run reuses (the run then makes no
export and no runtime.tune of its own), and ``--budget`` skips optional points that would end a run past it while
the core suites still run; the skips are recorded for the report."""
import json
import subprocess
import sys
from pathlib import Path

from bench.artifacts import artifact_stem, code_fingerprint, is_cached
from export.exporters import DEFAULT_EXPORTER
from bench.subject import Subject, is_profile_cached
from runtime.tune import load_tuned

ROOT = Path(__file__).resolve().parents[1]


def test_prepare_then_a_budgeted_run(tmp_path):
    cache = tmp_path / "cache"
    prep = subprocess.run([sys.executable, "-m", "bench.prepare", "--models", "m2sformer", "--small", "--no-compile",
                           "--bench-cache", str(cache)], cwd=ROOT, capture_output=True, text=True)
    assert prep.returncode == 0, prep.stderr[-2000:]
    assert "prepared" in prep.stdout and "export m2sformer 64px batch dynamic" in prep.stdout
    assert "tune m2sformer 64px (runtime.tune, up to 4 calibration images)" in prep.stdout
    fingerprint = code_fingerprint()
    for batch in (1, "dynamic"):
        assert is_cached("m2sformer", cache, size=64, batch=batch, small=True, fingerprint=fingerprint)
    assert is_profile_cached(Subject("m2sformer", 64, 1, True), cache, fingerprint)
    assert is_profile_cached(Subject("m2sformer", 64, 1, True, None, (("encoder", "resnet50"),)), cache, fingerprint)
    exports = {p: p.stat().st_mtime_ns for p in cache.glob("*.onnx")}
    tuned, _ = load_tuned(cache / f"{artifact_stem('m2sformer', 64, small=True, exporter=DEFAULT_EXPORTER)}.onnx")
    assert tuned is not None and tuned["choice"]["backend"] and len(list(cache.glob("*.tune.json"))) == 1
    assert tuned["calibration"]["images"] == 4 and tuned["calibration"]["rounds"] == 10  # a fast model: all of them
    tune_files = {p: p.stat().st_mtime_ns for p in cache.glob("*.tune.json")}

    run_json = tmp_path / "run.json"
    cmd = [sys.executable, "-m", "pytest", "bench/", "-q", "-rs", "-p", "no:cacheprovider", "--models", "m2sformer",
           "--small", "--backends", "torch,ort,auto", "--bench-time", "0.2", "--min-rounds", "2", "--max-rounds", "3",
           "--sizes", "64,96", "--bench-cache", str(cache), "--budget", "0.001",
           "-k", "test_latency or test_scaling", f"--benchmark-json={run_json}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "would end the run past --budget" in proc.stdout
    data = json.loads(run_json.read_text())
    latency = {(b["extra_info"]["suite"], b["extra_info"]["backend"]) for b in data["benchmarks"]
               if b["extra_info"].get("kind") == "latency"}
    assert {("paper", "torch"), ("paper", "ort"), ("paper", "auto")} <= latency  # core: never skipped for the budget
    assert not any(suite == "scaling" for suite, _ in latency)  # optional: over the budget
    skips = [r for r in data["imlkit"]["records"] if r["kind"] == "budget_skip"]
    assert skips and all("96 x 96" in r["what"] and r["budget_s"] == 0.06 for r in skips)
    assert data["imlkit"]["wall_s"] > 0 and data["imlkit"]["budget_s"] == 0.06
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.onnx")} == exports  # the run exported nothing
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.tune.json")} == tune_files  # ... and tuned nothing


def test_prepare_names_an_unknown_model(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.prepare", "--models", "nosuchmodel", "--bench-cache",
                           str(tmp_path / "c")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "nosuchmodel" in proc.stderr

"""The benchmark suites and the report generator on a real small run: `pytest bench/` on the small
M2SFormer for a few rounds in a subprocess (--benchmark-json), then `python -m bench.report`
on that JSON; the checks read the JSON and the Markdown, and open the PNGs."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.quick import quick_benchmark
from bench.timing import Plan

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    run_json = out / "run.json"
    cmd = [sys.executable, "-m", "pytest", "bench/", "-q", "-p", "no:cacheprovider", "--models", "m2sformer", "--small",
           "--backends", "torch,ort,ort-prepost", "--bench-time", "0.2", "--min-rounds", "2", "--max-rounds", "4",
           "--batches", "2", "--sizes", "64,96", "--bench-cache", str(out / "cache"),
           "-k", "not encoder_swap", f"--benchmark-json={run_json}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    times = out / "m2sformer.fp16.times.json"  # what trtexec --exportTimes writes, 5 inferences
    times.write_text(json.dumps([{"startComputeMs": k, "latencyMs": 2.0 + k, "computeMs": 1.5 + k} for k in range(5)]))
    report = subprocess.run([sys.executable, "-m", "bench.report", "--json", str(run_json), "--out", str(out / "report"),
                             "--trtexec", str(times)], cwd=ROOT, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr[-2000:]
    return {"dir": out, "json": json.loads(run_json.read_text()), "md": (out / "report" / "report.md").read_text(),
            "report_dir": out / "report", "cache": out / "cache"}


def _latency(data, suite, backend, batch=1):
    rows = [b["extra_info"] for b in data["benchmarks"] if b["extra_info"].get("kind") == "latency"
            and b["extra_info"]["suite"] == suite and b["extra_info"]["backend"] == backend
            and b["extra_info"]["batch"] == batch]
    assert len(rows) == 1, (suite, backend, batch)
    return rows[0]


def test_latency_records_have_percentiles_of_their_rounds(small_run):
    data = small_run["json"]
    for backend in ("torch", "ort", "ort-prepost"):
        row = _latency(data, "paper", backend)
        times = row["times_s"]
        assert row["rounds"] == len(times) >= 2
        # ort-prepost reuses the warm session of the ort benchmark just before it
        assert row["warmup"] == (0 if backend == "ort-prepost" else 1)
        for p in (50, 90, 99):
            assert row[f"p{p}_s"] == pytest.approx(np.percentile(times, p))
        assert row["size"] == 64 and row["label"] == "m2sformer" and row["gmacs_fvcore"] > 0
    assert _latency(data, "batch", "ort", batch=2)["images_per_s"] > 0
    assert _latency(data, "paper", "ort")["providers"] == ["CPUExecutionProvider"]


def test_records_cover_memory_imports_scaling_and_peak(small_run):
    records = small_run["json"]["imlkit"]["records"]
    kinds = {r["kind"] for r in records}
    assert {"peak", "profile", "memory", "files", "import", "scaling"} <= kinds
    memory = {r["backend"]: r for r in records if r["kind"] == "memory"}
    assert set(memory) == {"torch", "ort"}
    assert memory["ort"]["torch_loaded"] is False and memory["torch"]["torch_loaded"] is True
    # a fresh onnxruntime process holds less than a fresh torch one (no torch loaded at all)
    assert memory["ort"]["peak_rss_mib"] < memory["torch"]["peak_rss_mib"]
    imports = {r["stack"]: r for r in records if r["kind"] == "import"}
    assert imports["runtime"]["installed_mib"] < imports["torch"]["installed_mib"]
    assert "numpy" in imports["runtime"]["distributions"]
    scaling = next(r for r in records if r["kind"] == "scaling")
    assert [p["size"] for p in scaling["points"]] == [64, 96]


def test_report_shows_the_run(small_run):
    text, data = small_run["md"], small_run["json"]
    eager = _latency(data, "paper", "torch")["p50_s"]
    ort = _latency(data, "paper", "ort")["p50_s"]
    headline = next(line for line in text.splitlines() if line.startswith("| m2sformer ") and "x " in line)
    assert f"{eager / ort:.2f}x" in headline
    for heading in ("## Headline", "## Latency per backend", "## Memory", "## Compute efficiency", "## Batch sweep",
                    "## Cost versus input size", "QMA-Net Table 10", "M2SFormer Table 6", "M2SFormer Table 7",
                    "Import cost", "## TensorRT (trtexec exports)"):
        assert heading in text, heading
    assert re.search(r"\| m2sformer\s+\| 64\s+\| ort-prepost", text)
    assert re.search(r"\| m2sformer\s+\| fp16\s+\| 5\s+\| 4\.000 ", text)  # trtexec latency p50 of 2..6 ms
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert {"latency_run1.png", "memory_run1.png", "scaling.png", "params_gmacs.png", "batch_run1.png"} <= set(links)
    for name in links:
        with Image.open(small_run["report_dir"] / name) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200


def test_report_rejects_bad_input_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"benchmarks": []}))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "bench.report", "--json", str(bad), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(f"error: {bad}") and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_quick_benchmark_on_the_runs_export(small_run):
    from bench.artifacts import artifact_stem
    from export.exporters import DEFAULT_EXPORTER

    onnx = small_run["cache"] / f"{artifact_stem('m2sformer', 64, small=True, exporter=DEFAULT_EXPORTER)}.onnx"
    rows = quick_benchmark(onnx, "m2sformer", small=True, plan=Plan(0.1, 2, 2))
    assert rows[0][0] == "bench" and "PyTorch eager p50" in rows[0][1] and "onnxruntime p50" in rows[0][1]
    assert rows[0][2] == "2+2 rounds"
    assert "make bench" in rows[-1][1]

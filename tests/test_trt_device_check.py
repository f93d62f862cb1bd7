"""The device checklist (``engines/device_check.py``): what can be checked without a GPU. Its
JSON (a fixture of the shape ``run_checklist`` writes) goes into ``bench.report``; bad files
are one-line errors; without TensorRT the script says so in one line and writes nothing."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import ReportError, main as report_main, read_device_check

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "engines" / "device_check.py"


def device_json(tmp_path, **over):
    """What run_checklist writes for a 10.3 Jetson: fp32 and fp16 built and agreeing, int8 not built."""
    data = {"schema": "imlkit-device-check", "version": 1, "created": "2026-01-01T00:00:00+00:00",
            "model": "m2sformer", "small": True,
            "machine": {"gpu": "Orin (nvgpu)", "compute_capability": "8.7", "tensorrt": "10.3.0.30",
                        "trtexec": "/usr/src/tensorrt/bin/trtexec"},
            "engines": [
                {"precision": "fp32", "onnx": "m2sformer.onnx", "built": True, "error": None, "build_seconds": 41.2,
                 "strongly_typed": False, "fp32_layers": 0, "notes": [],
                 "parity": {"max_abs_prob": 0.0012, "mean_abs_prob": 1e-4, "max_abs_score": 3e-4, "mask_iou": 0.9991,
                            "decided_iou": 1.0, "flipped": 0.0002, "images": 4},
                 "trtexec": {"inferences": 812, "latency_p50_ms": 3.512, "latency_p99_ms": 3.901,
                             "compute_p50_ms": 3.2, "file": "m2sformer-fp32.times.json"}},
                {"precision": "fp16", "onnx": "m2sformer.onnx", "built": True, "error": None, "build_seconds": 95.0,
                 "strongly_typed": False, "fp32_layers": 14, "notes": [],
                 "parity": {"max_abs_prob": 0.021, "mean_abs_prob": 1e-3, "max_abs_score": 4e-3, "mask_iou": 0.9876,
                            "decided_iou": 0.999, "flipped": 0.004, "images": 4}, "trtexec": None},
                {"precision": "int8", "onnx": "m2sformer.int8.onnx", "built": False,
                 "error": "python -m export.quantize: error: calibration failed"}],
            "steps": [{"step": "export onnx", "status": "ok", "seconds": 12.0}], "wall_seconds": 402.5}
    data.update(over)
    path = tmp_path / "device-check.json"
    path.write_text(json.dumps(data))
    return path


def test_report_ingests_the_device_checklist(tmp_path, capsys):
    path = device_json(tmp_path)
    assert report_main(["--device-check", str(path), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    section = text.split("## TensorRT on the device (engines/device_check.py)", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| m2sformer")]
    assert len(rows) == 3
    assert "Orin (nvgpu) (sm 8.7), TensorRT 10.3.0.30" in rows[0] and "0.9991" in rows[0] and "3.512" in rows[0]
    assert "0.9876" in rows[1] and "| no " in rows[2] and "calibration failed" in rows[2]


@pytest.mark.parametrize("change,match", [
    ({"schema": "other"}, "not a device checklist"), ({"version": 2}, "version 2"),
    ({"engines": [{"precision": "fp32"}]}, "precision and built"),
])
def test_bad_device_checklists_are_one_line_errors(tmp_path, capsys, change, match):
    path = device_json(tmp_path, **change)
    with pytest.raises(ReportError, match=match):
        read_device_check(path)
    assert report_main(["--device-check", str(path), "--out", str(tmp_path / "rep")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "device-check.json" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "rep" / "report.md").exists()


def test_the_script_without_tensorrt_says_so(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here: the script would run the checklist")
    except ImportError:
        pass
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "dc")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: TensorRT is not installed")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "dc").exists()

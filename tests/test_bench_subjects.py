"""Choosing what the benchmark's core suites measure (``--subjects MODEL[VARIANT]@SIZE``): the
parser's answers and one-line errors, the parametrization of ``pytest bench/``, and a real small
run of TransForensics as two subjects (branch C3 at one size, C2 at another, as the CPU-speed
goal asks at paper size) through the latency suite and ``bench.report``'s headline."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.subject import Subject

ROOT = Path(__file__).resolve().parents[1]


def test_parse_reads_model_variant_and_size():
    assert Subject.parse("transforensics[c3]@512") == Subject("transforensics", 512, 1, False, "c3")
    assert Subject.parse("TransForensics[C2]@256") == Subject("transforensics", 256, 1, False, "c2")
    assert Subject.parse("m2sformer") == Subject.paper("m2sformer")
    assert Subject.parse("qmanet@384", small=True) == Subject("qmanet", 384, 1, True)
    assert Subject.parse("transforensics[c4]", small=True) == Subject.paper("transforensics", small=True, variant="c4")


@pytest.mark.parametrize("text, says", [
    ("transforensics[c9]@512", "no variant 'c9'"),
    ("m2sformer@0", "positive integer"),
    ("m2sformer@big", "positive integer"),
    ("m2sformer[c2", "MODEL[VARIANT]@SIZE"),
    ("nosuchmodel@256", "nosuchmodel"),
    ("m2sformer[c2]@256", "no variant 'c2' (known: authors, paper-text)"),
])
def test_parse_refuses_in_one_line(text, says):
    with pytest.raises(ValueError) as err:
        Subject.parse(text)
    assert says in str(err.value) and "\n" not in str(err.value)


def _bench(*args, cwd=ROOT):
    """``pytest`` on the given benchmark paths (and options) in a child process."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_subjects_replace_the_paper_subject_of_the_models_they_name(tmp_path):
    proc = _bench("--collect-only", "-q", "--small", "--models", "m2sformer", "--backends", "torch",
                  "--subjects", "transforensics[c3]@96,transforensics[c2]@64", "--bench-cache", str(tmp_path),
                  "bench/test_latency.py", "bench/test_memory.py")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ids = re.findall(r"test_latency\[(.+)\]$", proc.stdout, re.M)
    assert ids == ["m2sformer-64-torch", "transforensics[c3]-96-torch", "transforensics[c2]-64-torch"], ids
    sizes = re.findall(r"test_file_sizes\[(.+)\]$", proc.stdout, re.M)
    assert sizes == ["m2sformer-64", "transforensics[c3]-96", "transforensics[c2]-64"], sizes


def test_bad_subject_is_a_one_line_usage_error(tmp_path):
    proc = _bench("bench/", "--collect-only", "-q", "--small", "--subjects", "transforensics[c9]@64",
                  "--bench-cache", str(tmp_path))
    assert proc.returncode == 4  # pytest's usage error
    assert "--subjects: 'transforensics[c9]@64': transforensics has no variant 'c9'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_prepare_refuses_a_bad_subject(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.prepare", "--small", "--subjects", "m2sformer@-3",
                           "--bench-cache", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "--subjects:" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing prepared


def test_prepare_plans_the_subjects_core_items(tmp_path):
    from bench.prepare import plan

    subjects = [Subject.parse("transforensics[c3]@96", small=True), Subject.parse("transforensics[c2]@64", small=True)]
    labels = [item.label for item in plan(["transforensics"], tmp_path, small=True, compile=False, subjects=subjects,
                                          core=True)]
    assert [lab for lab in labels if lab.startswith(("export", "tune"))] == [
        "export transforensics[c3] 96px batch 1", labels[1], "export transforensics[c2] 64px batch 1", labels[3]]
    assert labels[1].startswith("tune transforensics[c3] 96px") and labels[3].startswith("tune transforensics[c2] 64px")
    assert "profile transforensics[c3] 96px" in labels and "profile transforensics 64px" in labels
    full = [item.label for item in plan(["transforensics"], tmp_path, small=True, compile=False, subjects=subjects)]
    assert "export transforensics 64px batch dynamic" in full and "export transforensics[c4] 64px batch 1" in full
    assert set(labels) < set(full)


def test_two_subjects_of_one_model_in_the_run_and_the_headline(tmp_path):
    run_json = tmp_path / "run.json"
    proc = _bench("bench/test_peak.py", "bench/test_latency.py", "-q", "--small", "--models", "transforensics",
                  "--subjects", "transforensics[c3]@96,transforensics[c2]@64", "--backends", "torch,ort",
                  "--bench-time", "0.2", "--min-rounds", "2", "--max-rounds", "3", "--bench-cache",
                  str(tmp_path / "cache"), f"--benchmark-json={run_json}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    data = json.loads(run_json.read_text())
    rows = {(b["extra_info"]["label"], b["extra_info"]["size"], b["extra_info"]["backend"]): b["extra_info"]
            for b in data["benchmarks"] if b["extra_info"].get("kind") == "latency"}
    assert set(rows) == {(lab, size, be) for lab, size in (("transforensics[c3]", 96), ("transforensics[c2]", 64))
                         for be in ("torch", "ort")}
    assert rows[("transforensics[c3]", 96, "ort")]["variant"] == "c3"
    assert [s["size"] for s in data["imlkit"]["subjects"]] == [96, 64]
    report = subprocess.run([sys.executable, "-m", "bench.report", "--json", str(run_json), "--out",
                             str(tmp_path / "report")], cwd=ROOT, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr[-2000:]
    md = (tmp_path / "report" / "report.md").read_text()
    headline = md.split("## Headline", 1)[1].split("\n## ", 1)[0]
    for label, size in (("transforensics[c3]", 96), ("transforensics[c2]", 64)):
        cells = next(c for c in ([x.strip() for x in ln.strip("|").split("|")] for ln in headline.splitlines())
                     if c[:2] == [label, str(size)])
        eager, ort = (rows[(label, size, b)]["p50_s"] for b in ("torch", "ort"))
        assert f"{eager / ort:.2f}x (ort)" in cells, cells  # the FP32 pick's speed-up, from this subject's own rows

"""Reading trtexec's ``--exportTimes`` / ``--exportProfile`` JSON back (``bench.trtexec_json``):
statistics against Python's ``statistics`` module, slowest-layer order, the fields trtexec
writes, bad files, and the CLI's JSON and PNG."""
import json
import statistics

import numpy as np
import pytest
from PIL import Image

from bench.trtexec_json import TrtexecJSONError, main, read_trtexec, summarize_profile, summarize_times


#: The keys of one --exportTimes record, in trtexec's order (sampleReporting.cpp exportJSONTrace,
#: TensorRT 10.3 / 10.16 / 11.1).
TRTEXEC_TIME_KEYS = ("startEnqMs", "endEnqMs", "startH2dMs", "endH2dMs", "startComputeMs", "endComputeMs",
                     "startD2hMs", "endD2hMs", "h2dMs", "computeMs", "d2hMs", "latencyMs")


def _times(n=200, seed=0):
    rng = np.random.default_rng(seed)
    records, t = [], 0.0
    for _ in range(n):
        h2d, compute, d2h = rng.uniform(0.01, 0.05), rng.gamma(4.0, 0.5), rng.uniform(0.01, 0.03)
        values = (t, t + 0.01, t + 0.01, t + 0.01 + h2d, t + 0.01 + h2d, t + 0.01 + h2d + compute,
                  t + 0.01 + h2d + compute, t + 0.01 + h2d + compute + d2h, h2d, compute, d2h, h2d + compute + d2h)
        records.append(dict(zip(TRTEXEC_TIME_KEYS, values)))
        t += h2d + compute + d2h
    return records


def _profile(seed=1, layers=30, runs=50):
    avg = np.random.default_rng(seed).gamma(2.0, 0.05, layers)
    total = float(avg.sum() * runs)
    rows = [{"name": f"/model/layer_{k}", "timeMs": float(a * runs), "averageMs": float(a),
             "medianMs": float(a * 0.98), "percentage": float(100 * a * runs / total)} for k, a in enumerate(avg)]
    return [{"count": runs}] + rows


def test_latency_stats_match_the_statistics_module():
    records = _times()
    s = summarize_times(records)
    lat = [r["latencyMs"] for r in records]
    q = statistics.quantiles(lat, n=100, method="inclusive")
    assert s["latency"].count == len(lat)
    assert s["latency"].mean_ms == pytest.approx(statistics.fmean(lat))
    assert s["latency"].median_ms == pytest.approx(statistics.median(lat))
    assert s["latency"].p90_ms == pytest.approx(q[89]) and s["latency"].p99_ms == pytest.approx(q[98])
    assert s["compute"].median_ms == pytest.approx(statistics.median(r["computeMs"] for r in records))
    assert set(s) == {"latency", "compute", "h2d", "d2h"}


def test_only_fields_trtexec_writes_are_read():
    from bench.trtexec_json import TIMING_KEYS

    assert {key for _, key in TIMING_KEYS} <= set(TRTEXEC_TIME_KEYS)
    records = [{k: v for k, v in r.items() if k not in ("h2dMs", "d2hMs")} for r in _times()]
    assert set(summarize_times(records)) == {"latency", "compute"}  # what is absent is left out, not invented


def test_profile_top_layers_slowest_first():
    prof = _profile()
    layers, runs, count = summarize_profile(prof, top=5)
    assert runs == 50 and count == 30 and len(layers) == 5
    expected = sorted(prof[1:], key=lambda r: r["averageMs"], reverse=True)[:5]
    assert [layer.name for layer in layers] == [r["name"] for r in expected]
    assert all(a.average_ms >= b.average_ms for a, b in zip(layers, layers[1:]))
    assert sum(r["percentage"] for r in prof[1:]) == pytest.approx(100.0)


@pytest.mark.parametrize("content,match", [
    ("[]", "non-empty list"), ('{"a": 1}', "non-empty list"), ("[{\"x\": 1}]", "neither latencyMs"),
    ("not json", "not a trtexec JSON export"),
])
def test_bad_times_files(tmp_path, content, match):
    path = tmp_path / "times.json"
    path.write_text(content)
    with pytest.raises(TrtexecJSONError, match=match) as info:
        read_trtexec(times=path)
    assert "times.json" in str(info.value)


def test_bad_profile_and_missing_inputs(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"count": 3}, {"name": "a"}]))
    with pytest.raises(TrtexecJSONError, match="lacks"):
        read_trtexec(profile=path)
    with pytest.raises(TrtexecJSONError, match="give --times"):
        read_trtexec()
    with pytest.raises(TrtexecJSONError, match="not found"):
        read_trtexec(times=tmp_path / "nope.json")


def test_cli_writes_summary_json_and_png(tmp_path, capsys):
    times, prof = tmp_path / "times.json", tmp_path / "profile.json"
    times.write_text(json.dumps(_times()))
    prof.write_text(json.dumps(_profile()))
    out_json, out_png = tmp_path / "s.json", tmp_path / "layers.png"
    assert main(["--times", str(times), "--profile", str(prof), "--top", "7", "--json", str(out_json),
                 "--png", str(out_png)]) == 0
    printed = capsys.readouterr().out
    assert "latency" in printed and "p99" in printed and "slowest 7 of 30 layers" in printed
    data = json.loads(out_json.read_text())
    assert len(data["layers"]) == 7 and data["timings"]["latency"]["count"] == 200
    with Image.open(out_png) as img:
        assert img.format == "PNG" and img.size[0] > 300
    assert main(["--times", str(tmp_path / "missing.json")]) == 1
    assert "missing.json" in capsys.readouterr().err

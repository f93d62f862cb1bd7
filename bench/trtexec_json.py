"""``python -m bench.trtexec_json --times times.json --profile profile.json``: read back the JSON
files trtexec writes on the device (``--exportTimes``, ``--exportProfile``; the script of
``python -m export.trtexec`` asks for both) into a latency summary and a per-layer top-N.

The fields are those trtexec writes in TensorRT 10.x and 11.x (``samples/common/
sampleReporting.cpp``: ``exportJSONTrace`` and ``Profiler::exportJSONProfile``, the same in
10.3, 10.16 and 11.1). ``--exportTimes``: one record per timed inference (after warm-up)
with the timestamps ``startEnqMs``/``endEnqMs``, ``startH2dMs``/``endH2dMs``,
``startComputeMs``/``endComputeMs``, ``startD2hMs``/``endD2hMs`` and the intervals
``h2dMs``, ``computeMs`` (GPU compute), ``d2hMs`` and ``latencyMs`` (H2D + compute + D2H,
trtexec's "Latency"). ``--exportProfile``: a ``{"count": N}`` header (profiled runs), then one
record per layer with ``name``, ``timeMs`` (total), ``averageMs``, ``medianMs`` and
``percentage``.
Summaries: mean / median / p90 / p99 of each timing, and the N slowest layers by average
time; ``--png`` draws the top layers as a bar chart, ``--json`` writes the summary.
"""
from __future__ import annotations

from train.cli import interrupts_in_one_line, one_line_errors

interrupts_in_one_line(__name__)  # before the heavy imports

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.atomic import atomic_write, atomic_write_bytes

#: (label, key) of each interval trtexec writes per inference.
TIMING_KEYS = (("latency", "latencyMs"), ("compute", "computeMs"), ("h2d", "h2dMs"), ("d2h", "d2hMs"))


class TrtexecJSONError(ValueError):
    """A trtexec export that cannot be read; the message is one line naming the file."""


@dataclass(frozen=True)
class Stats:
    count: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float


@dataclass(frozen=True)
class Layer:
    name: str
    average_ms: float
    median_ms: float | None
    total_ms: float
    percentage: float


@dataclass(frozen=True)
class TrtexecSummary:
    timings: dict[str, Stats]  # latency, compute, h2d, d2h (those present)
    layers: list[Layer]  # slowest first
    profile_runs: int | None
    layer_count: int

    def as_dict(self) -> dict[str, Any]:
        return {"timings": {k: asdict(v) for k, v in self.timings.items()},
                "layers": [asdict(layer) for layer in self.layers],
                "profile_runs": self.profile_runs, "layer_count": self.layer_count}


def _load(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrtexecJSONError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise TrtexecJSONError(f"{path}: not a trtexec JSON export ({' '.join(str(err).split())})") from None


def stats(values: np.ndarray) -> Stats:
    v = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(v, [50, 90, 99])
    return Stats(int(v.size), float(v.mean()), float(p50), float(p90), float(p99), float(v.min()), float(v.max()))


def summarize_times(records: Any, source: str = "<times>") -> dict[str, Stats]:
    """Stats of each timing in an ``--exportTimes`` list."""
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise TrtexecJSONError(f"{source}: expected a non-empty list of per-inference records")
    out: dict[str, Stats] = {}
    for label, key in TIMING_KEYS:
        if key not in records[0]:
            continue
        try:
            values = np.array([float(r[key]) for r in records])
        except (KeyError, TypeError, ValueError):
            raise TrtexecJSONError(f"{source}: record without a numeric {key}") from None
        out[label] = stats(values)
    if "latency" not in out and "compute" not in out:
        raise TrtexecJSONError(f"{source}: records have neither latencyMs nor computeMs")
    return out


def summarize_profile(records: Any, top: int = 10, source: str = "<profile>") -> tuple[list[Layer], int | None, int]:
    """(slowest ``top`` layers, profiled runs, layer count) of an ``--exportProfile`` list."""
    if not isinstance(records, list) or not records:
        raise TrtexecJSONError(f"{source}: expected a list with a count header and layer records")
    runs = None
    if isinstance(records[0], dict) and "count" in records[0] and "name" not in records[0]:
        runs, records = int(records[0]["count"]), records[1:]
    layers = []
    for r in records:
        try:
            layers.append(Layer(str(r["name"]), float(r["averageMs"]),
                                float(r["medianMs"]) if "medianMs" in r else None,
                                float(r["timeMs"]), float(r["percentage"])))
        except (KeyError, TypeError, ValueError):
            raise TrtexecJSONError(f"{source}: a layer record lacks name/timeMs/averageMs/percentage") from None
    layers.sort(key=lambda layer: layer.average_ms, reverse=True)
    return layers[:top], runs, len(layers)


def read_trtexec(times: str | Path | None = None, profile: str | Path | None = None, top: int = 10) -> TrtexecSummary:
    if times is None and profile is None:
        raise TrtexecJSONError("give --times and/or --profile")
    timings = summarize_times(_load(times), str(times)) if times is not None else {}
    layers, runs, count = summarize_profile(_load(profile), top, str(profile)) if profile is not None else ([], None, 0)
    return TrtexecSummary(timings, layers, runs, count)


def format_summary(s: TrtexecSummary) -> str:
    lines = []
    if s.timings:
        n = next(iter(s.timings.values())).count
        lines.append(f"trtexec timings over {n} inferences (ms):   mean   median      p90      p99")
        for label, st in s.timings.items():
            lines.append(f"  {label:<9}{'':27}{st.mean_ms:7.3f}  {st.median_ms:7.3f}  {st.p90_ms:7.3f}  {st.p99_ms:7.3f}")
    if s.layers:
        runs = f" over {s.profile_runs} profiled runs" if s.profile_runs else ""
        lines.append(f"slowest {len(s.layers)} of {s.layer_count} layers{runs} (avg ms, % of total):")
        for layer in s.layers:
            lines.append(f"  {layer.average_ms:8.4f}  {layer.percentage:5.1f}%  {layer.name}")
    return "\n".join(lines)


def plot_layers(s: TrtexecSummary, path: str | Path) -> Path:
    """Bar chart of the slowest layers (average ms), written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not s.layers:
        raise TrtexecJSONError("no layer profile to plot (give --profile)")
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(s.layers) + 1.2))
    names = [layer.name if len(layer.name) <= 60 else "..." + layer.name[-57:] for layer in s.layers]
    ax.barh(range(len(names)), [layer.average_ms for layer in s.layers], color="tab:green")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("average time per run (ms)")
    ax.set_title(f"slowest {len(s.layers)} of {s.layer_count} TensorRT layers")
    fig.tight_layout()
    try:
        return atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=120))
    finally:
        plt.close(fig)


@one_line_errors()  # Ctrl-C: one line, exit 130 (this tool reports its own errors)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trtexec_json", description=__doc__.splitlines()[0])
    parser.add_argument("--times", help="trtexec --exportTimes JSON")
    parser.add_argument("--profile", help="trtexec --exportProfile JSON")
    parser.add_argument("--top", type=int, default=10, help="slowest layers to list (default 10)")
    parser.add_argument("--json", help="write the summary as JSON")
    parser.add_argument("--png", help="write a bar chart of the slowest layers")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be >= 1")
    try:
        summary = read_trtexec(args.times, args.profile, args.top)
        if args.png:
            plot_layers(summary, args.png)
    except TrtexecJSONError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(summary.as_dict(), indent=2) + "\n").encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

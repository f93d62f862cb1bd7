"""``python -m bench.report``: a Markdown report with PNG plots from benchmark runs.

Input: one or more JSON files written by ``pytest bench/ --benchmark-json FILE`` (each is one
run on one machine; every ratio is taken inside one run, never across runs), and optionally
trtexec exports (``--trtexec [MODEL[:LABEL]=]PATH``, see ``bench.trtexec_results``) and the JSON
of the device checklist (``--device-check FILE``, written by ``engines/device_check.py`` on a GPU;
alone, without ``--json``, the report holds only that).
Output in ``--out``: ``report.md`` and the PNGs it links (latency, speed-up, memory, scaling,
batch sweep, params vs GMACs with the papers' points, TransForensics' branches).

A published figure "holds" when ours is within ``--tolerance`` (default 10%) of it, and the
report says "does not hold" otherwise. The papers' "FLOPs" are compared with fvcore GMACs.
Files are written to temporary names and renamed into place once everything rendered.
"""
from __future__ import annotations

from train.cli import interrupts_in_one_line, one_line_errors

interrupts_in_one_line(__name__)  # before the heavy imports

import argparse
import json
import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate
from tqdm import tqdm

from runtime.atomic import mkstemp
from runtime.tune import MAX_FLIP

from .backends import DESCRIPTIONS, PRECISIONS
from .papers import M2SFORMER_BACKBONES, M2SFORMER_BLOCKS, M2SFORMER_TABLE6, QMANET_TABLE10, TRANSFORENSICS_TABLE5, \
    table_rows
from .timing import percentiles
from .trtexec_results import TrtexecError, parse_spec, read_trtexec

BACKEND_ORDER = ("torch", "compile", "ort", "ort-prepost", "ov", "ov-bf16", "auto", "ort-fp16", "ort-int8",
                 "torch-cuda", "ort-cuda")
GOAL_SPEEDUP = 1.5  # the runtime's chosen FP32 CPU backend over PyTorch eager FP32 at batch 1, the project's goal
GOAL_BF16_SPEEDUP = 2.5  # the chosen BF16 configuration over PyTorch eager FP32
GOAL_MAX_FLIP = MAX_FLIP  # ... with at most this share of mask pixels flipped against onnxruntime FP32 (the tuner's)
FP32_PICKS = ("ort", "ov")  # the CPU FP32 runtime backends the FP32 pick is the fastest of (auto's when FP32)


class ReportError(ValueError):
    """Bad input; the message is one line naming the file and the problem."""


# --------------------------------------------------------------------------- loading


@dataclass
class Run:
    path: Path
    index: int
    machine: str
    when: str
    meta: dict[str, Any]
    latency: list[dict[str, Any]] = field(default_factory=list)  # extra_info of latency benchmarks
    others: list[dict[str, Any]] = field(default_factory=list)  # extra_info of peak / import benchmarks
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"run {self.index} ({self.path.name})"

    def recs(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]

    def peak_gflops(self, precision: str = "fp32") -> float | None:
        """The higher of the run's start and end matmul peaks in ``precision`` (fp32, bf16)."""
        peaks = self.recs("peak") or [o for o in self.others if o.get("kind") == "peak"]
        peaks = [p for p in peaks if p.get("precision", "fp32") == precision]
        return max(p["gflops"] for p in peaks) if peaks else None

    def lat(self, suite: str, label: str, backend: str, size: int | None = None, batch: int = 1):
        for row in self.latency:
            if (row.get("suite") == suite and row.get("label") == label and row.get("backend") == backend
                    and row.get("batch", 1) == batch and (size is None or row.get("size") == size)):
                return row
        return None

    def memory(self, label: str, backend: str, size: int | None = None):
        for rec in self.recs("memory"):
            if rec.get("label") == label and rec.get("backend") == backend and (size is None or rec["size"] == size):
                return rec
        return None


def load_run(path: Path, index: int) -> Run:
    if not path.is_file():
        raise ReportError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ReportError(f"{path}: not a pytest-benchmark JSON (no 'benchmarks' list)")
    meta = data.get("imlkit")
    if not isinstance(meta, dict):
        raise ReportError(f"{path}: no 'imlkit' section: write it with `pytest bench/ --benchmark-json {path}`")
    mi = data.get("machine_info", {})
    cpu = mi.get("cpu", {}) if isinstance(mi.get("cpu"), dict) else {}
    machine = f"{cpu.get('brand_raw') or mi.get('processor') or 'unknown CPU'}, {meta.get('cpu_count')} cores"
    run = Run(path, index, machine, str(data.get("datetime", ""))[:19], meta, records=list(meta.get("records", [])))
    for bench in data["benchmarks"]:
        info = dict(bench.get("extra_info") or {})
        if "p50_s" not in info and isinstance(bench.get("stats"), dict):  # a plain pytest-benchmark row
            info.update(p50_s=bench["stats"].get("median"), rounds=bench["stats"].get("rounds"))
        info["test"] = bench.get("fullname", bench.get("name", ""))
        (run.latency if info.get("kind") == "latency" else run.others).append(info)
    return run


# --------------------------------------------------------------------------- formatting


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds * 1e3:.0f}"


def num(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def delta(ours: float | None, theirs: float | None, tol: float) -> tuple[str, str]:
    """('+12.3%', 'does not hold') style cells."""
    if ours is None or theirs is None:
        return "-", "-"
    d = (ours - theirs) / theirs
    return f"{100 * d:+.1f}%", ("holds" if abs(d) <= tol else "**does not hold**")


def import_p50(record: dict[str, Any]) -> float:
    return percentiles(record["import_s"])["p50"]


def gm(value: float | None) -> str:
    """GMACs with sensible digits from 0.05 to 15000."""
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.3g}"


def precision_of(row: dict[str, Any]) -> str | None:
    """The arithmetic a latency row ran in: recorded by the run, else known from its backend."""
    return row.get("precision") or PRECISIONS.get(row.get("backend", ""))


def flips(row: dict[str, Any] | None) -> float | None:
    """Share of mask pixels flipped against onnxruntime FP32 (0 for that reference itself)."""
    if row is None:
        return None
    if row.get("backend") == "ort":
        return 0.0
    return (row.get("agreement") or {}).get("flipped")


def _ceiling(eager_s: float, cand_s: float, gmacs: float | None, peak_gflops: float | None, goal: float,
             precision: str, who: str) -> str:
    """Why a speed-up goal over eager FP32 can or cannot be met on this machine: the fraction
    of the measured ``precision`` matmul peak that ``goal`` x eager would need, against what
    ``who`` achieves."""
    if not gmacs or not peak_gflops:
        return f" (no {precision.upper()} matmul peak measured in the run to say why)."
    eager, cand = 2 * gmacs / eager_s / peak_gflops, 2 * gmacs / cand_s / peak_gflops
    need = goal * eager
    if need > 1.0:
        return (f": out of reach in {precision.upper()} on this machine, since {goal}x eager would need "
                f"{100 * need:.0f}% of the best {precision.upper()} matmul rate measured in the run "
                f"({peak_gflops:.0f} GFLOP/s; eager FP32 runs at {100 * eager:.0f}% of it, so at most "
                f"{1 / eager:.2f}x at 100%).")
    return (f": {who} runs at {100 * cand:.0f}% of the measured {precision.upper()} matmul peak "
            f"({peak_gflops:.0f} GFLOP/s), {goal}x needs {100 * need:.0f}%.")


def ratio_text(speedup: float, goal: float) -> str:
    """A speed-up as "1.39x"; one that misses ``goal`` but rounds onto it is cut (not rounded)
    to three decimals (2.4995x is "2.499x", never a "2.50x" said to miss 2.5x)."""
    if speedup < goal and f"{speedup:.2f}" == f"{goal:.2f}":
        return f"{math.floor(speedup * 1000) / 1000:.3f}x"
    return f"{speedup:.2f}x"


def choice_text(row: dict[str, Any] | None) -> str:
    """``auto``'s choice, e.g. "openvino bf16 (tune)", "openvino bf16, ops 151-1162 fp32 (tune)"."""
    choice = (row or {}).get("choice") or {}
    if not choice:
        return "-"
    kept = "".join(f", ops {a}-{b} fp32" for a, b in choice.get("fp32_ranges") or [])
    return f"{choice.get('backend')} {choice.get('precision') or ''}".strip() + f"{kept} ({choice.get('source', '?')})"


def settings_text(row: dict[str, Any]) -> str:
    """Threads (and spinning) of the backend as configured."""
    settings = row.get("settings") or {}
    threads = settings.get("threads", row.get("torch_threads"))
    if threads is None:
        return "-"
    return f"{threads}" + (", spin" if settings.get("spin") else "")


def md(headers: list[str], rows: list[list[Any]]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True) if rows else "_no data_"


def backends_in(rows: list[dict[str, Any]]) -> list[str]:
    present = {r["backend"] for r in rows}
    return [b for b in BACKEND_ORDER if b in present] + sorted(present - set(BACKEND_ORDER))


# --------------------------------------------------------------------------- report


DEVICE_SCHEMA = "imlkit-device-check"  # engines/device_check.py
DEVICE_ENGINE_KEYS = ("precision", "built")


def read_device_check(path: str | Path) -> dict[str, Any]:
    """The JSON of ``engines/device_check.py`` (schema imlkit-device-check, version 1);
    ReportError (one line naming the file) when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: file not found") from None
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: not JSON ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict) or data.get("schema") != DEVICE_SCHEMA:
        raise ReportError(f"{path}: not a device checklist (schema {DEVICE_SCHEMA!r}, engines/device_check.py)")
    if data.get("version") != 1:
        raise ReportError(f"{path}: device checklist version {data.get('version')!r}, this report reads 1")
    machine, engines = data.get("machine"), data.get("engines")
    if not isinstance(machine, dict) or not isinstance(engines, list) or not all(
            isinstance(e, dict) and all(k in e for k in DEVICE_ENGINE_KEYS) for e in engines):
        raise ReportError(f"{path}: a device checklist needs machine and engines (each with precision and built)")
    return {**data, "file": str(path)}


class Report:
    def __init__(self, runs: list[Run], trtexec: list[dict[str, Any]], tolerance: float, out: Path,
                 device: list[dict[str, Any]] | None = None) -> None:
        self.runs, self.trtexec, self.tol, self.out = runs, trtexec, tolerance, out
        self.device = device or []
        self.plots: dict[str, Any] = {}  # file name -> matplotlib figure
        self.lines: list[str] = []

    # helpers over all runs (hardware-independent records: profiles, scaling counts)
    def profile(self, label: str, size: int) -> dict[str, Any] | None:
        for run in self.runs:
            for rec in run.recs("profile") + run.recs("ablation"):
                if rec.get("label") == label and rec.get("size") == size and not rec.get("small"):
                    return rec
        for run in self.runs:  # small runs (tests) still render
            for rec in run.recs("profile"):
                if rec.get("label") == label and rec.get("size") == size:
                    return rec
        return None

    def models(self) -> list[str]:
        seen: list[str] = []
        for run in self.runs:
            for m in run.meta.get("models", []):
                if m not in seen:
                    seen.append(m)
        return seen

    def paper_rows(self, run: Run) -> list[dict[str, Any]]:
        return [r for r in run.latency if r.get("suite") == "paper"]

    def subjects(self, run: Run) -> list[tuple[str, int | None]]:
        """(label, size) of what the run's core suites measured, in run order: its paper-suite
        rows, then any model of the run without one (size None: nothing measured)."""
        keys = list(dict.fromkeys((r["label"], r["size"]) for r in self.paper_rows(run)))
        named = {r.get("model", r["label"]) for r in self.paper_rows(run)}
        return keys + [(m, None) for m in run.meta.get("models", []) if m not in named]

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def render(self) -> str:
        from train.models import get_spec, list_models

        self.get_spec, self.known = get_spec, set(list_models())
        self.add("# imlkit benchmark report", "")
        self.section_runs()
        for run in self.runs:
            self.section_headline(run)
        self.section_papers()
        for run in self.runs:
            self.section_latency(run)
            self.section_memory(run)
            self.section_efficiency(run)
            self.section_batch(run)
        self.section_scaling()
        self.section_tables()
        self.section_variants()
        self.section_trtexec()
        self.section_device()
        self.section_missing()
        return "\n".join(self.lines) + "\n"

    # ---------------------------------------------------------------- sections
    def section_runs(self) -> None:
        self.add("## Runs", "",
                 "Every ratio below compares backends measured in the same run on the same machine, one after "
                 "the other, each after warm-up, with rounds calibrated to the time budget; latencies are the "
                 "p50 of the timed rounds (p90/p99 beside them; with few rounds p99 is close to the maximum). "
                 "The papers' \"FLOPs\" are compared with fvcore GMACs (one multiply-add = 1). The matmul peaks "
                 "are the best FP32 GEMM rate of torch, onnxruntime and OpenVINO and the best BF16 one of torch and "
                 "OpenVINO (n = 1024, 2048; BF16 only on a CPU with native BF16) at the start and the end of the "
                 "run; \"% of peak\" is 2 x GMACs / p50 / the peak of the row's precision. Each backend is timed in "
                 "its own block: the previous backend's session is closed first, so no two thread pools overlap.", "")
        rows = []
        for run in self.runs:
            m = run.meta
            wall = m.get("wall_s")
            budget = m.get("budget_s")
            rows.append([run.name, run.when, run.machine, m.get("torch_threads"),
                         ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()),
                         ", ".join(m.get("models", [])), "yes" if m.get("small") else "no",
                         f"{num(run.peak_gflops('fp32'), '.1f')} / {num(run.peak_gflops('bf16'), '.1f')}",
                         (f"{wall / 60:.1f}" if wall else "-") + (f" ({budget / 60:g})" if budget else "")])
        self.add(md(["run", "date", "machine", "torch threads", "versions", "models", "small configs",
                     "matmul peak GFLOP/s FP32 / BF16", "wall min (budget)"], rows), "")

    def picks(self, run: Run, label: str, size: int | None = None) -> tuple[dict | None, dict | None]:
        """(FP32 pick, BF16 pick) of a subject's latency-suite rows: ``auto``'s row where the
        runtime chose that precision, else the fastest measured CPU runtime backend in it (FP32:
        ``ort``, ``ov``; BF16: any BF16 row, i.e. ``ov-bf16``)."""
        rows = [r for r in self.paper_rows(run) if r["label"] == label and (size is None or r["size"] == size)]
        auto = next((r for r in rows if r["backend"] == "auto"), None)
        out = []
        for precision, pool in (("fp32", [r for r in rows if r["backend"] in FP32_PICKS]),
                                ("bf16", [r for r in rows if r["backend"] != "auto" and precision_of(r) == "bf16"])):
            if auto is not None and precision_of(auto) == precision:
                out.append(auto)
            else:
                out.append(min(pool, key=lambda r: r["p50_s"]) if pool else None)
        return out[0], out[1]

    def goal_notes(self, run: Run, model: str, eager, fp32, bf16, macs) -> list[str]:
        """One line per goal a model misses, saying why against the run's FP32 / BF16 peaks."""
        notes = []
        if eager and fp32:
            sp = eager["p50_s"] / fp32["p50_s"]
            if sp < GOAL_SPEEDUP:
                notes.append(f"- {model}: the FP32 pick ({fp32['backend']}) is {ratio_text(sp, GOAL_SPEEDUP)} PyTorch eager, short of the "
                             f"{GOAL_SPEEDUP}x goal" + _ceiling(eager["p50_s"], fp32["p50_s"], macs,
                                                                run.peak_gflops("fp32"), GOAL_SPEEDUP, "fp32",
                                                                fp32["backend"]))
        if eager and bf16:
            sp, flipped = eager["p50_s"] / bf16["p50_s"], flips(bf16)
            if sp < GOAL_BF16_SPEEDUP:
                notes.append(f"- {model}: the BF16 pick ({bf16['backend']}) is {ratio_text(sp, GOAL_BF16_SPEEDUP)} PyTorch eager FP32, short of "
                             f"the {GOAL_BF16_SPEEDUP}x goal" + _ceiling(eager["p50_s"], bf16["p50_s"], macs,
                                                                        run.peak_gflops("bf16"), GOAL_BF16_SPEEDUP,
                                                                        "bf16", bf16["backend"]))
            if flipped is None or flipped > GOAL_MAX_FLIP:
                agree = bf16.get("agreement") or {}
                notes.append(f"- {model}: the BF16 pick's masks " + (
                    "were not compared with onnxruntime FP32." if flipped is None else
                    f"flip {flipped:.2e} of the pixels against onnxruntime FP32 on {agree.get('images')} calibration "
                    f"image(s), above the {GOAL_MAX_FLIP:g} budget (mask IoU {agree.get('mask_iou', 0):.4f}, "
                    f"{agree.get('decided_iou', 0):.4f} over the pixels FP32 decides with a margin)"
                    + (f"; {agree['decided_flipped']:.2e} of the pixels flip although FP32 decides them, the rest "
                       f"are among the {agree['undecided']:.2e} FP32 puts within 1e-3 of the threshold"
                       if "decided_flipped" in agree else "") + "."))
        elif eager and "ov-bf16" in run.meta.get("backends", []):
            why = next((r["reason"] for r in run.recs("unavailable") if r.get("backend") == "ov-bf16"), None)
            notes.append(f"- {model}: no BF16 configuration measured" + (f" (ov-bf16: {why})." if why else "."))
        return notes

    def section_headline(self, run: Run) -> None:
        self.add(f"## Headline: each model at its paper size (or the run's --subjects), batch 1 ({run.name})", "",
                 f"Goals: the FP32 pick (the runtime's choice where `auto` chose FP32, else the fastest of "
                 f"{', '.join(f'`{b}`' for b in FP32_PICKS)}) at least {GOAL_SPEEDUP}x PyTorch eager FP32; the BF16 "
                 f"pick (`auto` where it chose BF16, else `ov-bf16`) at least {GOAL_BF16_SPEEDUP}x with at most "
                 f"{GOAL_MAX_FLIP:g} of the mask pixels flipped against onnxruntime FP32 on the calibration images. "
                 "% of peak: against the run's FP32 matmul peak, the BF16 pick against the BF16 one.", "")
        peak, peak16 = run.peak_gflops("fp32"), run.peak_gflops("bf16")
        imports = {r["stack"]: r for r in run.recs("import")}
        rows, notes = [], []
        for model, at in self.subjects(run):  # model: the subject's label (variant in brackets)
            eager = self._row(run, model, "torch", at)
            by = {b: self._row(run, model, b, at) for b in ("compile", "ort", "ov", "ov-bf16", "auto")}
            fp32, bf16 = self.picks(run, model, at)
            any_row = eager or fp32 or bf16 or {}
            size, macs = any_row.get("size"), any_row.get("gmacs_fvcore")
            sp = eager["p50_s"] / fp32["p50_s"] if eager and fp32 else None
            sp16 = eager["p50_s"] / bf16["p50_s"] if eager and bf16 else None
            comp, ort = by["compile"], by["ort"]
            spc = comp["p50_s"] / ort["p50_s"] if comp and ort else None
            goal = "-" if sp is None else ("meets" if sp >= GOAL_SPEEDUP else f"**misses** ({ratio_text(sp, GOAL_SPEEDUP)})")
            f16 = flips(bf16)
            short = ([] if sp16 is None or sp16 >= GOAL_BF16_SPEEDUP else [ratio_text(sp16, GOAL_BF16_SPEEDUP)])
            short += [] if f16 is not None and f16 <= GOAL_MAX_FLIP else ["flips"]
            goal16 = "-" if sp16 is None else ("meets" if not short else f"**misses** ({', '.join(short)})")
            mem = {b: run.memory(model, b, size) for b in ("torch", "compile", "ort", "ov", "ov-bf16")}

            def frac(r, p=peak):
                return f"{100 * 2 * macs / r['p50_s'] / p:.0f}%" if r and macs and p else "-"

            def pick(value, r, goal):
                return "-" if value is None else f"{ratio_text(value, goal)} ({r['backend']})"

            rows.append([model, size, num(any_row.get("params_m")), gm(macs), ms(eager and eager["p50_s"]),
                         *(ms(by[b] and by[b]["p50_s"]) for b in by), choice_text(by["auto"]),
                         pick(sp, fp32, GOAL_SPEEDUP), num(flips(fp32), ".1e"), goal, pick(sp16, bf16, GOAL_BF16_SPEEDUP),
                         num(f16, ".1e"), goal16,
                         num(spc) + ("x" if spc else ""),
                         " / ".join(num(mem[b] and mem[b]["peak_rss_mib"], ".0f") for b in mem),
                         frac(eager), frac(fp32), frac(bf16, peak16)])
            notes += self.goal_notes(run, model if at is None else f"{model} at {at}", eager, fp32, bf16, macs)
        self.add(md(["model", "size", "params M", "GMACs", "eager ms", "compile ms", "ort ms", "ov ms", "ov-bf16 ms",
                     "auto ms", "auto's choice", "FP32 pick vs eager", "FP32 flips", f"goal {GOAL_SPEEDUP}x",
                     "BF16 pick vs eager", "BF16 flips", f"goal {GOAL_BF16_SPEEDUP}x, flips <= {GOAL_MAX_FLIP:g}",
                     "ort vs compile", "peak RSS MiB eager / compile / ort / ov / ov-bf16", "eager % of peak", "FP32 pick % of peak",
                     "BF16 pick % of BF16 peak"], rows), "")
        if imports.get("runtime") and imports.get("torch"):
            rt, th = imports["runtime"], imports["torch"]
            p = import_p50
            self.add(f"Import in a fresh interpreter (p50): runtime (`runtime.predictor` + `onnxruntime`) "
                     f"{ms(p(rt))} ms, {rt['peak_rss_mib']:.0f} MiB RSS, {rt['installed_mib']:.0f} MiB installed; "
                     f"`import torch` {ms(p(th))} ms, {th['peak_rss_mib']:.0f} MiB RSS, "
                     f"{th['installed_mib']:.0f} MiB installed ({p(th) / p(rt):.1f}x slower to import, "
                     f"{th['installed_mib'] / rt['installed_mib']:.1f}x larger on disk).", "")
        self.add(*notes, "" if notes else "")

    def _row(self, run: Run, label: str, backend: str, size: int | None = None):
        return next((r for r in self.paper_rows(run) if r["label"] == label and r["backend"] == backend
                     and (size is None or r["size"] == size)), None)

    def section_papers(self) -> None:
        self.add("## Our models against their published figures", "",
                 f"Ours: params and fvcore GMACs of our build (random init). A figure holds within "
                 f"{100 * self.tol:.0f}%.", "")
        rows = []
        for model in self.models():
            if model not in self.known:
                continue
            spec = self.get_spec(model)
            for fig in spec.figures:
                if fig.params_m is None and fig.gflops is None:
                    continue
                prof = self.profile(model, fig.input_size)
                p = prof and prof["params_m"]
                g = prof and prof["gmacs_fvcore"]
                dp, hp = delta(p, fig.params_m, self.tol)
                dg, hg = delta(g, fig.gflops, self.tol)
                rows.append([model, fig.input_size, fig.source, num(fig.params_m), num(p), dp, hp,
                             num(fig.gflops), num(g), dg, hg, fig.note])
        self.add(md(["model", "size", "source", "params M (paper)", "params M (ours)", "delta", "",
                     "FLOPs G (paper)", "GMACs (ours)", "delta", "", "note"], rows), "")

    def section_latency(self, run: Run) -> None:
        rows_all = self.paper_rows(run)
        self.add(f"## Latency per backend ({run.name})", "")
        if not rows_all:
            self.add("_no latency measured_", "")
            return
        backends = backends_in(rows_all)
        self.add("Backends: " + "; ".join(f"`{b}` = {DESCRIPTIONS.get(b, b)}" for b in backends) + ".", "",
                 "Mask agreement with onnxruntime FP32 (`ort`) on the calibration images (synthetic forgeries at the "
                 "model's size, untimed): share of pixels flipped at the model's threshold, mask IoU, largest "
                 "probability difference. Threads: the backend's own as configured (`spin`: its pool spins "
                 "between calls).", "")
        rows = []
        for label, size in self.subjects(run):
            eager, ort = self._row(run, label, "torch", size), self._row(run, label, "ort", size)
            for b in backends:
                r = self._row(run, label, b, size) if size is not None else None
                if r is None:
                    continue
                sp = eager["p50_s"] / r["p50_s"] if eager else None
                so = ort["p50_s"] / r["p50_s"] if ort else None
                agree = r.get("agreement") or {}
                name = b + (f" ({choice_text(r)})" if b == "auto" else "")
                rows.append([label, r["size"], name, precision_of(r) or "-", settings_text(r), ms(r["p50_s"]),
                             ms(r.get("p90_s")), ms(r.get("p99_s")), r.get("rounds"), ms(r.get("first_s")),
                             num(sp) + ("x" if sp else ""), num(so) + ("x" if so else ""),
                             num(agree.get("flipped"), ".1e"), num(agree.get("mask_iou"), ".4f"),
                             num(agree.get("max_abs_prob"), ".1e")])
        self.add(md(["model", "size", "backend", "precision", "threads", "p50 ms", "p90 ms", "p99 ms", "rounds",
                     "first call ms", "speed-up vs eager", "vs ort FP32", "mask flips vs ort", "mask IoU",
                     "max |prob diff|"], rows), "")
        name = f"latency_run{run.index}.png"
        self.plots[name] = self._bar_plot(run, rows_all, backends)
        self.add(f"![latency]({name})", "")

    def _bar_plot(self, run: Run, rows_all, backends):
        import matplotlib.pyplot as plt
        import numpy as np

        keys = [k for k in self.subjects(run) if k[1] is not None]
        labels = [f"{lab} {size}" for lab, size in keys]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
        width = 0.8 / max(len(backends), 1)
        x = np.arange(len(labels))
        for i, b in enumerate(backends):
            vals = [(self._row(run, lab, b, size) or {}).get("p50_s") for lab, size in keys]
            ax1.bar(x + i * width, [v * 1e3 if v else 0 for v in vals], width, label=b)
            eager = [(self._row(run, lab, "torch", size) or {}).get("p50_s") for lab, size in keys]
            ax2.bar(x + i * width, [e / v if v and e else 0 for v, e in zip(vals, eager)], width, label=b)
        for ax, title in ((ax1, "p50 latency (ms, log)"), (ax2, "speed-up vs PyTorch eager")):
            ax.set_xticks(x + width * (len(backends) - 1) / 2, labels, rotation=20)
            ax.set_title(title)
        ax1.set_yscale("log")
        ax2.axhline(GOAL_SPEEDUP, color="k", ls="--", lw=0.8, label=f"FP32 goal {GOAL_SPEEDUP}x")
        if any(precision_of(r) == "bf16" for r in rows_all):
            ax2.axhline(GOAL_BF16_SPEEDUP, color="k", ls=":", lw=0.8, label=f"BF16 goal {GOAL_BF16_SPEEDUP}x")
        ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the bars
        fig.suptitle(f"Batch 1 at each model's paper size or --subjects ({run.machine})", fontsize=10)
        fig.tight_layout()
        return fig

    def section_memory(self, run: Run) -> None:
        recs = [r for r in run.recs("memory")  # the core suite's (older runs: those without a variant)
                if r.get("suite", "variant" if r.get("variant") else "core") == "core"]
        self.add(f"## Memory ({run.name})", "")
        if not recs:
            self.add("_no memory measured_", "")
            return
        self.add("Fresh process per backend: peak resident set after import, after loading the model and after "
                 "one inference; cold start = process spawn to exit.", "")
        rows = [[r["label"], r["size"], r["backend"], num(r["rss_import_mib"], ".0f"), num(r["rss_setup_mib"], ".0f"),
                 num(r["peak_rss_mib"], ".0f"), num(r.get("cuda_peak_mib"), ".0f"), ms(r["import_s"]),
                 ms(r["setup_s"]), ms(r["first_s"]), ms(r.get("process_wall_s"))] for r in recs]
        self.add(md(["model", "size", "backend", "RSS after import MiB", "after load MiB", "peak MiB",
                     "CUDA peak MiB", "import ms", "load ms", "first inference ms", "cold start ms"], rows), "")
        files = run.recs("files")
        if files:
            kinds = sorted({k for f in files for k in f["sizes_mib"]})
            self.add("Model files (MiB):", "",
                     md(["model"] + kinds, [[f["label"]] + [num(f["sizes_mib"].get(k), ".1f") for k in kinds]
                                            for f in files]), "")
        import matplotlib.pyplot as plt
        import numpy as np

        keys = list(dict.fromkeys((r["label"], r["size"]) for r in recs))
        labels = [f"{lab} {size}" for lab, size in keys]
        backends = backends_in(recs)
        fig, ax = plt.subplots(figsize=(10, 4))
        width = 0.8 / max(len(backends), 1)
        for i, b in enumerate(backends):
            vals = [(run.memory(lab, b, size) or {}).get("peak_rss_mib", 0) for lab, size in keys]
            ax.bar(np.arange(len(labels)) + i * width, vals, width, label=b)
        ax.set_xticks(np.arange(len(labels)) + width * (len(backends) - 1) / 2, labels, rotation=20)
        ax.set_ylabel("peak RSS (MiB)")
        ax.set_title("Peak resident memory, fresh process, one inference")
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"memory_run{run.index}.png"
        self.plots[name] = fig
        self.add(f"![memory]({name})", "")
        imports = run.recs("import")
        if imports:
            rows = [[r["stack"], ", ".join(r["modules"]), ms(import_p50(r)),
                     num(r["peak_rss_mib"], ".0f"), num(r["installed_mib"], ".0f"), len(r["distributions"])]
                    for r in imports]
            self.add("Import cost in a fresh interpreter and installed footprint (the distributions and "
                     "everything they require):", "",
                     md(["stack", "modules", "import p50 ms", "RSS MiB", "installed MiB", "distributions"], rows), "")

    def section_efficiency(self, run: Run) -> None:
        peak, peak16 = run.peak_gflops("fp32"), run.peak_gflops("bf16")
        rows_all = [r for r in self.paper_rows(run) if r.get("gmacs_fvcore")]
        self.add(f"## Compute efficiency ({run.name})", "")
        if not peak or not rows_all:
            self.add("_needs the matmul peak and latency rows_", "")
            return
        self.add(f"Measured matmul peaks on this machine: FP32 {peak:.1f} GFLOP/s, BF16 "
                 + (f"{peak16:.1f} GFLOP/s ({peak16 / peak:.1f}x FP32)" if peak16 else "not measured" + "".join(
                     f" ({r['reason']})" for r in run.recs("peak_unavailable")[:1]))
                 + ". Achieved = 2 x fvcore GMACs / p50 latency, as a fraction of the peak of the precision the row "
                 "ran in (the `ort-prepost` rows include pre/post-processing).", "")
        rows = []
        for r in rows_all:
            p = peak16 if precision_of(r) == "bf16" else peak
            rate = 2 * r["gmacs_fvcore"] / r["p50_s"]
            rows.append([r["label"], r["backend"], precision_of(r) or "-", gm(r["gmacs_fvcore"]), ms(r["p50_s"]),
                         num(rate, ".1f"), f"{100 * rate / p:.0f}%" if p else "-",
                         "BF16" if p is peak16 and p else "FP32"])
        self.add(md(["model", "backend", "precision", "GMACs", "p50 ms", "achieved GFLOP/s", "fraction of peak",
                     "peak"], rows), "")

    def section_batch(self, run: Run) -> None:
        rows_all = [r for r in run.latency if r.get("suite") == "batch"]
        if not rows_all:
            return
        self.add(f"## Batch sweep ({run.name})", "")
        rows = []
        series = defaultdict(list)
        for label in dict.fromkeys(r["label"] for r in rows_all):
            for b in backends_in(rows_all):
                one = self._row(run, label, b)
                pts = ([(1, one["p50_s"])] if one else []) + sorted(
                    (r["batch"], r["p50_s"]) for r in rows_all if r["label"] == label and r["backend"] == b)
                for n, t in pts:
                    rows.append([label, b, n, ms(t), num(n / t, ".2f")])
                if pts:
                    series[(label, b)] = [(n, n / t) for n, t in pts]
        self.add("Batch 1 is the latency suite's fixed-batch export; larger batches use a dynamic-batch export.", "",
                 md(["model", "backend", "batch", "p50 ms per batch", "images/s"], rows), "")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        for (label, b), pts in series.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{label} {b}")
        ax.set_xlabel("batch")
        ax.set_ylabel("images/s")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.set_title("Throughput versus batch size")
        fig.tight_layout()
        name = f"batch_run{run.index}.png"
        self.plots[name] = fig
        self.add(f"![batch]({name})", "")

    def section_scaling(self) -> None:
        recs = [r for run in self.runs for r in run.recs("scaling")]
        if not recs:
            return
        self.add("## Cost versus input size", "",
                 "GMACs by torch's counter on the meta device (no run needed, so every size is counted; it skips "
                 "normalisation and resizing, which fvcore counts); eager latency where it was measured "
                 "(the paper size comes from the latency suite).", "")
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        rows = []
        for rec in recs:
            run = next(r for r in self.runs if rec in r.records)
            pts = [p for p in rec["points"] if "gmacs_torch" in p]
            base = next((p["gmacs_torch"] for p in pts if p["size"] == rec["paper_size"]), None)
            lat = {}
            for p in pts:
                row = run.lat("scaling", rec["model"], "torch", p["size"]) or (
                    run.lat("paper", rec["model"], "torch", p["size"]))
                if row:
                    lat[p["size"]] = row["p50_s"]
            for p in rec["points"]:
                rows.append([rec["model"], p["size"], gm(p.get("gmacs_torch")),
                             num(p["gmacs_torch"] / base, ".1f") + "x" if base and "gmacs_torch" in p else "-",
                             ms(lat.get(p["size"])), p.get("error", "")])
            ax1.plot([p["size"] for p in pts], [p["gmacs_torch"] for p in pts], marker="o", label=rec["model"])
            if lat:
                ax2.plot(sorted(lat), [lat[s] * 1e3 for s in sorted(lat)], marker="o", label=rec["model"])
        self.add(md(["model", "size", "GMACs", "vs paper size", "eager p50 ms", "not counted because"], rows), "")
        for ax, title, yl in ((ax1, "GMACs per image", "GMACs"), (ax2, "eager latency (measured points)", "ms")):
            ax.set_xlabel("input size (px)")
            ax.set_ylabel(yl)
            ax.set_yscale("log")
            ax.set_title(title)
            ax.legend(fontsize=8)
        fig.tight_layout()
        self.plots["scaling.png"] = fig
        self.add("![scaling](scaling.png)", "")

    def section_tables(self) -> None:
        self.add("## The papers' efficiency tables, with our rows", "")
        for table in (QMANET_TABLE10, M2SFORMER_TABLE6):
            self.add(f"### {table.title} ({table.input_size} x {table.input_size})", "", f"Source: {table.source}.", "")
            rows = []
            for row in table_rows(table):
                ours = self.profile(row.model, table.input_size) if row.model else None
                dp, hp = delta(ours and ours["params_m"], row.params_m, self.tol)
                dg, hg = delta(ours and ours["gmacs_fvcore"], row.gflops, self.tol)
                rows.append([row.label, num(row.params_m), num(row.gflops),
                             num(ours and ours["params_m"]) if row.model else "",
                             num(ours and ours["gmacs_fvcore"]) if row.model else "",
                             f"{dp} / {dg}" if ours else "", f"{hp} / {hg}" if ours else "", row.note])
            self.add(md(["method", "params M", "FLOPs G", "ours params M", "ours GMACs", "delta params / FLOPs",
                         "", "note"], rows), "")
        self._ablation_table()
        self.add(f"### {M2SFORMER_BLOCKS.title}", "", f"Source: {M2SFORMER_BLOCKS.source}. Published only: our "
                 "M2SFormer has no switches for these block variants.", "",
                 md(["variant", "params M", "FLOPs G"], [[r.label, num(r.params_m), num(r.gflops)]
                                                          for r in M2SFORMER_BLOCKS.rows]), "")
        self._scatter()

    def _ablation_table(self) -> None:
        t = M2SFORMER_BACKBONES
        self.add(f"### {t.title} ({t.input_size} x {t.input_size})", "", f"Source: {t.source}.", "")
        rows = []
        for row in t.rows:
            label = f"m2sformer[encoder={row.encoder}]" if row.encoder else None
            ours = self.profile(label, t.input_size) if label else None
            lat = None
            for run in self.runs:
                lat = lat or run.lat("ablation", label, "torch", t.input_size)
            dp, hp = delta(ours and ours["params_m"], row.params_m, self.tol)
            dg, hg = delta(ours and ours["gmacs_fvcore"], row.gflops, self.tol)
            rows.append([row.label, row.encoder or "-", num(row.params_m), num(row.gflops),
                         num(ours and ours["params_m"]), num(ours and ours["gmacs_fvcore"]),
                         f"{dp} / {dg}" if ours else "-", f"{hp} / {hg}" if ours else row.note or "not measured",
                         ms(lat and lat["p50_s"])])
        self.add(md(["encoder", "built as", "params M (paper)", "FLOPs G (paper)", "params M (ours)", "GMACs (ours)",
                     "delta", "", "eager p50 ms"], rows), "")

    def _scatter(self) -> None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(13, 5))
        any_ours = False
        for ax, table in zip(axes, (M2SFORMER_TABLE6, QMANET_TABLE10)):
            for row in table_rows(table):
                if row.params_m is not None and row.gflops is not None:
                    ax.scatter(row.params_m, row.gflops, marker="o", facecolors="none", edgecolors="tab:gray")
                    ax.annotate(row.label, (row.params_m, row.gflops), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
                ours = self.profile(row.model, table.input_size) if row.model else None
                if ours:
                    any_ours = True
                    ax.scatter(ours["params_m"], ours["gmacs_fvcore"], marker="*", s=120, color="tab:red")
                    ax.annotate(f"{row.label} (ours)", (ours["params_m"], ours["gmacs_fvcore"]), fontsize=7,
                                color="tab:red", xytext=(3, -9), textcoords="offset points")
                    if row.params_m is not None and row.gflops is not None:
                        ax.annotate("", (ours["params_m"], ours["gmacs_fvcore"]), (row.params_m, row.gflops),
                                    arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 0.8})
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("params (M)")
            ax.set_ylabel("FLOPs as published / our fvcore GMACs (G)")
            ax.set_title(f"{table.title.split(':')[0]} at {table.input_size} px", fontsize=10)
        fig.suptitle("Params vs compute: published points (grey), our builds (red stars, arrow from the published "
                     "figure)", fontsize=10)
        fig.tight_layout()
        self.plots["params_gmacs.png"] = fig
        self.add("![params vs GMACs](params_gmacs.png)" + ("" if any_ours else " (no profile of ours at these sizes)"),
                 "")

    def section_variants(self) -> None:
        t5 = TRANSFORENSICS_TABLE5
        model = t5["model"]
        if model not in self.models():
            return
        self.add("## TransForensics Table 5: cost by output branch", "",
                 f"Published: {t5['source']}. Ours: this machine's CPU, eager PyTorch and "
                 "onnxruntime, peak RSS of a fresh process (the default build is C2: its figures are the latency "
                 "and memory suites'). Different hardware, so compare the growth from C5 to C2 (ratios), not the "
                 "absolute values.", "")
        keys = (("gpu", "paper GPU memory"), ("t", "paper time"), ("e", "ours eager time"), ("o", "ours ort time"),
                ("me", "ours eager peak RSS"), ("mo", "ours ort peak RSS"))
        rows, plotted = [], None
        for run in self.runs:
            aliases = {r["variant"] for r in run.recs("variant_alias") if r["model"] == model}
            by_branch = {}
            for fig in t5["rows"]:
                label = model if fig.branch in aliases else f"{model}[{fig.branch}]"
                suite = "paper" if fig.branch in aliases else "variant"
                e, o = run.lat(suite, label, "torch"), run.lat(suite, label, "ort")
                me, mo = run.memory(label, "torch"), run.memory(label, "ort")
                by_branch[fig.branch] = {"gpu": fig.gpu_memory_mb, "t": fig.seconds, "e": e and e["p50_s"],
                                         "o": o and o["p50_s"], "me": me and me["peak_rss_mib"],
                                         "mo": mo and mo["peak_rss_mib"]}
            ref = by_branch.get("c5", {})

            def ratio(vals, k):
                return num(vals[k] / ref[k], ".1f") + "x" if vals.get(k) and ref.get(k) else "-"

            sizes = {r["size"] for r in run.latency if r.get("model") == model and r.get("suite") in ("paper", "variant")}
            where = f"{run.name}, ours at {'/'.join(map(str, sorted(sizes))) or '-'} px" + (
                " (small configs)" if run.meta.get("small") else "")
            for branch, v in by_branch.items():
                rows.append([where, branch.upper(), num(v["gpu"], ".0f"), ratio(v, "gpu"), num(v["t"]),
                             ratio(v, "t"), ms(v["e"]), ratio(v, "e"), ms(v["o"]), ratio(v, "o"),
                             num(v["me"], ".0f"), ratio(v, "me"), num(v["mo"], ".0f"), ratio(v, "mo")])
            plotted = plotted or by_branch
        self.add(md(["run", "branch", "GPU MB (paper)", "vs C5", "s (paper)", "vs C5", "eager ms", "vs C5", "ort ms",
                     "vs C5", "eager peak MiB", "vs C5", "ort peak MiB", "vs C5"], rows), "")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        branches = [f.branch for f in t5["rows"]]
        for key, name in keys:
            base = plotted.get("c5", {}).get(key)
            ys = [plotted[b][key] / base if plotted[b].get(key) and base else float("nan") for b in branches]
            if any(y == y for y in ys):  # not all NaN
                ax.plot([b.upper() for b in branches], ys, marker="o", label=name)
        ax.set_yscale("log")
        ax.set_ylabel("relative to C5")
        ax.set_title("TransForensics: cost by output branch, relative to C5")
        ax.legend(fontsize=8)
        fig.tight_layout()
        self.plots["transforensics_branches.png"] = fig
        self.add("![branches](transforensics_branches.png)", "")

    def section_missing(self) -> None:
        rows = [[run.name, f"{r['label']} at {r['size']} (batch {r['export_batch']})", r["reason"]]
                for run in self.runs for r in run.recs("export_failure")]
        rows += [[run.name, "artifact", p] for run in self.runs for p in run.meta.get("artifact_problems", [])]
        rows += [[run.name, f"tune of {r['artifact']}", r["reason"]]
                 for run in self.runs for r in run.recs("tune_failure")]
        rows += [[run.name, f"backend {r['backend']}", r["reason"]]
                 for run in self.runs for r in run.recs("unavailable")]
        rows += [[run.name, r["what"], f"left out to stay within the run's budget ({r['budget_s'] / 60:g} min; "
                  f"{r['used_s'] / 60:.1f} min used, ~{r['estimate_s']:.0f} s more)"]
                 for run in self.runs for r in run.recs("budget_skip")]
        if rows:
            self.add("## Not measured", "", md(["run", "what", "why"], rows), "")

    def section_trtexec(self) -> None:
        if not self.trtexec:
            return
        self.add("## TensorRT (trtexec exports)", "",
                 "Measured on the machine that ran trtexec, not in the runs above: no ratio against them.", "")
        times = [r for r in self.trtexec if r["kind"] == "trtexec_times"]
        if times:
            rows = [[r["model"], r["label"], r["inferences"], *(num(r.get(k, {}).get(p), ".3f") for k in
                                                                 ("latencyMs", "computeMs") for p in ("p50", "p90", "p99")),
                     r["file"]] for r in times]
            self.add(md(["model", "engine", "inferences", "latency p50 ms", "p90", "p99", "GPU compute p50 ms", "p90",
                         "p99", "file"], rows), "")
        for r in (r for r in self.trtexec if r["kind"] == "trtexec_profile"):
            self.add(f"Layer profile {r['model']} {r['label']} ({r['layers']} layers, {r['total_ms']:.3f} ms per "
                     f"run over {r['runs']} runs), slowest layers:", "",
                     md(["layer", "average ms", "%"], [[t["name"], num(t["average_ms"], ".3f"),
                                                       num(t["percentage"], ".1f")] for t in r["top"]]), "")


    def section_device(self) -> None:
        if not self.device:
            return
        self.add("## TensorRT on the device (engines/device_check.py)", "",
                 "Engines built and run on the GPU named, against onnxruntime CPU on the same synthetic images "
                 "(FP32 ONNX as the reference; mask IoU at the model's threshold). Measured there, not in the runs "
                 "above: no ratio against them.", "")
        rows = []
        for d in self.device:
            m = d["machine"]
            where = f"{m.get('gpu', '?')} (sm {m.get('compute_capability', '?')}), TensorRT {m.get('tensorrt', '?')}"
            for e in d["engines"]:
                par, tx = e.get("parity") or {}, e.get("trtexec") or {}
                rows.append([d.get("model", "?"), where, e["precision"], "yes" if e["built"] else "no",
                             num(e.get("build_seconds"), ".1f"), num(par.get("max_abs_prob"), ".2e"),
                             num(par.get("mask_iou"), ".4f"), num(par.get("flipped"), ".4f"),
                             num(tx.get("latency_p50_ms"), ".3f"), num(tx.get("latency_p99_ms"), ".3f"),
                             e.get("error") or ""])
        self.add(md(["model", "device", "precision", "built", "build s", "max |prob diff|", "mask IoU",
                     "flipped share", "trtexec p50 ms", "p99 ms", "problem"], rows), "")


# --------------------------------------------------------------------------- CLI


def write_report(json_paths: list[Path], out: Path, trtexec_specs: list[str] | None = None,
                 tolerance: float = 0.10, device_checks: list[Path] | None = None) -> Path:
    """Render ``report.md`` and its PNGs into ``out``; raises ReportError / TrtexecError on bad input."""
    runs = [load_run(Path(p), i + 1) for i, p in enumerate(json_paths)]  # bad input fails before heavy imports
    device = [read_device_check(p) for p in device_checks or []]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from train.models import list_models

    trt = [read_trtexec(parse_spec(s, list_models())) for s in trtexec_specs or []]
    report = Report(runs, trt, tolerance, out, device)
    text = report.render()
    out.mkdir(parents=True, exist_ok=True)
    pending: list[tuple[Path, Path]] = []
    try:
        for name, fig in tqdm(report.plots.items(), desc="plots", unit="png", file=sys.stderr):
            fd, tmp = mkstemp(prefix=f".{name}.", suffix=".png", dir=out)
            os.close(fd)
            pending.append((Path(tmp), out / name))
            fig.savefig(tmp, dpi=110)
            plt.close(fig)
        fd, tmp = mkstemp(prefix=".report.", suffix=".md", dir=out)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        pending.append((Path(tmp), out / "report.md"))
    except BaseException:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in pending:
        os.replace(tmp, final)
    return out / "report.md"


@one_line_errors()  # Ctrl-C: one line, exit 130 (this tool reports its own errors)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--json", dest="jsons", action="append", metavar="FILE",
                        help="pytest-benchmark JSON of `pytest bench/` (repeatable: one per run; "
                             "default bench-out/latest.json)")
    parser.add_argument("--trtexec", action="append", default=[], metavar="[MODEL[:LABEL]=]PATH",
                        help="a trtexec --exportTimes / --exportProfile JSON (repeatable)")
    parser.add_argument("--device-check", action="append", default=[], metavar="FILE",
                        help="device-check.json of engines/device_check.py (repeatable)")
    parser.add_argument("--out", default="bench-out", help="output folder (default bench-out)")
    parser.add_argument("--tolerance", type=float, default=0.10,
                        help="relative difference under which a published figure holds (default 0.10)")
    args = parser.parse_args(argv)
    try:
        jsons = args.jsons or ([] if args.device_check else ["bench-out/latest.json"])
        path = write_report([Path(p) for p in jsons], Path(args.out), args.trtexec, args.tolerance,
                            [Path(p) for p in args.device_check])
    except (ReportError, TrtexecError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path} and its plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""pytest configuration of the benchmark suites (``pytest bench/ --benchmark-json OUT``).

Options (all comma lists where plural):
  --models NAMES        models to measure: registered names or package.module:factory (default: all registered)
  --backends NAMES      latency/memory backends (default: torch, compile, ort, ort-prepost, ov, ov-bf16,
                        auto and the GPU ones, which skip without a GPU; ort-fp16 / ort-int8 / tensorrt-* with
                        --artifacts)
  --small               the models' small test configurations at their small sizes (for tests)
  --subjects SPECS      what the core suites (latency, memory, file sizes) measure of a model, as
                        MODEL[VARIANT]@SIZE (e.g. transforensics[c3]@512,transforensics[c2]@256): a model
                        named here is measured as these subjects instead of its paper build and size; the
                        others keep theirs (default: every model at its paper size). A model named only
                        here joins --models
  --batches N,...       batch sweep sizes (default 2,4; batch 1 is the latency suite)
  --sizes N,...         scaling sizes (default 256,384,512,768,1024; with --small: small size x1, x2)
  --bench-time S        seconds of timed rounds per benchmark (default 5)
  --min-rounds N        at least N timed rounds (default 3); --max-rounds N (default 30)
  --slow S              a call slower than S seconds (default 15) gets --slow-rounds N (default 2)
                        fixed rounds instead: minute-long inferences must fit the run's budget
  --point-limit S       optional points (batch sweep, scaling, encoder ablation) are skipped when one
                        inference is estimated to take longer than S seconds (default 8)
  --bench-cache DIR     exports, profiles and the inductor cache, reused while the code is unchanged
                        (default bench-out/cache)
  --artifacts DIR       extra artifacts to benchmark: FP16 / INT8 ONNX, TensorRT engines (with sidecars)
  --exporter NAME       ONNX exporter of the run's exports: dynamo or torchscript (default: export.onnx's)
  --budget MIN          wall-clock budget of the run in minutes (default 20; 0: none). The core suites
                        (peak, profiles, paper-size latency and memory, footprint) always run; an optional
                        point (variants, encoder ablation, batch sweep, scaling) whose estimated cost would
                        end the run past the budget is skipped, saying so (and listed in the report)

Every non-timing measurement (params and MACs, memory, import cost, scaling counts, the matmul
peak) is a record in the session store; the ``pytest_benchmark_update_json`` hook writes the
records into the benchmark JSON under "imlkit", so one file holds the whole run for
``python -m bench.report``. Suites run in a fixed order (peak, profiles, latency, memory, then
the optional sweeps) so later suites plan from measured latencies. ``python -m bench.prepare``
builds the cached exports, profiles, compiled kernels and ``runtime.tune`` files first (``make
bench`` does), so the run's budget goes to measuring.

One backend at a time: the store keeps at most one ``runtime.Predictor`` open (``ort`` and
``ort-prepost`` share it) and closes it before any other backend is built, so no two thread
pools (onnxruntime's, OpenVINO's) coexist while one of them is timed; torch's pool idles
meanwhile. The mask agreement of ``ov``, ``ov-bf16`` and ``auto`` with onnxruntime FP32 runs on
calibration images (``bench.artifacts.calibration_images``) after their timed rounds.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# read before anything imports torch (which may set it to its default): the user's own choice wins
_USER_INDUCTOR_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")

from bench.artifacts import (DEFAULT_CACHE, Artifact, ExportFailed, TuneFailed, cached_export,  # noqa: E402
                             cached_tune, calibration_folder, calibration_images, code_fingerprint, discover,
                             is_cached, use_inductor_cache)
from bench.backends import (AGREEMENT_BACKENDS, CORE_BACKENDS, GPU_BACKENDS, ONNX_BACKENDS,  # noqa: E402
                            REFERENCE_BACKEND, TORCH_BACKENDS, Runner, make_runner, open_predictor,
                            predictor_config, unavailable)
from bench.papers import profile_points  # noqa: E402
from bench.memory import FRESH_PROCESS_S  # noqa: E402
from bench.subject import Subject, cached_profile, is_profile_cached, meta_gmacs  # noqa: E402
from bench.timing import Plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SUITE_ORDER = ("test_peak", "test_profile", "test_latency", "test_memory", "test_footprint",  # core
               "test_variants", "test_ablation", "test_batch_sweep", "test_scaling")  # optional, within --budget
ASSUMED_EFFICIENCY = 0.25  # fraction of the matmul peak assumed when no latency was measured yet
END_RESERVE_S = 30.0  # kept free in the budget for the end of the run: the second peak measurement, the JSON
EXPORT_OVERHEAD_S = 20.0  # an export beyond its ~3 inferences (trace, reference, parity): load, checker, lint


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise pytest.UsageError(f"{option} expects comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise pytest.UsageError(f"{option} expects positive integers, got {text!r}")
    return values


def parse_models(text: str) -> list[str]:
    """``--models``: comma list of names for the one resolver (``train.models.external``:
    registered names, import paths, entry points); empty: every registered model."""
    from train.models import list_models
    from train.models.external import model_argument

    names = [m.strip() for m in text.split(",") if m.strip()]
    models = []
    for name in names:
        try:
            models.append(model_argument(name))
        except argparse.ArgumentTypeError as err:  # one line
            raise pytest.UsageError(f"--models: {err}") from None
    return list(dict.fromkeys(models)) or list_models()


def parse_subjects(text: str, small: bool = False) -> list[Subject]:
    """``--subjects``: comma list of ``MODEL[VARIANT]@SIZE`` (``Subject.parse_list``)."""
    try:
        return Subject.parse_list(text, small=small)
    except ValueError as err:
        raise pytest.UsageError(f"--subjects: {err}") from None


def pytest_addoption(parser):
    group = parser.getgroup("imlkit", "imlkit benchmark suites")
    group.addoption("--models", default="", help="comma list of registered models or package.module:factory "
                    "import paths (default: all registered)")
    group.addoption("--backends", default="", help="comma list of backends (default: all core and GPU ones)")
    group.addoption("--small", action="store_true", help="small test configurations at their small sizes")
    group.addoption("--subjects", default="", help="comma list of MODEL[VARIANT]@SIZE the core suites measure "
                    "instead of those models' paper build and size")
    group.addoption("--batches", default="2,4", help="batch sweep sizes (default 2,4)")
    group.addoption("--sizes", default="", help="scaling input sizes (default 256,384,512,768,1024)")
    group.addoption("--bench-time", type=float, default=5.0, help="seconds of timed rounds per benchmark")
    group.addoption("--min-rounds", type=int, default=3, help="minimum timed rounds (default 3)")
    group.addoption("--max-rounds", type=int, default=30, help="maximum timed rounds (default 30)")
    group.addoption("--slow", type=float, default=15.0,
                    help="a call slower than this many seconds gets --slow-rounds fixed rounds (default 15)")
    group.addoption("--slow-rounds", type=int, default=2, help="timed rounds of a slow call (default 2)")
    group.addoption("--point-limit", type=float, default=8.0,
                    help="skip optional points whose single inference is estimated above this many seconds")
    group.addoption("--bench-cache", default=str(DEFAULT_CACHE), help="cache folder")
    group.addoption("--budget", type=float, default=20.0,
                    help="run budget in minutes: optional points that would end past it skip (default 20; 0: none)")
    group.addoption("--artifacts", default=None, help="folder of extra artifacts (FP16/INT8 ONNX, engines)")
    group.addoption("--exporter", default=None, choices=("dynamo", "torchscript"),
                    help="ONNX exporter of the run's exports (default: export.onnx's)")


@dataclass
class Store:
    """Session state: options, caches and the records that go into the JSON."""

    models: list[str]
    backends: list[str]
    small: bool
    batches: list[int]
    sizes: list[int]
    plan: Plan
    point_limit: float
    cache: Path
    artifacts: list[Artifact]
    artifact_problems: list[str]
    fingerprint: str
    subjects: list[Subject] = field(default_factory=list)  # the core suites': paper subjects unless --subjects
    budget_s: float | None = None
    exporter: str | None = None  # None: export.onnx's default
    started: float = field(default_factory=time.monotonic)
    records: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[tuple, float] = field(default_factory=dict)
    _peak: Any = None
    _peak_bf16: Any = None
    _gmacs: dict[Subject, float] = field(default_factory=dict)
    _export_failures: dict[tuple, str] = field(default_factory=dict)
    _tune_failures: dict[Path, str] = field(default_factory=dict)
    _calibration: dict[Path, tuple] = field(default_factory=dict)  # export -> (input batches, reference outputs)
    _session: Any = None  # ((path, predictor config), Predictor, seconds of one warm call or None)

    def record(self, kind: str, **data: Any) -> dict[str, Any]:
        rec = {"kind": kind, **data}
        self.records.append(rec)
        return rec

    def export(self, subject: Subject, batch: int | str = 1) -> Path:
        """The cached ONNX export; a failed export (e.g. out of memory in the child) is recorded
        once, and this and every later test needing it skip with its message."""
        key = (subject, batch)
        if key not in self._export_failures:
            try:
                return cached_export(subject.model, self.cache, size=subject.size, batch=batch, small=subject.small,
                                     variant=subject.variant, options=dict(subject.options) or None,
                                     fingerprint=self.fingerprint, exporter=self.exporter)
            except ExportFailed as err:
                self._export_failures[key] = str(err)
                self.record("export_failure", **subject.as_dict(), export_batch=str(batch), reason=str(err))
        pytest.skip(self._export_failures[key])

    def profile(self, subject: Subject) -> dict[str, Any]:
        return cached_profile(subject, self.cache, self.fingerprint)

    def peak(self):
        """The FP32 matmul peak (measured once at the start, again at the end of the run)."""
        if self._peak is None:
            from bench.peak import machine_peak

            self._peak = machine_peak()
            self.record("peak", phase="start", **self._peak.__dict__)
        return self._peak

    def peak_bf16(self):
        """The BF16 matmul peak, or a pytest skip on a CPU without native BF16."""
        if self._peak_bf16 is None:
            from bench.backends import bf16_unavailable
            from bench.peak import machine_peak

            why = bf16_unavailable()
            if why:
                self.record("peak_unavailable", precision="bf16", reason=why)
                pytest.skip(f"BF16 peak: {why}")
            self._peak_bf16 = machine_peak(precision="bf16")
            self.record("peak", phase="start", **self._peak_bf16.__dict__)
        return self._peak_bf16

    def gmacs(self, subject: Subject) -> float:
        if subject not in self._gmacs:
            self._gmacs[subject] = meta_gmacs(subject)
        return self._gmacs[subject]

    def estimate_s(self, subject: Subject, backend: str) -> float:
        """Expected seconds of one inference: a measured batch-1 latency scaled by MACs (on
        ``backend``, else eager; of the same build at any size first, else of the model in
        any build), else MACs at ASSUMED_EFFICIENCY of the matmul peak."""
        def same_build(s: Subject) -> bool:
            return (s.variant, s.options) == (subject.variant, subject.options)

        for want in (backend, "torch"):
            known = [(s, t) for (s, b), t in self.latency.items() if b == want and s.batch == 1
                     and s.model == subject.model and s.small == subject.small]
            known.sort(key=lambda st: (not same_build(st[0]), abs(st[0].size - subject.size)))
            if known:
                base, measured = known[0]
                return measured * self.gmacs(subject) / max(self.gmacs(base), 1e-12)
        return 2.0 * self.gmacs(subject) / (self.peak().gflops * ASSUMED_EFFICIENCY)

    def timed_s(self, subject: Subject, backend: str) -> float:
        """Expected seconds of a latency benchmark: warm-up plus the planned rounds."""
        est = self.estimate_s(subject, backend)
        return est * (self.plan.warmup + self.plan.rounds(est))

    def export_s(self, subject: Subject, batch: int | str = 1) -> float:
        """Expected seconds to make ``subject``'s cached export: 0 when it is there, else about
        three inferences (trace, PyTorch reference, onnxruntime parity) plus a fixed overhead."""
        if is_cached(subject.model, self.cache, size=subject.size, batch=batch, small=subject.small,
                     variant=subject.variant, options=dict(subject.options) or None, fingerprint=self.fingerprint,
                     exporter=self.exporter):
            return 0.0
        return 3 * self.estimate_s(subject, "torch") + EXPORT_OVERHEAD_S

    def profile_s(self, subject: Subject) -> float:
        """Expected seconds of ``profile``: 0 when cached, else two counted inferences
        (fvcore's trace and torch's counter) in a freshly built model."""
        if is_profile_cached(subject, self.cache, self.fingerprint):
            return 0.0
        return 2 * self.estimate_s(subject, "torch") + FRESH_PROCESS_S

    def within_budget(self, what: str, seconds: float) -> None:
        """Skip an optional point (recorded for the report) when ``seconds`` more would end the
        run past ``--budget``."""
        if self.budget_s is None:
            return
        used = time.monotonic() - self.started
        if used + seconds + END_RESERVE_S > self.budget_s:
            self.record("budget_skip", what=what, estimate_s=seconds, used_s=used, budget_s=self.budget_s)
            pytest.skip(f"{what}: ~{seconds:.0f} s more would end the run past --budget "
                        f"{self.budget_s / 60:g} min ({used / 60:.1f} min used)")

    def skip_if_costly(self, subject: Subject, backend: str, what: str) -> float:
        est = self.estimate_s(subject, backend)
        if est > self.point_limit:
            pytest.skip(f"{what}: one inference estimated at {est:.1f} s > --point-limit {self.point_limit:g} s")
        return est

    def runner(self, subject: Subject, backend: str, path: Path | None = None) -> Runner:
        """A runner of ``subject`` on ``backend`` (artifact from ``path_for`` unless given). A
        runtime backend's Predictor stays open between consecutive tests that configure it
        alike (``ort`` then ``ort-prepost``), so the second needs no warm-up; any other runner
        closes it first (a TransForensics session holds gigabytes, and no two thread pools may
        coexist while one is timed). A backend that refuses the precision skips with its reason."""
        from runtime.errors import BackendError

        path = self.path_for(subject, backend) if path is None else path
        if path is None:  # a torch backend
            self.close_session()
            return make_runner(backend, subject)
        if backend in AGREEMENT_BACKENDS and subject.batch == 1:
            self.calibration(subject, path)  # the reference, before this backend's session opens
        try:
            predictor, warm_s = self._open(backend, path)
        except BackendError as err:
            reason = " ".join(str(err).split())
            self.record("unavailable", backend=backend, reason=f"{subject.label}: {reason}")
            pytest.skip(f"{backend}: {reason}")
        runner = make_runner(backend, subject, path, predictor=predictor)
        runner.warm_s = warm_s if subject.batch == 1 else None
        return runner

    def _open(self, backend: str, path: Path):
        """(Predictor, seconds of one warm call or None): the open one when it is ``backend``'s
        configuration of ``path``, else a new one after closing it."""
        key = (path, json.dumps(predictor_config(backend), sort_keys=True))
        if self._session is None or self._session[0] != key:
            self.close_session()
            self._session = (key, open_predictor(backend, path), None)
        return self._session[1], self._session[2]

    def close_session(self) -> None:
        """Drop the open Predictor; its thread pool and memory go before anything else runs."""
        if self._session is not None:
            self._session = None
            gc.collect()

    def ran(self, runner: Runner, subject: Subject, p50_s: float) -> None:
        """Note a finished measurement: the open session is warm now (batch 1 timing known)."""
        if self._session is not None and subject.batch == 1 and runner.predictor is self._session[1]:
            self._session = (self._session[0], self._session[1], p50_s)

    def calibration(self, subject: Subject, path: Path) -> tuple[list, list]:
        """(input batches, onnxruntime FP32 outputs) of the calibration images for the export
        ``path``: ``calibration_count`` of them at the estimated inference time, computed once
        per export, untimed."""
        if path not in self._calibration:
            from bench.artifacts import calibration_count
            from export.calibration import input_batches

            count = calibration_count(self.estimate_s(subject, REFERENCE_BACKEND))
            reference, _ = self._open(REFERENCE_BACKEND, path)
            batches = input_batches(calibration_images(subject.size)[:count], reference.sidecar.preprocess)
            self._calibration[path] = (batches, [reference.backend.run(b) for b in batches])
        return self._calibration[path]

    def agreement(self, subject: Subject, runner: Runner) -> dict[str, Any]:
        """How ``runner``'s masks agree with onnxruntime FP32's on the calibration images
        (``runtime.agreement``: flipped share, IoU, max prob diff), at the sidecar's threshold."""
        from runtime.agreement import agreement

        batches, reference = self.calibration(subject, Path(runner.info["artifact"]))
        threshold = runner.predictor.threshold
        found = agreement(reference, [runner.run_batch(b) for b in batches], threshold=threshold)
        return {**found.to_dict(), "reference": REFERENCE_BACKEND, "threshold": threshold}

    def tuned(self, subject: Subject, path: Path) -> dict[str, Any]:
        """``runtime.tune``'s result for the export ``path`` (tuned now, in a child process, on
        the calibration images unless a current tune file is there); a failure is recorded once
        and skips this and every later test needing it."""
        if path not in self._tune_failures:
            try:
                self.close_session()  # the child times backends: nothing of ours holds memory or threads
                return cached_tune(path, calibration_folder(self.cache, subject.size),
                                   estimate=lambda: self.estimate_s(subject, REFERENCE_BACKEND))
            except TuneFailed as err:
                self._tune_failures[path] = str(err)
                self.record("tune_failure", artifact=str(path), reason=str(err))
        pytest.skip(self._tune_failures[path])

    def artifact(self, model: str, backend: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.model == model and a.backend == backend), None)

    def path_for(self, subject: Subject, backend: str) -> Path | None:
        """The artifact ``backend`` runs for ``subject`` (None for torch backends), or a pytest
        skip naming why the backend cannot run here."""
        reason = unavailable(backend)
        if reason:
            if backend in CORE_BACKENDS and not any(r["kind"] == "unavailable" and r["backend"] == backend
                                                    for r in self.records):  # a CPU backend: the report says why
                self.record("unavailable", backend=backend, reason=reason)
            pytest.skip(f"{backend}: {reason}")
        if backend in TORCH_BACKENDS:
            return None
        if backend in ONNX_BACKENDS:
            path = self.export(subject)
            if backend == "auto":
                self.tuned(subject, path)
            return path
        artifact = self.artifact(subject.model, backend)
        if artifact is None:
            pytest.skip(f"no {backend} artifact for {subject.model} in --artifacts")
        if artifact.size != subject.size:
            pytest.skip(f"{artifact.path} is for {artifact.size} x {artifact.size}, not {subject.size}")
        return artifact.path


STORE_KEY = pytest.StashKey[Store]()


def pytest_configure(config):
    if not hasattr(config.option, "models"):
        return
    models, subjects = Subject.measured(parse_models(config.option.models),
                                        parse_subjects(config.option.subjects, config.option.small),
                                        small=config.option.small)
    artifacts, problems = discover(config.option.artifacts, models)
    extra = sorted({a.backend for a in artifacts})
    allowed = list(CORE_BACKENDS) + list(GPU_BACKENDS) + extra
    backends = [b.strip() for b in config.option.backends.split(",") if b.strip()] or allowed
    bad = [b for b in backends if b not in allowed]
    if bad:
        raise pytest.UsageError(f"--backends: unknown {', '.join(bad)}; available: {', '.join(allowed)}")
    small = config.option.small
    sizes = _ints(config.option.sizes, "--sizes") if config.option.sizes else None
    if sizes is None:
        sizes = [64, 128] if small else [256, 384, 512, 768, 1024]
    plan = Plan(config.option.bench_time, config.option.min_rounds, config.option.max_rounds,
                slow_s=config.option.slow, slow_rounds=config.option.slow_rounds)
    try:
        plan.rounds(1.0)
    except ValueError as err:
        raise pytest.UsageError(f"--min-rounds/--max-rounds/--slow-rounds: {err}") from None
    if config.option.budget < 0:
        raise pytest.UsageError(f"--budget expects minutes >= 0, got {config.option.budget:g}")
    cache = Path(config.option.bench_cache)
    cache.mkdir(parents=True, exist_ok=True)
    use_inductor_cache(cache, _USER_INDUCTOR_CACHE)
    config.stash[STORE_KEY] = Store(models, backends, small, _ints(config.option.batches, "--batches"), sizes, plan,
                                    config.option.point_limit, cache, artifacts, problems, code_fingerprint(),
                                    subjects=subjects, budget_s=config.option.budget * 60 or None, exporter=config.option.exporter)


@pytest.fixture(scope="session")
def store(pytestconfig) -> Store:
    return pytestconfig.stash[STORE_KEY]


def pytest_generate_tests(metafunc):
    store = metafunc.config.stash.get(STORE_KEY, None)
    if store is None:
        return
    if "model" in metafunc.fixturenames:
        metafunc.parametrize("model", store.models)
    if "subject" in metafunc.fixturenames:
        metafunc.parametrize("subject", store.subjects, ids=[f"{s.label}-{s.size}" for s in store.subjects])
    if "profile_point" in metafunc.fixturenames:
        if store.small:
            points = [Subject.paper(m, small=True) for m in store.models]
        else:
            points = [Subject(m, s) for m, s in profile_points() if m in store.models]
        metafunc.parametrize("profile_point", points, ids=[f"{p.label}-{p.size}" for p in points])
    if "variant_subject" in metafunc.fixturenames:
        from train.models import get_spec

        subjects = [Subject.paper(m, small=store.small, variant=v) for m in store.models
                    for v in sorted(get_spec(m).variants)]
        metafunc.parametrize("variant_subject", subjects, ids=[s.label for s in subjects])
    if "sweep_batch" in metafunc.fixturenames:
        metafunc.parametrize("sweep_batch", store.batches)
    if "scaling_size" in metafunc.fixturenames:
        metafunc.parametrize("scaling_size", store.sizes)
    if "backend" in metafunc.fixturenames:
        wanted = getattr(metafunc.module, "BACKENDS", None)
        names = [b for b in store.backends if wanted is None or b in wanted or
                 (("artifacts" in wanted) and b not in CORE_BACKENDS + GPU_BACKENDS)]
        metafunc.parametrize("backend", names)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        stem = Path(str(item.fspath)).stem
        return SUITE_ORDER.index(stem) if stem in SUITE_ORDER else len(SUITE_ORDER)

    items.sort(key=rank)  # stable: keeps the parametrization order inside a suite


def pytest_report_header(config):
    store = config.stash.get(STORE_KEY, None)
    if store is None:
        return None
    budget = f"{store.budget_s / 60:g} min" if store.budget_s else "none"
    lines = [f"imlkit bench: subjects {', '.join(f'{s.label}@{s.size}' for s in store.subjects)}; backends {', '.join(store.backends)}; "
             f"small={store.small}; plan {store.plan}; budget {budget}; cache {store.cache}"]
    lines += [f"imlkit bench: skipped artifact {p}" for p in store.artifact_problems]
    return lines


def pytest_benchmark_update_json(config, benchmarks, output_json):
    store = config.stash.get(STORE_KEY, None)
    if store is None:
        return
    import numpy
    import onnxruntime
    import torch

    from importlib.metadata import version

    from bench.backends import openvino_installed

    from bench.peak import machine_peak

    # again at the end: a shared machine's GEMM rate drifts; the report keeps the higher
    for measured in (store._peak, store._peak_bf16):
        if measured is not None:
            store.record("peak", phase="end", **machine_peak(precision=measured.precision).__dict__)
    output_json["imlkit"] = {
        "schema": 1,
        "models": store.models, "subjects": [s.as_dict() for s in store.subjects], "backends": store.backends, "small": store.small,
        "plan": store.plan.__dict__, "point_limit": store.point_limit, "budget_s": store.budget_s,
        "wall_s": time.monotonic() - store.started,
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__,
                     **({"openvino": version("openvino")} if openvino_installed() else {})},
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "code": store.fingerprint,
        "artifact_problems": store.artifact_problems,
        "records": store.records,
    }

"""OpenVINO backend: run an ONNX artifact on the CPU with OpenVINO's CPU plugin, which reads
the ONNX file directly (no conversion step, no IR files written).

Precision is always set, never left to the plugin: on a CPU with BF16 the plugin's own
default inference precision is BF16, so ``precision="fp32"`` (the default) sends
``INFERENCE_PRECISION_HINT=f32`` and FP32 means FP32. ``"bf16"`` and ``"fp16"`` run the
FP32 file with the plugin's reduced-precision kernels (weights and activations rounded per
layer, accumulation as the plugin does it) and are refused in one line on a CPU whose plugin
does not list them in ``OPTIMIZATION_CAPABILITIES``. ``fp32_ranges`` keeps parts of a BF16 /
FP16 model in FP32: [start, end) ranges of its compute ops in topological order, each range
compiled as an FP32 model of its own and chained with the rest (``openvino_segments``, which
says why the plugin's own per-node attribute cannot do it); ``runtime.tune`` finds such a
split when plain BF16 misses the mask budget.

Threads: ``INFERENCE_NUM_THREADS`` = ``threads`` or the physical cores this process may use
(``runtime.machine.physical_cores``), one stream, the latency hint. CPU pinning is off: an
embedding app's own threads are not displaced from their cores. OpenVINO's CPU plugin (TBB
threading in the PyPI wheels) has no worker spin-wait setting; its idle workers go to sleep by
TBB's own rule, so ``settings["spin"]`` is None. ``perf_counts=True`` turns on the plugin's
per-layer counters (``profiling_info``; ``python -m bench.ops`` reads them).

openvino is imported when an ``OpenVinoBackend`` is created, not when this module is.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import BackendError, ModelError, RuntimeInputError, one_line
from ..machine import physical_cores
from .contract import CONTRACT, checked_outputs, run_batch

__all__ = ["OpenVinoBackend", "PRECISION_HINTS", "capabilities", "available", "shared_core"]

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "fp16": "FP16"}
NOT_INSTALLED = "openvino is not installed; install imlkit-runtime[openvino] (pip install openvino)"


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise BackendError(NOT_INSTALLED) from None
    return openvino


_CORE: Any = None
_CORE_LOCK = threading.Lock()


def shared_core() -> Any:
    """The process's one ``openvino.Core``, made on first use and kept until exit; every
    OpenVINO object the runtime makes comes from it.

    One Core per process, not one per backend: each Core makes its own CPU plugin, and the
    plugin's constructor gives the calling thread an alternate signal stack it maps itself,
    whose destructor unmaps that stack while putting back the previous one only when its own
    is still the thread's current stack (OpenVINO 2026.4, ``intel_cpu/src/sigstack_manager``).
    Two Cores freed in the order they were made leave the thread's signal stack pointing at
    unmapped memory, and the next signal that has a handler with ``SA_ONSTACK`` (every Python
    ``signal.signal`` handler, torch's SIGCHLD one among them) kills the process with SIGSEGV.
    ``tests/test_runtime_backends.py`` runs that sequence in a child process."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = _import_openvino().Core()
        return _CORE


def available() -> bool:
    """True where openvino is importable."""
    try:
        _import_openvino()
    except BackendError:
        return False
    return True


def capabilities() -> list[str]:
    """The CPU plugin's OPTIMIZATION_CAPABILITIES ("FP32", "BF16", "FP16", "INT8", ...)."""
    return [str(c) for c in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def supported_precisions() -> list[str]:
    """The precisions this machine's CPU plugin runs, in ``PRECISION_HINTS`` order."""
    caps = set(capabilities())
    return [p for p in PRECISION_HINTS if CAPABILITY[p] in caps]


class OpenVinoBackend:
    """A compiled OpenVINO CPU model over one ONNX file with the "prob"/"score" outputs."""

    name = "openvino"

    def __init__(self, path: str | os.PathLike, *, precision: str | None = None, threads: int | None = None,
                 fp32_ranges: Sequence[Sequence[int]] | None = None, perf_counts: bool = False):
        self.path = Path(path)
        precision = precision or "fp32"
        if precision not in PRECISION_HINTS:
            raise BackendError(f"precision {precision}: openvino runs {', '.join(PRECISION_HINTS)} only")
        if fp32_ranges and precision == "fp32":
            raise BackendError("fp32_ranges keep parts of a bf16 / fp16 model in FP32; precision fp32 runs all of it "
                               "in FP32 already")
        ov = _import_openvino()
        if not self.path.is_file():
            raise ModelError(f"model {self.path}: file not found")
        core = shared_core()
        caps = [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
        if CAPABILITY[precision] not in caps:
            raise BackendError(f"precision {precision}: this CPU's OpenVINO plugin cannot run it "
                               f"(its capabilities: {', '.join(caps)})")
        self._threads = threads or physical_cores()
        config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "INFERENCE_NUM_THREADS": self._threads,
                  "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        if perf_counts:
            if fp32_ranges:
                raise BackendError("perf_counts: the per-layer counters cover one compiled model; a split "
                                   "(fp32_ranges) runs several")
            config["PERF_COUNT"] = True
        self._perf_counts = perf_counts
        try:
            model = core.read_model(str(self.path))
        except Exception as e:  # openvino raises RuntimeError subclasses of its own
            raise ModelError(f"model {self.path}: openvino cannot read it ({one_line(e)})") from None
        if len(model.inputs) != 1:
            raise ModelError(f"model {self.path}: expected one input, found {len(model.inputs)}")
        names = [n for out in model.outputs for n in out.get_names()]
        missing = [n for n in CONTRACT if n not in names]
        if missing:
            raise ModelError(f"model {self.path}: missing output(s) {', '.join(missing)} "
                             f"(has {', '.join(names) or 'none'})")
        self._input_name = model.input(0).get_any_name()
        self._input_shape = tuple(d.get_length() if d.is_static else None
                                  for d in model.input(0).get_partial_shape())
        self._order = [next((n for n in CONTRACT if n in out.get_names()), None) for out in model.outputs]
        self.fp32_ranges: list[tuple[int, int]] | None = None
        self._n_ops: int | None = None
        try:
            if fp32_ranges:
                self._chain = self._segments(core, model, precision, fp32_ranges, config)
                compiled = self._chain
            else:
                self._chain = None
                self._compiled = core.compile_model(model, "CPU", config)
                self._request = self._compiled.create_infer_request()
                self._outputs = {n: self._compiled.output(n) for n in CONTRACT}
                compiled = self._compiled
        except BackendError:
            raise
        except Exception as e:
            raise ModelError(f"model {self.path}: openvino cannot compile it for the CPU ({one_line(e)})") from None
        self.precision = precision
        self._version = ov.__version__
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        self._hint = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self._threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))

    def _segments(self, core, model, precision: str, fp32_ranges, config):
        from .openvino_segments import SegmentChain, check_ranges, compute_ops, fold, partition, precision_runs

        self._n_ops = len(compute_ops(fold(model)))
        try:
            self.fp32_ranges = check_ranges(fp32_ranges, self._n_ops)
        except ValueError as e:
            raise BackendError(f"model {self.path}: {e}") from None
        segments, image = partition(model, precision_runs(self._n_ops, self.fp32_ranges, PRECISION_HINTS[precision]))
        return SegmentChain(core, segments, image, config)

    @property
    def input_name(self) -> str:
        return self._input_name

    @property
    def input_shape(self) -> tuple:
        """Input shape as the model declares it: ints, or None for dynamic dims."""
        return self._input_shape

    @property
    def providers(self) -> list[str]:
        return ["OpenVINO CPU"]

    @property
    def settings(self) -> dict[str, Any]:
        """The backend as compiled (read back from the compiled model: what a report states)."""
        out = {"backend": self.name, "precision": self.precision, "inference_precision": self._hint,
               "threads": self._threads, "spin": None, "pinning": False, "version": self._version}
        if self.fp32_ranges:
            out.update(fp32_ranges=[list(r) for r in self.fp32_ranges], compute_ops=self._n_ops,
                       segment_precisions=self._chain.hints)
        return out

    @property
    def fixed_batch(self) -> int | None:
        b = self._input_shape[0] if self._input_shape else None
        return b if isinstance(b, int) and b > 0 else None

    def profiling_info(self) -> list:
        """With ``perf_counts=True``: the plugin's per-layer counters of the last inference
        (``openvino.ProfilingInfo``: node name and type, kernel, status, real time)."""
        if not self._perf_counts:
            raise BackendError("profiling_info: create the backend with perf_counts=True")
        return list(self._request.profiling_info)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run a float32 (N, 3, H, W) batch; returns float32 "prob" (N,1,h,w) and "score" (N,1)."""
        return run_batch(self.path, batch, self.fixed_batch, self._run_once)

    def _run_once(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        try:
            if self._chain is not None:
                arrays = dict(zip(self._order, self._chain.infer(batch)))
                prob, score = arrays["prob"], arrays["score"]
            else:
                result = self._request.infer({0: batch})
                prob, score = np.array(result[self._outputs["prob"]]), np.array(result[self._outputs["score"]])
        except Exception as e:
            raise ModelError(f"model {self.path}: inference failed ({one_line(e)})") from None
        return checked_outputs(self.path, prob, score, batch.shape[0])

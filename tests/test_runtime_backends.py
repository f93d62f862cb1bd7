"""The runtime's backend choice: OpenVINO beside onnxruntime on the same ONNX file, explicit
precisions (FP32 means FP32 on a BF16-capable CPU), the refusals in one line, and the thread /
spinning settings each CPU backend runs with (read back from the sessions, not from our own
arguments)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from runtime import Predictor
from runtime.backends import open_backend, resolve
from runtime.errors import BackendError, RuntimeInputError
from runtime.machine import physical_cores

try:
    from small_exports import fresh_copy
    from test_runtime_fixtures import make_model, random_rgb, reference
except ImportError:  # tests/ used as a package
    from .small_exports import fresh_copy
    from .test_runtime_fixtures import make_model, random_rgb, reference

ov = pytest.importorskip("openvino", reason="openvino is not installed (imlkit-runtime[openvino])")
from runtime.backends import openvino_backend  # noqa: E402

HAS_BF16 = "bf16" in openvino_backend.supported_precisions()
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU's OpenVINO plugin has no BF16 (AVX-512 BF16 / AMX)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return fresh_copy("m2sformer", tmp_path_factory.mktemp("small"))


def test_openvino_reads_the_onnx_file_and_matches_the_numpy_reference(tiny):
    pred = Predictor(tiny, backend="openvino")
    assert pred.backend.name == "openvino" and pred.choice.source == "explicit"
    rgb = random_rgb(45, 61, seed=3)
    got = pred.predict(rgb)
    ref_prob, _, ref_score = reference(rgb)
    np.testing.assert_allclose(got.prob, ref_prob, atol=1e-5)
    assert abs(got.score - ref_score) < 1e-5


def test_fp32_is_fp32_even_where_the_plugin_would_pick_bf16(small):
    """OpenVINO's CPU plugin defaults to BF16 on BF16-capable CPUs; the backend's FP32 is FP32,
    as the compiled model reports, and agrees with onnxruntime to rounding."""
    fp32 = open_backend(small, backend="openvino")
    assert fp32.precision == "fp32" and fp32.settings["inference_precision"] == "f32"
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    ref = open_backend(small, backend="onnxruntime").run(x)
    got = fp32.run(x)
    assert np.abs(got["prob"] - ref["prob"]).max() < 1e-5
    assert np.abs(got["score"] - ref["score"]).max() < 1e-5


@needs_bf16
def test_bf16_runs_bf16_kernels(small):
    bf16 = open_backend(small, backend="openvino", precision="bf16")
    assert bf16.settings["inference_precision"] == "bf16"
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    ref = open_backend(small, backend="onnxruntime").run(x)["prob"]
    diff = np.abs(bf16.run(x)["prob"] - ref).max()
    assert 1e-6 < diff < 0.1  # rounded like BF16 (7-bit mantissa), not bit-equal to FP32


def test_auto_with_a_precision_picks_a_backend_that_runs_it(tiny):
    assert resolve(tiny, "auto", "bf16").backend == "openvino"
    assert resolve(tiny, "auto", "fp32").backend == "onnxruntime"
    assert resolve(tiny.with_suffix(".engine"), "auto").backend == "tensorrt"


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "onnxruntime", "precision": "bf16"}, "precision bf16: onnxruntime runs the arithmetic"),
    ({"backend": "openvino", "precision": "int8"}, "precision int8: openvino runs"),
    ({"backend": "tensorrt"}, "backend tensorrt runs TensorRT engines, not a .onnx file"),
    ({"backend": "openvino", "providers": ["CPUExecutionProvider"]}, "apply to onnxruntime, not to openvino"),
])
def test_a_backend_refuses_what_it_cannot_run_in_one_line(tiny, kwargs, message):
    with pytest.raises(BackendError) as info:
        Predictor(tiny, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, where", [({"backend": "cuda"}, "backend"), ({"precision": "fp64"}, "precision")])
def test_unknown_names_are_one_line_errors(tiny, kwargs, where):
    with pytest.raises(RuntimeInputError) as info:
        Predictor(tiny, **kwargs)
    assert str(info.value).startswith(f"{where}: must be one of")


def test_an_fp16_artifact_is_not_run_as_bf16(tiny, tmp_path):
    from dataclasses import replace

    from runtime.sidecar import Sidecar, sidecar_path

    side = Sidecar.load(sidecar_path(tiny))
    half = tmp_path / "half.onnx"
    half.write_bytes(tiny.read_bytes())
    replace(side, variant={"precision": "fp16"}).save(sidecar_path(half))
    with pytest.raises(BackendError, match="half.onnx is a fp16 artifact"):
        Predictor(half, backend="openvino", precision="bf16")
    with pytest.raises(BackendError, match="half.onnx is fp16"):
        Predictor(half, backend="onnxruntime", precision="fp32")
    assert Predictor(half, backend="onnxruntime").backend.precision == "fp16"


def test_threads_default_to_the_physical_cores_and_spinning_is_off(tiny):
    ort_b = open_backend(tiny, backend="onnxruntime")
    opts = ort_b._session.get_session_options()
    assert opts.intra_op_num_threads == physical_cores()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert ort_b.settings["spin"] is False and ort_b.settings["threads"] == physical_cores()
    spinning = open_backend(tiny, backend="onnxruntime", spin=True, threads=1)
    opts = spinning._session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert opts.intra_op_num_threads == 1 and spinning.settings["spin"] is True
    ov_b = open_backend(tiny, backend="openvino")
    assert ov_b.settings["threads"] == physical_cores()
    assert open_backend(tiny, backend="openvino", threads=1).settings["threads"] == 1


def test_the_cli_runs_openvino(tiny, tmp_path, capsys):
    from PIL import Image

    from runtime.predict import main

    img = tmp_path / "a.png"
    Image.fromarray(random_rgb(40, 40)).save(img)
    assert main([str(tiny), str(img), "--out", str(tmp_path / "out"), "--backend", "openvino", "--json"]) == 0
    assert (tmp_path / "out" / "a_mask.png").is_file()
    assert main([str(tiny), str(img), "--out", str(tmp_path / "o2"), "--backend", "onnxruntime",
                 "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: precision bf16: onnxruntime") and not (tmp_path / "o2").exists()


FREED_OLDEST_FIRST = """
import ctypes, signal, subprocess, sys
import numpy as np
from runtime.backends import open_backend


class Stack(ctypes.Structure):  # stack_t
    _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]


def signal_stack():
    st = Stack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(st)) == 0
    return "disabled" if st.flags & 2 else hex(st.sp)


signal.signal(signal.SIGCHLD, lambda *_: None)  # a Python handler: it runs on the signal stack
seen = []
backends = []
for _ in range(3):
    backends.append(open_backend(sys.argv[1], backend="openvino"))
    seen.append(signal_stack())
x = np.zeros([d or 1 for d in backends[0].input_shape], np.float32)
for b in backends:
    b.run(x)
del b
while backends:
    backends.pop(0)  # the first one made is the first one freed
    seen.append(signal_stack())
print(" ".join(seen), flush=True)
for _ in range(3):
    subprocess.run(["true"], check=True)  # each child's exit is a SIGCHLD to this process
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the thread's signal stack with Linux's sigaltstack")
def test_backends_freed_oldest_first_leave_the_signal_stack_alone(tiny, tmp_path):
    """OpenVINO's CPU plugin gives the calling thread a signal stack of its own per Core and
    unmaps it when freed, putting the previous one back only if its own is still current. With
    one Core per backend, three backends freed oldest-first left the main thread on the second
    one's stack, already unmapped (measured: the full test run then died of SIGSEGV at a later
    SIGCHLD, or ran on with the stack in memory reused by something else). With the runtime's
    one shared Core the stack is set once, by a plugin that lives as long as the process."""
    run = subprocess.run([sys.executable, "-c", FREED_OLDEST_FIRST, str(tiny)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    stacks, ok = run.stdout.splitlines()
    assert ok == "ok" and len(set(stacks.split())) == 1, stacks  # six readings, one stack


def test_profiling_hooks_of_both_backends(tiny, tmp_path):
    """onnxruntime's profiler and OpenVINO's per-layer counters (what bench.ops reads): each
    records the run it was asked to, and each refuses a combination it cannot honour."""
    import json

    from runtime.backends.ort_backend import OrtBackend

    x = np.zeros((1, 3, 32, 32), np.float32)
    backend = OrtBackend(tiny, ["CPUExecutionProvider"], profile_prefix=tmp_path / "p")
    backend.run(x)
    trace = json.loads(open(backend.end_profiling()).read())
    assert any(e.get("name") == "model_run" for e in trace)
    import onnxruntime

    with pytest.raises(RuntimeInputError, match="profile_prefix"):
        OrtBackend(tiny, session_options=onnxruntime.SessionOptions(), profile_prefix=tmp_path / "q")

    counted = openvino_backend.OpenVinoBackend(tiny, perf_counts=True)
    counted.run(x)
    layers = counted.profiling_info()
    assert layers and any(layer.real_time.total_seconds() > 0 for layer in layers)
    with pytest.raises(BackendError, match="perf_counts=True"):
        openvino_backend.OpenVinoBackend(tiny).profiling_info()
    with pytest.raises(BackendError, match="perf_counts"):
        openvino_backend.OpenVinoBackend(tiny, precision="bf16" if HAS_BF16 else "fp16", perf_counts=True,
                                         fp32_ranges=[(0, 1)])

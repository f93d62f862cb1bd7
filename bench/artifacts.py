"""The artifacts a benchmark run measures: ONNX exports made once per code version and kept
in a cache folder, and precision variants (FP16 / INT8 ONNX, TensorRT engines) found in a
folder the user names.

The run's own exports are made for onnxruntime (``--attention ort``: our attention layers as
its fused MultiHeadAttention, what a CPU deployment of the runtime ships; the explicit graph
of TransForensics' C2 branch at 512 would need ~19 GiB). An export is reused while its key
holds: model, options, attention mode, exporter (``export.exporters``), size, batch, opset and a
fingerprint of the sources of ``train``, ``export`` and ``runtime`` (any edit there
re-exports). Precision of an ONNX file is read from the graph itself (Q/DQ nodes: int8;
float16 initializers or casts to float16: fp16; else fp32), of an engine from its sidecar.

Calibration images (``calibration_images``: the project's synthetic forgeries at a model's
size, ``export.calibration``) are what both the run's mask agreement (``ov``, ``ov-bf16`` and
``auto`` against onnxruntime FP32) and ``runtime.tune`` check on: the tuner reads them as PNGs
from ``calibration_folder`` in the cache. ``cached_tune`` runs ``python -m runtime.tune`` on an
export in a child process unless a current tune file is beside it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
FINGERPRINT_PACKAGES = ("train", "export", "runtime")
DEFAULT_CACHE = ROOT / "bench-out" / "cache"
CALIBRATION_IMAGES = 4  # synthetic forgeries per model size for the mask agreement and the tuner
AGREEMENT_S = 20.0  # inference seconds one backend's mask check may take: slow models check fewer images
TUNE_TIMED_S = 20.0  # seconds of timed calls per tuning candidate: slow models get fewer rounds (3 to 10)


def use_inductor_cache(cache_dir: str | Path, user_choice: str | None) -> str:
    """Point torch.compile's inductor cache (``TORCHINDUCTOR_CACHE_DIR``, inherited by child
    processes) into the benchmark cache unless the user set it (``user_choice``, read before
    torch was imported); returns the folder in use."""
    folder = user_choice or str((Path(cache_dir) / "inductor").resolve())
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    return folder


def code_fingerprint(root: Path = ROOT, packages: tuple[str, ...] = FINGERPRINT_PACKAGES) -> str:
    """sha256 over the relative paths and contents of the packages' Python sources."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def artifact_stem(model: str, size: int, batch: int | str = 1, small: bool = False, variant: str | None = None,
                  exporter: str = "torchscript", attention: str = "ort") -> str:
    """The cached export's file name: one file per model build, exporter and attention form
    (switching between them keeps both exports); an import path names it as export.onnx does."""
    from train.models.external import file_stem

    parts = [file_stem(model)] + ([variant] if variant else []) + (["small"] if small else []) + [str(size), f"b{batch}"]
    parts += ([] if exporter == "torchscript" else [exporter]) + ([] if attention == "ort" else [attention])
    return "-".join(parts)


class ExportFailed(RuntimeError):
    """The export child failed; the message is one line."""


def _export_target(model: str, cache_dir: str | Path, size: int, batch: int | str, small: bool,
                   variant: str | None, options: dict[str, Any] | None, opset: int | None,
                   fingerprint: str | None, attention: str, exporter: str | None) -> tuple[Path, str, list[str]]:
    """(path, key, export command) of one cached export (``exporter`` None: export.onnx's default)."""
    from export.exporters import DEFAULT_EXPORTER, default_opset

    exporter = exporter or DEFAULT_EXPORTER
    opset = opset or default_opset(exporter)
    path = Path(cache_dir) / f"{artifact_stem(model, size, batch, small, variant, exporter, attention)}.onnx"
    key = json.dumps({"model": model, "size": size, "batch": batch, "small": small, "variant": variant,
                      "options": options or {}, "opset": opset, "attention": attention, "exporter": exporter,
                      "code": fingerprint or code_fingerprint()}, sort_keys=True, default=str)
    cmd = [sys.executable, "-m", "export.onnx", "--model", model, "--out", str(path), "--size", str(size),
           "--batch", str(batch), "--opset", str(opset), "--attention", attention, "--exporter", exporter]
    cmd += (["--small"] if small else []) + (["--variant", variant] if variant else [])
    for k, v in (options or {}).items():
        cmd += ["--set", f"{k}={v!r}"]
    return path, key, cmd


def _is_current(path: Path, key: str) -> bool:
    from runtime.sidecar import sidecar_path

    key_file = path.with_suffix(".key.json")
    return path.is_file() and sidecar_path(path).is_file() and key_file.is_file() and key_file.read_text() == key


def is_cached(model: str, cache_dir: str | Path, *, size: int, batch: int | str = 1, small: bool = False,
              variant: str | None = None, options: dict[str, Any] | None = None, opset: int | None = None,
              fingerprint: str | None = None, attention: str = "ort", exporter: str | None = None) -> bool:
    """Whether ``cached_export`` with these arguments would reuse a file (no export needed)."""
    path, key, _ = _export_target(model, cache_dir, size, batch, small, variant, options, opset, fingerprint,
                                  attention, exporter)
    return _is_current(path, key)


def cached_export(model: str, cache_dir: str | Path, *, size: int, batch: int | str = 1, small: bool = False,
                  variant: str | None = None, options: dict[str, Any] | None = None, opset: int | None = None,
                  fingerprint: str | None = None, timeout: float | None = 3600, attention: str = "ort",
                  exporter: str | None = None) -> Path:
    """The ONNX export of ``model`` in ``cache_dir``, made (and verified) by ``python -m
    export.onnx`` in a child process unless a file with the same key is there already. The
    child keeps the export's memory (tracing, the parity run) out of the benchmark process;
    a failure raises ExportFailed with the CLI's message."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    path, key, cmd = _export_target(model, cache_dir, size, batch, small, variant, options, opset, fingerprint,
                                    attention, exporter)
    if _is_current(path, key):
        return path
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ExportFailed(f"export of {model} at {size} timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}").splitlines()
        reason = lines[-1] if proc.returncode > 0 else f"killed by signal {-proc.returncode} (out of memory?)"
        raise ExportFailed(f"export of {model} at {size} failed: {reason}")
    key_file = path.with_suffix(".key.json")
    tmp = key_file.with_suffix(".tmp")
    tmp.write_text(key)
    os.replace(tmp, key_file)
    return path


def onnx_precision(path: str | Path) -> str:
    """"int8", "fp16" or "fp32", read from the graph (not from the file name)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    ops = {node.op_type for node in graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger"}:
        return "int8"
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer):
        return "fp16"
    for node in graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in node.attribute):
            return "fp16"
    return "fp32"


@dataclass(frozen=True)
class Artifact:
    path: Path
    model: str
    kind: str  # "onnx" | "tensorrt"
    precision: str
    size: int

    @property
    def backend(self) -> str:
        """The backend name this artifact is benchmarked under."""
        return f"ort-{self.precision}" if self.kind == "onnx" else f"tensorrt-{self.precision}"


def discover(folder: str | Path | None, models: list[str]) -> tuple[list[Artifact], list[str]]:
    """Artifacts in ``folder`` for ``models``: reduced-precision ONNX (``export.fp16``,
    ``export.quantize``) and TensorRT engines, each with its sidecar; FP32 ONNX files are
    left out (the FP32 path is the run's own export). Returns (artifacts, problems), each
    problem one line naming the file."""
    from runtime.errors import SidecarError
    from runtime.sidecar import Sidecar, TensorRTBuild, sidecar_path

    if folder is None:
        return [], []
    folder = Path(folder)
    if not folder.is_dir():
        return [], [f"{folder}: not a folder"]
    found, problems = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".onnx", ".engine", ".plan"):
            continue
        if not sidecar_path(path).is_file():
            problems.append(f"{path}: no sidecar {sidecar_path(path).name}")
            continue
        try:
            side = Sidecar.load(sidecar_path(path))
            if side.model not in models:
                continue
            if side.artifact.format == "onnx":
                precision = onnx_precision(path)
                if precision == "fp32":  # the FP32 ONNX is the run's own cached export
                    continue
            else:
                build = TensorRTBuild.of(side, sidecar_path(path))
                precision = build.precision if build else "fp32"
        except (SidecarError, OSError, ValueError) as err:
            problems.append(f"{path}: {str(err).splitlines()[0]}")
            continue
        found.append(Artifact(path, side.model, side.artifact.format, precision, int(side.preprocess.size[0])))
    return found, problems


def calibration_images(size: int, count: int = CALIBRATION_IMAGES):
    """The calibration images at ``size`` x ``size``: the first ``count`` synthetic forgeries
    of the project's generator (seed 0; ``export.calibration.synthetic_images``)."""
    from export.calibration import synthetic_images

    return synthetic_images(count, size=size)


def calibration_folder(cache_dir: str | Path, size: int, count: int = CALIBRATION_IMAGES) -> Path:
    """A folder of the calibration images as PNGs (lossless: the pixels ``calibration_images``
    holds), written once into ``cache_dir`` (atomically: complete or absent)."""
    from PIL import Image

    from runtime.atomic import atomic_folder

    folder = Path(cache_dir) / f"calibration-{size}px-{count}"
    if not folder.is_dir():
        with atomic_folder(folder) as tmp:
            for index, image in enumerate(calibration_images(size, count)):
                Image.fromarray(image.image).save(tmp / f"{index:02d}-{image.name}.png")
    return folder


class TuneFailed(RuntimeError):
    """``runtime.tune`` failed on an export; the message is one line."""


def calibration_count(seconds: float) -> int:
    """How many calibration images a mask check uses at ``seconds`` per inference: as many
    of ``CALIBRATION_IMAGES`` as fit ``AGREEMENT_S``, at least one."""
    return max(1, min(CALIBRATION_IMAGES, int(AGREEMENT_S / max(seconds, 1e-9))))


def tune_arguments(seconds: float | None) -> list[str]:
    """``runtime.tune`` options for a model of ``seconds`` per inference (None: unknown, the
    tuner's rounds): the images ``calibration_count`` allows, rounds filling ``TUNE_TIMED_S``
    (3 to 10), one warm-up call for a model slower than a second. At 20 s per inference the
    tuner's defaults (8 images, 2 + 10 calls) would take five minutes per candidate."""
    if seconds is None:
        return ["--n-images", str(CALIBRATION_IMAGES)]
    rounds = max(3, min(10, math.ceil(TUNE_TIMED_S / max(seconds, 1e-9))))
    return ["--n-images", str(calibration_count(seconds)), "--rounds", str(rounds),
            "--warmup", "1" if seconds > 1.0 else "2"]


def cached_tune(path: str | Path, images: str | Path, echo: bool = False,
                estimate: Callable[[], float] | None = None) -> dict[str, Any]:
    """``runtime.tune``'s result for the export ``path``: the current tune file beside it
    (``runtime.tune.load_tuned``: for this file's sha256 on this machine), else a fresh tune
    by ``python -m runtime.tune`` in a child process on the images in ``images`` (each
    candidate backend x precision timed in its own process there) at the tuner's mask budget
    (``runtime.tune.MAX_FLIP``), with ``tune_arguments`` for ``estimate()`` seconds per
    inference (called only when tuning). ``echo`` passes the child's output (its progress)
    through to stderr; a failure raises TuneFailed with the child's last line."""
    import codecs

    from runtime.tune import load_tuned

    path = Path(path)
    tuned, _ = load_tuned(path)
    if tuned is not None:
        return tuned
    cmd = [sys.executable, "-m", "runtime.tune", str(path), "--images", str(images),
           *tune_arguments(estimate() if estimate else None)]
    decoder, tail = codecs.getincrementaldecoder("utf-8")(errors="replace"), ""
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        while chunk := proc.stdout.read1(4096):
            text = decoder.decode(chunk)
            if echo:
                sys.stderr.write(text)
                sys.stderr.flush()
            tail = (tail + text)[-4000:]
    if proc.returncode != 0:
        lines = [line for line in tail.replace("\r", "\n").splitlines() if line.strip()]
        lines = lines or [f"exit code {proc.returncode}"]
        reason = lines[-1] if proc.returncode > 0 else f"killed by signal {-proc.returncode} (out of memory?)"
        raise TuneFailed(f"runtime.tune of {path} failed: {reason.strip()}")
    tuned, why = load_tuned(path)
    if tuned is None:
        raise TuneFailed(f"runtime.tune of {path} exited 0 but its result does not apply: {why}")
    return tuned

"""Small-configuration ONNX exports shared by the test modules (test_export, test_exporters,
test_precision, test_quantize): each registered model is exported once per test session and
exporter, into a temporary folder removed at exit."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from export.exporters import DEFAULT_EXPORTER
from export.onnx import export_model


@functools.lru_cache(maxsize=None)
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="imlkit-small-exports-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def small_export(name: str, exporter: str = DEFAULT_EXPORTER) -> Path:
    """The FP32 ONNX (with its sidecar) of ``name``'s small configuration by ``exporter``."""
    return _small_export(name, exporter)  # one cache key, whether the exporter is named or defaulted


@functools.lru_cache(maxsize=None)
def _small_export(name: str, exporter: str) -> Path:
    folder = _root() / exporter / name
    folder.mkdir(parents=True, exist_ok=True)
    return export_model(name, folder / f"{name}.onnx", small=True, exporter=exporter).onnx_path


def fresh_copy(name: str, dest: Path, exporter: str = DEFAULT_EXPORTER) -> Path:
    """A copy of the small export and its sidecar in ``dest`` (tests write beside it)."""
    src = small_export(name, exporter)
    for path in (src, src.with_name(src.name + ".json")):
        shutil.copy(path, dest / path.name)
    return dest / src.name

"""Write-then-rename for everything training writes (checkpoints, logs, plots, datasets):
a reader or a killed run never leaves a half-written file or folder behind.

``atomic_path(target)`` yields a temporary path beside ``target`` (same filesystem) for
the caller to write a file, or create a folder, at; on success it is renamed onto
``target`` (``os.replace``; a folder target must not exist yet), on error it is removed.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # the caller creates it (a file or a folder)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(target: str | os.PathLike, text: str) -> Path:
    """Atomically replace ``target`` with ``text`` (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def _finite(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def write_json(target: str | os.PathLike, data: Any) -> Path:
    """Atomically write ``data`` as strict JSON (NaN and infinities become null)."""
    return write_text(target, json.dumps(_finite(data), indent=1, default=str) + "\n")

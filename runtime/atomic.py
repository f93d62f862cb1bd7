"""Atomic file writes: write to a temporary file in the target directory, then rename.

A reader (or a crashed writer) never sees a half-written sidecar, mask or overlay:
the target path either keeps its old content or gets the complete new content.

Temporary files and folders are created with the mode any program's new file gets
(0o666, folders 0o777, less the process umask), not with ``tempfile``'s private 0o600 /
0o700, which would survive the rename: under umask 022 what we write is 0644 (folders
0755), readable by a web server, a Triton container or another user; under 077 it stays
private. ``mkstemp`` / ``mkdtemp`` here are drop-in replacements for the ``tempfile``
functions of the same names for every writer of the kit (export, bench).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, IO, Iterator, Sequence

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_folder", "atomic_files", "mkstemp", "mkdtemp",
           "umask"]

_ATTEMPTS = 100


def _candidates(dir: str | os.PathLike, prefix: str, suffix: str) -> Iterator[str]:
    for _ in range(_ATTEMPTS):
        yield os.path.join(os.fspath(dir), f"{prefix}{secrets.token_hex(6)}{suffix}")
    raise FileExistsError(f"{dir}: no free temporary name with prefix {prefix!r} after {_ATTEMPTS} tries")


def mkstemp(dir: str | os.PathLike, prefix: str = "", suffix: str = "") -> tuple[int, str]:
    """Create a new, empty file in ``dir`` (``O_EXCL``: never an existing one) with mode
    0o666 less the umask; returns ``(fd, path)`` like ``tempfile.mkstemp``."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for name in _candidates(dir, prefix, suffix):
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise AssertionError("unreachable")  # pragma: no cover - _candidates raises


def mkdtemp(dir: str | os.PathLike, prefix: str = "", suffix: str = "") -> str:
    """Create a new, empty folder in ``dir`` with mode 0o777 less the umask; returns its path."""
    for name in _candidates(dir, prefix, suffix):
        try:
            os.mkdir(name, 0o777)
            return name
        except FileExistsError:
            continue
    raise AssertionError("unreachable")  # pragma: no cover - _candidates raises


def umask() -> int:
    """The process umask, e.g. 0o022 (for a mode that is set explicitly, like an executable
    script's ``0o777 & ~umask()``). Read from /proc where Linux shows it, else set and
    restored at once (``os.umask`` has no read-only form)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(fileobj)`` on a temp file next to ``path`` and move it into place.

    The temp file lives in the same directory (so ``os.replace`` is a rename on
    one filesystem) and is removed if ``write`` raises.
    """
    path = Path(path)
    fd, tmp = mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``."""
    return atomic_write(path, lambda fh: fh.write(data))


@contextlib.contextmanager
def atomic_files(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Yield one temp path beside each of ``paths`` to write; when the block succeeds all
    are renamed into place (the first path last), when it raises all are removed: the
    files appear together or not at all (e.g. an image's mask and overlay)."""
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for target in targets:
            fd, tmp = mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            os.close(fd)
            temps.append(Path(tmp))
        yield list(temps)
        for tmp in temps:
            _fsync(tmp)
        for tmp, target in reversed(list(zip(temps, targets))):
            os.replace(tmp, target)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp folder beside ``path`` to fill; on success it replaces ``path``
    (an existing folder is moved aside first and removed after the swap), on error it is
    removed and ``path`` keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

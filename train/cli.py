"""How the kit's command-line tools (``python -m train``, ``train.*``, ``export.*``,
``bench.*``) take arguments and end: every failure is one line ``error: ...`` on stderr
and a non-zero exit status, never a traceback.

- ``ArgumentParser``: argparse whose usage errors are one line (exit 2) instead of the
  usage block plus the message;
- ``one_line_errors(*types)``: wraps a ``main(argv) -> int``; an error of the listed types
  becomes ``error: <its first line>`` (exit 1), Ctrl-C becomes ``error: interrupted``
  (exit 130, the shell's code for SIGINT; ``interrupts_in_one_line`` covers the imports
  before ``main`` runs). Our writers stage files beside their target and
  rename them into place, so neither leaves a half-written file behind;
- argument checks shared by the tools: ``positive_int`` (argparse type), ``output_file``
  and ``output_folder`` (a path we may create, checked before any long work starts).

The runtime (``runtime.predict``) has its own, torch-free equivalent (``runtime.errors``).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

INTERRUPTED = 130  # 128 + SIGINT


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``error: MESSAGE (see PROG --help)``, exit 2."""

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        self.exit(2, f"error: {' '.join(message.split())} (see {self.prog} --help)\n")


def error_line(err: BaseException) -> str:
    """The one-line message of ``err``; for an error re-raised from a DataLoader worker
    (whose message carries the worker's traceback) the original error's message."""
    text = str(err).strip()
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]  # KeyError's str() is the repr of its argument
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        _, sep, message = last.partition(": ")
        return message if sep else last
    return text.splitlines()[0] if text else type(err).__name__


def _close_progress_bars() -> None:
    """End the progress bars an error left open, so the error line starts a line of its own."""
    module = sys.modules.get("tqdm")
    bars = getattr(getattr(module, "tqdm", None), "_instances", None)  # tqdm's registry of live bars
    for bar in list(bars or ()):
        try:
            bar.close()
        except Exception:  # a bar half torn down by the error itself
            pass


def one_line_errors(*errors: type[BaseException]) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorator for ``main(argv=None) -> int``: the ``errors`` it raises print one line and
    return 1; KeyboardInterrupt prints ``error: interrupted`` and returns 130."""
    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            try:
                return main(argv)
            except KeyboardInterrupt:
                _close_progress_bars()
                print("error: interrupted", file=sys.stderr)
                return INTERRUPTED
            except errors as err:
                _close_progress_bars()
                print(f"error: {error_line(err)}", file=sys.stderr)
                return 1
        return run
    return wrap


def interrupts_in_one_line(module_name: str) -> None:
    """Call at the top of a CLI module, before its heavy imports, with ``__name__``: when it
    runs as ``__main__``, a Ctrl-C that reaches the top level (during those imports, before
    ``one_line_errors`` is entered) also prints one line and exits 130."""
    if module_name != "__main__":
        return
    previous = sys.excepthook

    def hook(kind, value, tb) -> None:
        if issubclass(kind, KeyboardInterrupt):
            print("error: interrupted", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(INTERRUPTED)
        previous(kind, value, tb)

    sys.excepthook = hook


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _existing_ancestor(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(".")


def _check_creatable(folder: Path, flag: str, given: Path) -> None:
    """``folder`` exists or can be made: its nearest existing ancestor is a folder we can
    create files in (tried, not guessed: root ignores permission bits)."""
    anchor = _existing_ancestor(folder)
    if not anchor.is_dir():
        raise ValueError(f"{flag} {given}: {anchor} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=anchor):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {given}: cannot write in {anchor} ({err.strerror or type(err).__name__})") from None


def output_file(path: str | os.PathLike, flag: str = "--out", suffix: str | None = None) -> Path:
    """Check an output file path before the work: not a folder, ``suffix`` (e.g. ".onnx")
    if given, and its folder creatable and writable. Raises ValueError (one line)."""
    path = Path(path)
    if path.is_dir() or str(path).endswith(os.sep):
        raise ValueError(f"{flag} {path}: is a folder; give a file path"
                         + (f" ending in {suffix}" if suffix else ""))
    if suffix and path.suffix.lower() != suffix:
        raise ValueError(f"{flag} {path}: must end in {suffix}")
    _check_creatable(path.parent, flag, path)
    return path


def output_folder(path: str | os.PathLike, flag: str = "--out", new: bool = False) -> Path:
    """Check an output folder before the work: not a file (nor inside one), creatable and
    writable; with ``new`` it must not exist yet. Raises ValueError (one line)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: is a file, not a folder")
    if new and path.exists():
        raise ValueError(f"{flag} {path}: already exists; choose a new output folder")
    _check_creatable(path, flag, path)
    return path

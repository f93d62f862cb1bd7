"""Progress of a batch command on stderr: a tqdm bar where tqdm is installed, else a plain
``k/n`` count; either only when stderr is a terminal and there are at least two items.

tqdm is optional for the runtime (it is not among ``imlkit-runtime``'s dependencies), so an
app that embeds the runtime pulls in nothing for a progress bar it does not show.
"""

from __future__ import annotations

import sys
from typing import IO, Iterable, Iterator, TypeVar

__all__ = ["Progress"]

T = TypeVar("T")


class Progress:
    """Iterate ``items`` while showing progress; ``write`` prints a result line on stdout
    without tearing the bar; ``close`` removes the bar (also on an error)."""

    def __init__(self, items: Iterable[T], total: int, desc: str, unit: str = "img",
                 stream: IO[str] | None = None):
        self._items = items
        self._total = total
        self._desc = desc
        self._stream = stream if stream is not None else sys.stderr
        self._shown = total >= 2 and _isatty(self._stream)
        self._bar = None
        self._count = 0
        if self._shown:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=desc, unit=unit, file=self._stream, leave=False)

    def __iter__(self) -> Iterator[T]:
        for item in self._items:
            yield item
            self._count += 1
            if self._bar is not None:
                self._bar.update(1)
            elif self._shown:
                self._stream.write(f"\r{self._desc}: {self._count}/{self._total}")
                self._stream.flush()

    def write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
            return
        if self._shown:
            self._stream.write("\r\033[K")
        print(line, flush=True)
        if self._shown and self._count:
            self._stream.write(f"\r{self._desc}: {self._count}/{self._total}")
            self._stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()
        self._shown = False


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

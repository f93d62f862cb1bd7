"""Error types raised by the inference runtime.

Every error the runtime raises on purpose derives from RuntimeInputError, so a
caller (the CLI, a server) can catch one class and show its one-line message.
"""

from __future__ import annotations

__all__ = [
    "one_line",
    "RuntimeInputError",
    "ImageError",
    "SidecarError",
    "ModelError",
    "BackendError",
]


class RuntimeInputError(ValueError):
    """Base class: something handed to the runtime cannot be used."""


class ImageError(RuntimeInputError):
    """An input image is missing, unreadable, truncated or unsupported."""


class SidecarError(RuntimeInputError):
    """A model sidecar JSON is missing, malformed or of an unsupported version."""


class ModelError(RuntimeInputError):
    """A model artifact is missing, not loadable, or does not match its sidecar."""


class BackendError(RuntimeInputError):
    """No inference backend can run the artifact in this build."""


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (whitespace collapsed, at most ``limit`` chars),
    or its type name when it has none: what goes inside our one-line errors."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

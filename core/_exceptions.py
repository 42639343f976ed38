"""The exceptions recursa raises, as one tree under ``RecursaError`` so a caller can catch them all at once.

    RecursaError
    ├── ContextError          the context could not be loaded (missing path, empty, all binary)
    │   ├── PathNotAllowedError  a path leads outside the allowed roots (through ``..`` or a symlink)
    │   └── ContextTooLargeError the files named are over the size or file-count limits
    ├── LMError               a language-model call failed
    │   ├── LMTimeoutError    the endpoint did not answer in time (after retries)
    │   ├── LMConnectionError the endpoint could not be reached (after retries)
    │   ├── ModelNotFoundError the endpoint does not serve the requested model
    │   └── LMResponseError   the endpoint answered with something that is not a usable completion
    ├── SandboxError          the REPL worker could not be started or talked to
    ├── ModelInstallError     the embedded local model could not be assembled or verified
    └── TraceFormatError      a file read as a trace (``read_trace``, ``recursa view``) holds no trace events

A budget running out is not an exception: the run ends with ``Result.stopped_reason`` naming it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ContextError",
    "ContextTooLargeError",
    "LMConnectionError",
    "LMError",
    "LMResponseError",
    "LMTimeoutError",
    "ModelInstallError",
    "ModelNotFoundError",
    "PathNotAllowedError",
    "RecursaError",
    "SandboxError",
    "TraceFormatError",
]


class RecursaError(Exception):
    """Base class of every error recursa raises on purpose."""

    result: Any = None
    """When the error ended a run: that run's partial ``recursa.Result`` (``stopped_reason="error"``, the trace so
    far); None otherwise. (Typed ``Any``: the exceptions sit below the loop, which defines ``Result``.)"""


class ContextError(RecursaError):
    """The context could not be loaded."""


class PathNotAllowedError(ContextError):
    """A path leads outside the allowed roots, through ``..`` or a symlink; nothing of it was read."""

    def __init__(self, message: str, *, path: str, resolved: str) -> None:
        super().__init__(message)
        self.path = path
        self.resolved = resolved


class ContextTooLargeError(ContextError):
    """The files named are over a size or file-count limit; nothing was read."""

    def __init__(self, message: str, *, biggest: list[tuple[str, int]], limit: int) -> None:
        super().__init__(message)
        self.biggest = biggest
        """The largest files, ``(name, bytes)``, biggest first."""
        self.limit = limit


class LMError(RecursaError):
    """A language-model call failed."""

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class LMTimeoutError(LMError):
    """The endpoint did not answer in time, even after retries."""


class LMConnectionError(LMError):
    """The endpoint could not be reached, even after retries."""


class ModelNotFoundError(LMError):
    """The endpoint does not serve the requested model."""


class LMResponseError(LMError):
    """The endpoint answered with something that is not a usable completion."""


class SandboxError(RecursaError):
    """The REPL worker could not be started or talked to."""


class ModelInstallError(RecursaError):
    """The embedded local model could not be assembled or verified."""


class TraceFormatError(RecursaError, ValueError):
    """The file is not a recursa JSONL trace: not one of its lines is an event."""

"""Turning what the user hands us (a string, bytes, paths, globs, stdin) into the REPL's ``context``.

Which files a path may bring in is decided in one place, ``recursa._files`` (roots, symlinks, ignore
files, size limits); this module only shapes texts into a ``Context``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._exceptions import ContextError

if TYPE_CHECKING:
    from ._files import LoadLimits, Manifest

__all__ = ["Context", "ContextSource", "load_context"]

ContextSource = "str | bytes | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Context"

_SNIFF_BYTES = 8192


@dataclass
class Context:
    """The documents a run reasons over; the REPL sees them as ``context``.

    One document becomes ``context: str``; several become ``context: list[str]`` with their names in
    ``context_names`` and their metadata in ``context_metadata``.
    """

    documents: list[str]
    names: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    as_list: bool = False
    """Show the REPL a list even when there is a single document (it came from a directory or list)."""
    manifest: Manifest | None = None
    """For a context read from files: what was loaded, what was left out and why (``recursa._files``)."""

    def __post_init__(self) -> None:
        if not self.names:
            self.names = [f"doc{i}" for i in range(len(self.documents))]
        if not self.metadata:
            self.metadata = [{} for _ in self.documents]
        if len(self.documents) > 1:
            self.as_list = True

    @property
    def skipped(self) -> list[str]:
        """Files and directories left out, each as ``"name (why)"``."""
        return [str(s) for s in self.manifest.skipped] if self.manifest is not None else []

    @property
    def total_chars(self) -> int:
        return sum(len(d) for d in self.documents)

    @property
    def value(self) -> str | list[str]:
        """What ``context`` is inside the REPL."""
        return list(self.documents) if self.as_list else self.documents[0]

    def describe(self, preview_chars: int = 500) -> dict[str, Any]:
        """Metadata about the context, never its text beyond a preview: the root model is shown parts of it,
        and ``RunStarted`` carries all of it (the file manifest included) into the trace."""
        lengths = [len(d) for d in self.documents]
        first = self.documents[0] if self.documents else ""
        info: dict[str, Any] = {
            "type": "list[str]" if self.as_list else "str",
            "total_chars": sum(lengths),
            "documents": len(lengths),
            "preview": first[:preview_chars],
        }
        if self.as_list:
            info["lengths"] = lengths
            info["names"] = self.names
        if self.manifest is not None:
            info["manifest"] = self.manifest.to_dict()
        return info


def load_context(
    source: Any,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Context:
    """Load a context from a string, bytes, a ``Context``, a path (file, directory or glob) or a list of
    those. Plain strings are text, never paths: wrap a path in ``Path``.

    Paths go through ``recursa._files.load_files``: ignore files and the default skips apply, binary
    and undecodable files are left out, and ``Context.manifest`` says what was read and skipped. A
    missing path or a context with no text raises ``ContextError``.
    """
    from ._files import load_files

    if isinstance(source, Context):
        ctx = source
    elif isinstance(source, str):
        ctx = Context([source])
    elif isinstance(source, bytes | bytearray | memoryview):
        ctx = Context([_decode_bytes(bytes(source), "<bytes>")])
    elif isinstance(source, os.PathLike):
        ctx = load_files([source], include=include, exclude=exclude)
    elif isinstance(source, Iterable):
        items = list(source)
        if items and all(isinstance(i, os.PathLike) for i in items):
            ctx = load_files(items, include=include, exclude=exclude)
        elif all(isinstance(i, str) for i in items):
            ctx = Context(list(items), as_list=True)
        else:
            raise ContextError("A context list must hold only strings (texts) or only paths (pathlib.Path).")
    else:
        raise ContextError(f"Cannot use a {type(source).__name__} as a context; pass str, bytes, Path or a list.")
    if not ctx.documents or ctx.total_chars == 0:
        hint = f" ({ctx.manifest.skipped_text()})" if ctx.manifest is not None and ctx.manifest.skipped else ""
        raise ContextError(f"The context is empty{hint}: give recursa some text to reason over.")
    return ctx


def load_paths(
    specs: Sequence[str], *, include: Sequence[str] = (), exclude: Sequence[str] = (), limits: LoadLimits | None = None
) -> Context:
    """Load the CLI's ``--context`` arguments: files, directories, globs, or ``-`` for stdin."""
    from ._files import load_files

    files = [s for s in specs if s != "-"]
    ctx = load_files(files, include=include, exclude=exclude, limits=limits) if files else Context([])
    if "-" in specs:
        text = _decode_bytes(sys.stdin.buffer.read(), "<stdin>")
        ctx = Context([text, *ctx.documents], ["<stdin>", *ctx.names], [{"source": "stdin"}, *ctx.metadata],
                      as_list=ctx.as_list or bool(ctx.documents), manifest=ctx.manifest)
    return load_context(ctx)


def _decode_bytes(data: bytes, label: str) -> str:
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise ContextError(f"The context {label} looks binary (it has NUL bytes); pass text.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContextError(f"The context {label} is not valid UTF-8 (byte {exc.start}); pass text.") from None

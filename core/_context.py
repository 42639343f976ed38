"""Turning what the user hands us (a string, bytes, paths, globs, stdin) into the REPL's ``context``.

Which files a path may bring in is decided in one place, ``recursa._files`` (roots, symlinks, ignore
files, size limits); this module only shapes texts into a ``Context``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._exceptions import ContextError

if TYPE_CHECKING:
    from ._files import FileText, LoadLimits, Manifest

__all__ = ["Context", "ContextSource", "load_context"]

ContextSource = "str | bytes | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Context"

_SNIFF_BYTES = 8192


class Context:
    """The documents a run reasons over; the REPL sees them as ``context``.

    One document becomes ``context: str``; several become ``context: list[str]`` with their names in
    ``context_names`` and their metadata in ``context_metadata``.

    A large file loaded from a path is checked (UTF-8, not binary, its length) but not kept in memory: the
    REPL worker gets it by a file-to-file copy, so the host never holds a 4 GB context. ``documents`` still
    returns every text; for such a file, asking for it reads it then.
    """

    def __init__(
        self,
        documents: Sequence[str | FileText] = (),
        names: Sequence[str] | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
        as_list: bool = False,
        manifest: Manifest | None = None,
    ) -> None:
        self.parts: list[str | FileText] = list(documents)
        """The documents as given: texts, and files checked but not read (``recursa._files.FileText``)."""
        self.names: list[str] = list(names) if names else [f"doc{i}" for i in range(len(self.parts))]
        self.metadata: list[dict[str, Any]] = list(metadata) if metadata else [{} for _ in self.parts]
        self.as_list = as_list or len(self.parts) > 1
        """Show the REPL a list even when there is a single document (it came from a directory or list)."""
        self.manifest = manifest
        """For a context read from files: what was loaded, what was left out and why (``recursa._files``)."""

    def __repr__(self) -> str:
        return f"Context({len(self.parts)} document(s), {self.total_chars:,} characters, as_list={self.as_list})"

    @property
    def documents(self) -> list[str]:
        """Every document's text (files that were only checked are read now, and kept)."""
        if any(not isinstance(part, str) for part in self.parts):
            self.parts = [part if isinstance(part, str) else part.read() for part in self.parts]
        return self.parts  # type: ignore[return-value]

    @property
    def skipped(self) -> list[str]:
        """Files and directories left out, each as ``"name (why)"``."""
        return [str(s) for s in self.manifest.skipped] if self.manifest is not None else []

    @property
    def lengths(self) -> list[int]:
        """Characters in each document, without reading files that were only checked."""
        return [len(part) if isinstance(part, str) else part.chars for part in self.parts]

    @property
    def total_chars(self) -> int:
        return sum(self.lengths)

    @property
    def value(self) -> str | list[str]:
        """What ``context`` is inside the REPL."""
        return list(self.documents) if self.as_list else self.documents[0]

    def describe(self, preview_chars: int = 500) -> dict[str, Any]:
        """Metadata about the context, never its text beyond a preview: the root model is shown parts of it,
        and ``RunStarted`` carries all of it (the file manifest included) into the trace."""
        lengths = self.lengths
        first = self.parts[0] if self.parts else ""
        info: dict[str, Any] = {
            "type": "list[str]" if self.as_list else "str",
            "total_chars": sum(lengths),
            "documents": len(lengths),
            "preview": first[:preview_chars] if isinstance(first, str) else first.head(preview_chars),
        }
        if self.as_list:
            info["lengths"] = lengths
            info["names"] = self.names
        if self.manifest is not None:
            info["manifest"] = self.manifest.to_dict()
        return info

    def write_utf8(self, path: str) -> list[tuple[int, int]]:
        """Write every document, UTF-8, one after another, into a new private file; return each one's byte span.

        Texts are encoded a slice at a time and checked files copied file to file by the kernel, so writing
        a context never needs a second copy of it in memory.
        """
        spans = []
        pos = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as out:
            for part in self.parts:
                start = pos
                if isinstance(part, str):
                    for i in range(0, len(part), _ENCODE_CHARS):
                        pos += out.write(part[i : i + _ENCODE_CHARS].encode("utf-8", "surrogatepass"))
                else:
                    out.flush()
                    pos += part.copy_to(out.fileno())
                    out.seek(pos)
                spans.append((start, pos))
        return spans


_ENCODE_CHARS = 1 << 24


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
    if not ctx.parts or ctx.total_chars == 0:
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
        ctx = Context([text, *ctx.parts], ["<stdin>", *ctx.names], [{"source": "stdin"}, *ctx.metadata],
                      as_list=ctx.as_list or bool(ctx.parts), manifest=ctx.manifest)
    return load_context(ctx)


def _decode_bytes(data: bytes, label: str) -> str:
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise ContextError(f"The context {label} looks binary (it has NUL bytes); pass text.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContextError(f"The context {label} is not valid UTF-8 (byte {exc.start}); pass text.") from None

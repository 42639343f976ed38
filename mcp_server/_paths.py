"""What the MCP tools may read: the core loader (``recursa._files``) with the server's limits on top.

Which paths are allowed (roots, ``..`` and symlinks resolved before a byte is read), which files a
directory brings in (ignore files, virtualenvs, caches) and how big a load may be are decided by the
same code as ``recursa ask --context``; this module only adds what is MCP's own: the inline ``text``
argument and its size cap.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from recursa import Context, ContextError
from recursa._files import AllowedRoots, LoadLimits, load_files

__all__ = ["AllowedRoots", "Limits", "PathError", "gather_context", "server_roots"]

PathError = ContextError
"""What a refused request raises: ``ContextError``, or its ``PathNotAllowedError`` and ``ContextTooLargeError``."""

ROOT_HINT = "restart the server with --root for that directory to allow it"


@dataclass(frozen=True)
class Limits:
    """How much a single tool call may load."""

    max_inline_chars: int = 200_000
    """Longest ``text`` argument accepted; bigger contexts must be passed as paths."""
    max_files: int = 10_000
    """Most files one call may load."""
    max_bytes: int = 512 * 2**20
    """Most bytes one call may load (before decoding)."""
    max_file_bytes: int = 128 * 2**20
    """Largest single file one call may load."""

    def loading(self) -> LoadLimits:
        return LoadLimits(max_file_bytes=self.max_file_bytes, max_total_bytes=self.max_bytes, max_files=self.max_files)


def server_roots(roots: Iterable[str | os.PathLike[str]]) -> AllowedRoots:
    """The server's allowed roots, whose refusals tell the user how to allow more."""
    return AllowedRoots(roots, hint=ROOT_HINT)


def gather_context(
    roots: AllowedRoots,
    *,
    paths: Sequence[str] = (),
    glob: str | None = None,
    text: str | None = None,
    limits: Limits = Limits(),  # noqa: B008 - frozen dataclass
) -> Context:
    """Build the run's context from paths (files or directories under the roots), a glob and inline text.

    ``glob`` filters the files found in directories (``"**/*.py"``, ``"*.log"``); with no ``paths``
    it searches every allowed root. Raises ``ContextError`` with a message meant for the end user.
    """
    if text is not None and len(text) > limits.max_inline_chars:
        raise ContextError(
            f"The inline text is {len(text):,} characters, over the {limits.max_inline_chars:,}-character limit "
            "for text sent in a tool call; save it to a file under an allowed root and pass its path instead."
        )
    if not paths and not glob and not text:
        raise ContextError("Nothing to read: pass paths (files or directories), a glob, or text.")
    specs = list(paths) or ([str(p) for p in roots.paths] if glob else [])
    ctx = Context([])
    if specs:
        ctx = load_files(specs, roots=roots, include=[glob] if glob else (), limits=limits.loading())
    docs, names, metadata = list(ctx.documents), list(ctx.names), list(ctx.metadata)
    if text:
        docs.append(text)
        names.append("<text>")
        metadata.append({"source": "inline"})
    if not docs:
        detail = f" ({ctx.manifest.skipped_text()})" if ctx.manifest is not None and ctx.manifest.skipped else ""
        raise ContextError(f"No text to read: no file matched{detail}.")
    return Context(docs, names, metadata, as_list=ctx.as_list or len(docs) > 1, manifest=ctx.manifest)

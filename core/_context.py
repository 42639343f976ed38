"""What a context is: the documents a run reasons over (``Context``), a large file left on disk in place of its
text (``FileText``), and the record of what a load read and left out, and why (``Manifest``).

Which files a path may bring in, and turning strings, bytes, paths or stdin into a ``Context``, is the loader's
job (``recursa._files``: ``load_files``, ``load_context``); this module builds on nothing of it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._exceptions import ContextError

__all__ = ["REASONS", "Context", "ContextSource", "FileText", "LoadedFile", "Manifest", "Skipped"]

ContextSource = "str | bytes | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Context"

CHUNK = 2**20
"""Bytes read or copied at a time when a file is checked or copied without holding it whole."""
O_SAFE = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
"""How a context file is opened: read only, never through a symlink, never blocking on a FIFO."""

REASONS: dict[str, str] = {
    "vcs": "version control",
    "virtualenv": "virtualenv",
    "build": "build output",
    "cache": "cache",
    "dependencies": "node_modules",
    "ignored": "ignored by .gitignore/.ignore",
    "secret": "looks like secrets (.env, keys)",
    "excluded": "excluded by a glob",
    "not_included": "not matched by the include globs",
    "outside": "symlink out of the allowed directories",
    "symlinked_dir": "symlinked directory, not followed",
    "special": "not a regular file",
    "binary": "binary",
    "not_utf8": "not UTF-8",
    "unreadable": "unreadable",
}
"""Why a file or directory was left out: the key recorded in ``Skipped.reason``, and its wording."""


@dataclass(frozen=True)
class Skipped:
    """A file or directory (its name ends with ``/``) that was left out."""

    name: str
    reason: str
    """A key of ``REASONS``."""

    @property
    def why(self) -> str:
        return REASONS.get(self.reason, self.reason)

    def __str__(self) -> str:
        return f"{self.name} ({self.why})"


@dataclass(frozen=True)
class LoadedFile:
    """A file that became a document."""

    name: str
    path: str
    """Its resolved location."""
    bytes: int
    chars: int


@dataclass
class Manifest:
    """What a load read, what it left out and why: the record behind the CLI summary, the trace and MCP."""

    roots: list[str] = field(default_factory=list)
    """The directories reading was confined to (the allowed roots, or the directories named)."""
    files: list[LoadedFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def chars(self) -> int:
        return sum(f.chars for f in self.files)

    def counts(self) -> dict[str, int]:
        """Skipped entries per reason, most frequent first (a pruned directory counts once)."""
        return dict(Counter(s.reason for s in self.skipped).most_common())

    def skipped_text(self, limit: int = 5) -> str:
        """The first skipped entries with their reasons, for an error message."""
        shown = ", ".join(str(s) for s in self.skipped[:limit])
        more = f" and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return f"skipped {len(self.skipped)}: {shown}{more}"

    def summary(self) -> str:
        """One line: files, characters, and what was skipped per reason."""
        line = f"{len(self.files):,} file(s), {self.chars:,} characters"
        if self.skipped:
            reasons = ", ".join(f"{n:,} {REASONS.get(r, r)}" for r, n in self.counts().items())
            line += f"; skipped {len(self.skipped):,} ({reasons})"
        return line

    def to_dict(self, max_entries: int | None = 2_000) -> dict[str, Any]:
        """Plain JSON data; lists are cut at ``max_entries`` with the number left out recorded."""
        files = self.files if max_entries is None else self.files[:max_entries]
        skipped = self.skipped if max_entries is None else self.skipped[:max_entries]
        out: dict[str, Any] = {
            "roots": list(self.roots),
            "files": [{"name": f.name, "path": f.path, "bytes": f.bytes, "chars": f.chars} for f in files],
            "skipped": [{"name": s.name, "reason": s.reason} for s in skipped],
            "skipped_counts": self.counts(),
            "reasons": {r: REASONS.get(r, r) for r in self.counts()},
        }
        if len(files) < len(self.files):
            out["files_left_out"] = len(self.files) - len(files)
        if len(skipped) < len(self.skipped):
            out["skipped_left_out"] = len(self.skipped) - len(skipped)
        return out


@dataclass(frozen=True)
class FileText:
    """A UTF-8 text file checked when it was loaded (no NUL byte, valid UTF-8, its length) but not kept in memory.

    ``Context`` holds one in place of the text of a large file: the REPL worker gets the file by a kernel copy,
    and the host reads it only if someone asks for ``Context.documents``. Either raises ``ContextError`` when the
    file is no longer the one that was checked (replaced, grown or edited since).
    """

    path: str
    bytes: int
    chars: int
    preview: str
    """Its first characters (up to 4,096), for ``Context.describe``."""
    identity: tuple[int, int, int, int]
    """``(st_dev, st_ino, st_size, st_mtime_ns)`` when it was checked."""

    def head(self, chars: int) -> str:
        return self.preview[:chars] if chars <= len(self.preview) else self.read()[:chars]

    def read(self) -> str:
        """The whole text."""
        fd = self._open()
        try:
            with open(fd, "rb", closefd=False) as f:
                data = f.read(self.bytes)
        finally:
            os.close(fd)
        return data.decode("utf-8")

    def copy_to(self, out_fd: int) -> int:
        """Append the file's bytes at ``out_fd``'s position, copied by the kernel; returns how many were copied."""
        fd = self._open()
        copied = 0
        try:
            while copied < self.bytes:
                try:
                    step = os.copy_file_range(fd, out_fd, self.bytes - copied)
                except (AttributeError, OSError):  # no copy_file_range (kernel, platform, file system): plain copy
                    step = os.write(out_fd, os.read(fd, min(CHUNK, self.bytes - copied)))
                if step == 0:
                    break
                copied += step
        finally:
            os.close(fd)
        if copied != self.bytes:
            raise ContextError(f"The context file {self.path} changed while it was copied; load it again.")
        return copied

    def _open(self) -> int:
        try:
            fd = os.open(self.path, O_SAFE)
        except OSError as exc:
            raise ContextError(f"Cannot read the context file {self.path} any more: {exc.strerror}.") from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self.identity:
            os.close(fd)
            raise ContextError(f"The context file {self.path} changed after it was loaded; load it again.")
        return fd


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
        """The documents as given: texts, and files checked but not read (``FileText``)."""
        self.names: list[str] = list(names) if names else [f"doc{i}" for i in range(len(self.parts))]
        self.metadata: list[dict[str, Any]] = list(metadata) if metadata else [{} for _ in self.parts]
        self.as_list = as_list or len(self.parts) > 1
        """Show the REPL a list even when there is a single document (it came from a directory or list)."""
        self.manifest = manifest
        """For a context read from files: what was loaded, what was left out and why."""

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

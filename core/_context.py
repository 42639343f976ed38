"""Turning what the user hands us (a string, bytes, paths, globs, stdin) into the REPL's ``context``."""

from __future__ import annotations

import glob as globlib
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from ._exceptions import ContextError

__all__ = ["Context", "ContextSource", "load_context"]

ContextSource = "str | bytes | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Context"

_SNIFF_BYTES = 8192
_DEFAULT_EXCLUDES = (".git/*", "*/.git/*", "__pycache__/*", "*/__pycache__/*", "node_modules/*", "*/node_modules/*")


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
    skipped: list[str] = field(default_factory=list)
    """Files left out because they were binary or not valid text."""

    def __post_init__(self) -> None:
        if not self.names:
            self.names = [f"doc{i}" for i in range(len(self.documents))]
        if not self.metadata:
            self.metadata = [{} for _ in self.documents]
        if len(self.documents) > 1:
            self.as_list = True

    @property
    def total_chars(self) -> int:
        return sum(len(d) for d in self.documents)

    @property
    def value(self) -> str | list[str]:
        """What ``context`` is inside the REPL."""
        return list(self.documents) if self.as_list else self.documents[0]

    def describe(self, preview_chars: int = 500) -> dict[str, Any]:
        """Metadata the root model sees instead of the context itself."""
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
        return info


def load_context(
    source: Any,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Context:
    """Load a context from a string, bytes, a ``Context``, a path (file, directory, glob, ``-`` for stdin)
    or a list of those. Plain strings are text, never paths: wrap a path in ``Path``.

    Binary and undecodable files are skipped and listed in ``Context.skipped``; a missing path or a
    context with no text raises ``ContextError``.
    """
    if isinstance(source, Context):
        ctx = source
    elif isinstance(source, str):
        ctx = Context([source])
    elif isinstance(source, bytes | bytearray | memoryview):
        ctx = Context([_decode_bytes(bytes(source), "<bytes>")])
    elif isinstance(source, os.PathLike):
        ctx = _from_paths([os.fspath(source)], include, exclude)
    elif isinstance(source, Iterable):
        items = list(source)
        if items and all(isinstance(i, os.PathLike) for i in items):
            ctx = _from_paths([os.fspath(i) for i in items], include, exclude)
        elif all(isinstance(i, str) for i in items):
            ctx = Context(list(items), as_list=True)
        else:
            raise ContextError("A context list must hold only strings (texts) or only paths (pathlib.Path).")
    else:
        raise ContextError(f"Cannot use a {type(source).__name__} as a context; pass str, bytes, Path or a list.")
    if not ctx.documents or ctx.total_chars == 0:
        hint = f" ({len(ctx.skipped)} binary or undecodable files skipped)" if ctx.skipped else ""
        raise ContextError(f"The context is empty{hint}: give recursa some text to reason over.")
    return ctx


def load_paths(specs: Sequence[str], *, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Context:
    """Load the CLI's ``--context`` arguments: files, directories, globs, or ``-`` for stdin."""
    return load_context(_from_paths(list(specs), include, exclude))


def _from_paths(specs: list[str], include: Sequence[str], exclude: Sequence[str]) -> Context:
    docs: list[str] = []
    names: list[str] = []
    metadata: list[dict[str, Any]] = []
    skipped: list[str] = []
    from_dir = len(specs) > 1
    for spec in specs:
        if spec == "-":
            data = sys.stdin.buffer.read()
            docs.append(_decode_bytes(data, "<stdin>"))
            names.append("<stdin>")
            metadata.append({"source": "stdin"})
            continue
        for path, display in _expand(spec, include, exclude):
            if display in names:  # the same file named twice (e.g. a directory and a glob inside it)
                continue
            from_dir = from_dir or Path(spec).is_dir() or _is_glob(spec)
            text = _read_text(path)
            if text is None:
                skipped.append(display)
                continue
            docs.append(text)
            names.append(display)
            metadata.append({"path": str(path), "bytes": path.stat().st_size})
    if skipped:
        shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        print(f"recursa: skipped {len(skipped)} binary or undecodable file(s): {shown}", file=sys.stderr)
    return Context(docs, names, metadata, as_list=from_dir or len(docs) > 1, skipped=skipped)


def _is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def _expand(spec: str, include: Sequence[str], exclude: Sequence[str]) -> list[tuple[Path, str]]:
    path = Path(spec).expanduser()
    if _is_glob(spec) and not path.exists():
        matches = sorted(Path(p) for p in globlib.glob(os.path.expanduser(spec), recursive=True))
        files = [m for m in matches if m.is_file()]
        if not files:
            raise ContextError(f"No file matches the glob {spec!r}.")
        return [(f, str(f)) for f in files if _wanted(str(f), include, exclude)]
    if not path.exists():
        raise ContextError(f"Context path not found: {spec}")
    if path.is_file():
        return [(path, str(path))]
    if not path.is_dir():
        raise ContextError(f"Context path is neither a file nor a directory: {spec}")
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = Path(root) / name
            rel = full.relative_to(path).as_posix()
            if _wanted(rel, include, (*_DEFAULT_EXCLUDES, *exclude)):
                found.append((full, rel if len(rel) else name))
    return found


def _wanted(rel: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    base = rel.rsplit("/", 1)[-1]
    if include and not any(fnmatch(rel, p) or fnmatch(base, p) for p in include):
        return False
    return not any(fnmatch(rel, p) or fnmatch(base, p) for p in exclude)


def _read_text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ContextError(f"Cannot read context file {path}: {exc.strerror}") from None
    if b"\x00" in data[:_SNIFF_BYTES]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decode_bytes(data: bytes, label: str) -> str:
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise ContextError(f"The context {label} looks binary (it has NUL bytes); pass text.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContextError(f"The context {label} is not valid UTF-8 (byte {exc.start}); pass text.") from None

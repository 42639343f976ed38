"""Path safety: every path a tool is given must lie under an allowed root, symlinks included.

A client names files and directories; the server turns them into a ``recursa.Context`` only after
resolving each one (``..`` and symlinks followed) and checking that the real path stays inside one
of the allowed roots. Directory walks check every file the same way, so a symlink inside a root that
points out of it is skipped and reported, never read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from recursa import Context, ContextError
from recursa._context import _read_text

__all__ = ["AllowedRoots", "Limits", "PathError", "gather_context"]

SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache",
    ".pytest_cache", ".ruff_cache",
})
"""Directories never walked into: version control, dependencies and caches."""


class PathError(ValueError):
    """A path was refused (outside the roots, missing, too large) or the request named no text at all."""


@dataclass(frozen=True)
class Limits:
    """How much a single tool call may load."""

    max_inline_chars: int = 200_000
    """Longest ``text`` argument accepted; bigger contexts must be passed as paths."""
    max_files: int = 10_000
    """Most files one call may load."""
    max_bytes: int = 512 * 2**20
    """Most bytes one call may load (before decoding)."""


class AllowedRoots:
    """The directories tools may read under, each stored fully resolved."""

    def __init__(self, roots: Iterable[str | os.PathLike[str]]) -> None:
        resolved: list[Path] = []
        for root in roots:
            path = Path(root).expanduser().resolve()
            if not path.is_dir():
                raise PathError(f"Allowed root {root} is not an existing directory.")
            if path not in resolved:
                resolved.append(path)
        if not resolved:
            raise PathError("At least one allowed root directory is needed.")
        self.paths: tuple[Path, ...] = tuple(resolved)

    def __repr__(self) -> str:
        return f"AllowedRoots({[str(p) for p in self.paths]})"

    def __add__(self, other: Iterable[Path]) -> AllowedRoots:
        return AllowedRoots([*self.paths, *other])

    def root_of(self, real: Path) -> Path | None:
        """The allowed root that contains the resolved path ``real``, or None."""
        for root in self.paths:
            if real == root or real.is_relative_to(root):
                return root
        return None

    def describe(self) -> str:
        return ", ".join(str(p) for p in self.paths)

    def locate(self, spec: str) -> Path:
        """Resolve a path named by the client to its real location under an allowed root.

        Relative paths are tried under each root in order. Raises ``PathError`` for a path that
        leaves the roots (``..``, absolute, or through a symlink) or that does not exist.
        """
        if not spec or not spec.strip():
            raise PathError("An empty path was given; name a file or directory under the allowed roots.")
        given = Path(spec).expanduser()
        candidates = [given] if given.is_absolute() else [root / given for root in self.paths]
        inside_but_missing = False
        escape: tuple[Path, Path] | None = None
        for candidate in candidates:
            try:
                real = candidate.resolve()
            except (OSError, RuntimeError):
                raise PathError(f"Path {spec!r} cannot be resolved (a symlink loop?).") from None
            if self.root_of(real) is not None:
                if real.exists():
                    return real
                inside_but_missing = True
            elif escape is None:
                escape = (candidate, real)
        if inside_but_missing or escape is None:
            raise PathError(f"Path not found: {spec!r} (looked under {self.describe()}).")
        candidate, real = escape
        via = " through a symlink" if _has_symlink(candidate) else ""
        raise PathError(
            f"Path {spec!r} resolves{via} to {real}, which is outside the allowed roots ({self.describe()}); "
            "restart the server with --root for that directory to allow it."
        )


def gather_context(
    roots: AllowedRoots,
    *,
    paths: Sequence[str] = (),
    glob: str | None = None,
    text: str | None = None,
    limits: Limits = Limits(),
) -> Context:
    """Build the run's context from paths (files or directories under the roots), a glob and inline text.

    ``glob`` filters the files found in directories (``"**/*.py"``, ``"*.log"``); with no ``paths``
    it searches every allowed root. Raises ``PathError`` with a message meant for the end user.
    """
    if text is not None and len(text) > limits.max_inline_chars:
        raise PathError(
            f"The inline text is {len(text):,} characters, over the {limits.max_inline_chars:,}-character limit "
            "for text sent in a tool call; save it to a file under an allowed root and pass its path instead."
        )
    if not paths and not glob and not text:
        raise PathError("Nothing to read: pass paths (files or directories), a glob, or text.")
    specs: list[str] = list(paths)
    from_dirs = bool(glob) or len(specs) > 1
    files: list[tuple[Path, str]] = []
    skipped: list[str] = []
    seen: set[Path] = set()
    targets: list[Path] = [roots.locate(spec) for spec in specs]
    if not specs and glob:
        targets = list(roots.paths)
    for target in targets:
        if target.is_dir():
            from_dirs = True
            found = _walk(target, roots, glob, skipped)
        elif target.is_file():
            found = [(target, _display(target, roots.root_of(target)))]
        else:
            raise PathError(f"{target} is neither a regular file nor a directory (a device or pipe?); it is not read.")
        for real, name in found:
            if real not in seen:
                seen.add(real)
                files.append((real, name))
        if len(files) > limits.max_files:
            raise PathError(
                f"The request names more than {limits.max_files:,} files; narrow it with a glob or a subdirectory."
            )
    docs, names, metadata = _read_all(files, skipped, limits)
    if text:
        docs.append(text)
        names.append("<text>")
        metadata.append({"source": "inline"})
    if not docs:
        detail = f" ({len(skipped)} file(s) skipped: {', '.join(skipped[:5])})" if skipped else ""
        raise PathError(f"No text to read: no file matched{detail}.")
    return Context(docs, names, metadata, as_list=from_dirs or len(docs) > 1, skipped=skipped)


def _walk(directory: Path, roots: AllowedRoots, glob: str | None, skipped: list[str]) -> list[tuple[Path, str]]:
    root = roots.root_of(directory)
    found: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(directory):  # symlinked directories are not followed
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for filename in sorted(filenames):
            full = Path(dirpath) / filename
            rel = full.relative_to(directory).as_posix()
            if glob and not _matches(rel, glob):
                continue
            real = full.resolve()
            name = _display(full, root)
            if roots.root_of(real) is None:
                skipped.append(f"{name} (symlink to outside the allowed roots)")
                continue
            if real.is_file():
                found.append((real, name))
    return sorted(found, key=lambda item: item[1])


def _read_all(
    files: list[tuple[Path, str]], skipped: list[str], limits: Limits
) -> tuple[list[str], list[str], list[dict[str, object]]]:
    total = 0
    for real, _ in files:
        total += real.stat().st_size
        if total > limits.max_bytes:
            raise PathError(
                f"The request names more than {limits.max_bytes // 2**20:,} MiB of files; "
                "narrow it with a glob or a subdirectory."
            )
    docs: list[str] = []
    names: list[str] = []
    metadata: list[dict[str, object]] = []
    for real, name in files:
        try:
            content = _read_text(real)
        except ContextError as exc:
            raise PathError(str(exc)) from None
        if content is None:
            skipped.append(f"{name} (binary or not UTF-8)")
            continue
        docs.append(content)
        names.append(name)
        metadata.append({"path": str(real), "bytes": real.stat().st_size})
    return docs, names, metadata


def _matches(rel: str, pattern: str) -> bool:
    base = rel.rsplit("/", 1)[-1]
    if fnmatch(rel, pattern) or fnmatch(base, pattern):
        return True
    return pattern.startswith("**/") and _matches(rel, pattern[3:])


def _display(path: Path, root: Path | None) -> str:
    if root is not None and path.is_relative_to(root):
        return path.relative_to(root).as_posix() or path.name
    return str(path)


def _has_symlink(path: Path) -> bool:
    current = Path(path.anchor)
    for part in path.parts[1:]:
        current = current / part
        if current.is_symlink():
            return True
    return False

"""Which files become context: the one gate the CLI, ``load_context(Path)``, the MCP server and the
LangChain file tool all pass through, so they cannot disagree about what is safe or wanted.

``load_files`` decides in this order, and reads nothing until every step has passed:

1. where each named path really is (``~``, ``..`` and symlinks resolved) and whether that lies under
   the allowed roots (``PathNotAllowedError`` if not); with no roots, the directory named is the tree;
2. which files a directory walk yields: version-control folders, virtualenvs (``.venv``, ``venv``, any
   directory holding ``pyvenv.cfg``), build outputs, caches and ``node_modules`` are pruned, and files
   that hold secrets (``.env``, ``.env.*``, private keys) are left out;
   ``.gitignore`` and ``.ignore`` files apply to their own subtree the way ripgrep applies them
   (matched by ``pathspec``, the deeper file and ``.ignore`` winning); ``include``/``exclude`` globs
   come on top; a symlink is followed only to a file that stays inside the tree;
3. whether what is left fits ``LoadLimits`` (``ContextTooLargeError`` names the biggest files).

Each file is then opened by its resolved path (``O_NOFOLLOW``, and checked to be the very file that
was approved) and read; binary and non-UTF-8 files are skipped. ``Manifest`` (``recursa._context``)
records what was loaded and what was left out, and why: the CLI prints its ``summary()``, the trace and
the MCP context resource carry its ``to_dict()``.

``load_context`` (a string, bytes, paths or a ``Context``) and ``load_paths`` (the CLI's ``--context``,
``-`` for stdin) build on ``load_files`` and refuse a context with no text.
"""

from __future__ import annotations

import codecs
import functools
import os
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._context import CHUNK, O_SAFE, Context, FileText, LoadedFile, Manifest, Skipped
from ._exceptions import ContextError, ContextTooLargeError, PathNotAllowedError

if TYPE_CHECKING:
    import pathspec

__all__ = ["AllowedRoots", "LoadLimits", "load_context", "load_files", "load_paths"]

_SKIP_DIRS: dict[str, str] = {
    ".git": "vcs", ".hg": "vcs", ".svn": "vcs",
    ".venv": "virtualenv", "venv": "virtualenv",
    "dist": "build", "build": "build", "target": "build",
    "__pycache__": "cache", ".mypy_cache": "cache", ".pytest_cache": "cache", ".ruff_cache": "cache",
    ".tox": "cache",
    "node_modules": "dependencies",
}
"""Directories a walk never enters (unless named directly), by name, with the reason recorded."""

IGNORE_FILES = (".gitignore", ".ignore")
"""Read in this order in each directory, so a ``.ignore`` rule beats a ``.gitignore`` one (as in ripgrep)."""

_SECRET_PATTERNS = (".env", ".env.*", "!.env.example", "!.env.sample", "!.env.template", ".netrc", "*.pem", "*.key",
                    "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519")
"""Files a directory walk leaves out even when no ignore rule does: their content would go to a model provider.
Named directly (``--context .env``), they are loaded."""
_GLOB_CHARS = frozenset("*?[")
_SNIFF_BYTES = 8192
_HOLD_BYTES = 4 * 2**20
"""Files up to this size are read into memory when loaded; larger ones are checked and left on disk (``FileText``)."""
_PREVIEW_CHARS = 4096
_MAX_IGNORE_FILE_BYTES = 1 << 20


# -- what a load may read ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadLimits:
    """How much one load may read. A load over a limit fails before any file is read."""

    max_file_bytes: int = 128 * 2**20
    """Largest single text file."""
    max_total_bytes: int = 512 * 2**20
    """Most bytes of text files in all."""
    max_files: int = 20_000
    """Most files in all."""


def check_text(real: Path, approved: os.stat_result, limit: int) -> FileText | str:
    """Check up to ``limit`` bytes of a file the way a small one is checked when read whole (no NUL byte, valid
    UTF-8), a megabyte at a time, counting its characters: a ``FileText``, or why it is skipped (a ``REASONS`` key).
    """
    try:
        fd = os.open(real, O_SAFE)
    except OSError:
        return "unreadable"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (approved.st_dev, approved.st_ino):
            return "unreadable"
        decoder = codecs.getincrementaldecoder("utf-8")()
        size = chars = 0
        preview = ""
        while size < limit:
            chunk = os.read(fd, min(CHUNK, limit - size))
            if not chunk:
                break
            size += len(chunk)
            if b"\x00" in chunk:
                return "binary"
            if chunk.isascii() and not decoder.getstate()[0]:  # most text: no decoding needed to count it
                chars += len(chunk)
                if len(preview) < _PREVIEW_CHARS:
                    preview += chunk[:_PREVIEW_CHARS].decode("ascii")
            else:
                try:
                    text = decoder.decode(chunk)
                except UnicodeDecodeError:
                    return "not_utf8"
                chars += len(text)
                if len(preview) < _PREVIEW_CHARS:
                    preview += text[:_PREVIEW_CHARS]
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "not_utf8"
        now = os.fstat(fd)
        if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            return "unreadable"  # written to while it was checked
        return FileText(str(real), size, chars, preview[:_PREVIEW_CHARS], (st.st_dev, st.st_ino, size, st.st_mtime_ns))
    except OSError:
        return "unreadable"
    finally:
        os.close(fd)


# -- where reading may happen -----------------------------------------------------------------------


class AllowedRoots:
    """The directories files may be read under, each stored fully resolved.

    ``hint`` ends the refusal message and tells the user how to allow more (it differs per entry point).
    """

    def __init__(self, roots: Iterable[str | os.PathLike[str]], *, hint: str = "name a path inside them") -> None:
        resolved: list[Path] = []
        for root in roots:
            path = Path(root).expanduser().resolve()
            if not path.is_dir():
                raise ContextError(f"Allowed root {root} is not an existing directory.")
            if path not in resolved:
                resolved.append(path)
        if not resolved:
            raise ContextError("At least one allowed root directory is needed.")
        self.paths: tuple[Path, ...] = tuple(resolved)
        self.hint = hint

    def __repr__(self) -> str:
        return f"AllowedRoots({[str(p) for p in self.paths]})"

    def __add__(self, other: Iterable[str | os.PathLike[str]]) -> AllowedRoots:
        return AllowedRoots([*self.paths, *other], hint=self.hint)

    def root_of(self, real: Path) -> Path | None:
        """The allowed root that contains the resolved path ``real``, or None."""
        for root in self.paths:
            if real == root or real.is_relative_to(root):
                return root
        return None

    def describe(self) -> str:
        return ", ".join(str(p) for p in self.paths)

    def locate(self, spec: str | os.PathLike[str], *, base: Path | None = None) -> Path:
        """Resolve a named path to its real location under an allowed root, before anything is read.

        Relative paths start at ``base``, or else are tried under each root in order. Raises
        ``PathNotAllowedError`` for a path leading out of the roots (``..``, absolute, or through a
        symlink) and ``ContextError`` for one that does not exist.
        """
        text = os.fspath(spec)
        if not text.strip():
            raise ContextError("An empty path was given; name a file or directory under the allowed roots.")
        given = Path(text).expanduser()
        if given.is_absolute():
            candidates = [given]
        else:
            candidates = [base / given] if base is not None else [root / given for root in self.paths]
        escape: tuple[Path, Path] | None = None
        for candidate in candidates:
            real = _resolve(candidate, text)
            if self.root_of(real) is not None:
                if real.exists():
                    return real
            elif escape is None:
                escape = (candidate, real)
        if escape is None:
            raise ContextError(f"Path not found: {text!r} (looked under {self.describe()}).")
        candidate, real = escape
        via = " through a symlink" if _has_symlink(candidate) else ""
        raise PathNotAllowedError(
            f"Path {text!r} resolves{via} to {real}, which is outside the allowed roots ({self.describe()}); "
            f"{self.hint}.",
            path=text, resolved=str(real),
        )


# -- the loader ---------------------------------------------------------------------------------------


@dataclass
class _Candidate:
    real: Path
    name: str
    st: os.stat_result


@dataclass(frozen=True)
class _Rules:
    """One directory's ignore rules; ``anchor`` is that directory relative to the ignore base (``""`` or ``a/b/``)."""

    anchor: str
    spec: pathspec.PathSpec


@dataclass
class _Walk:
    """One directory walk: where it starts, what bounds it, how its names and rules are anchored."""

    top: Path
    boundary: Path
    display_prefix: str
    rules: list[_Rules]
    rules_prefix: str
    pattern: pathspec.PathSpec | None = None
    max_depth: int | None = None


class _Loader:
    def __init__(
        self,
        roots: AllowedRoots | None,
        base: Path | None,
        include: Sequence[str],
        exclude: Sequence[str],
        limits: LoadLimits,
    ) -> None:
        self.roots = roots
        self.base = base
        self.include = _spec(include)
        self.exclude = _spec(exclude)
        self.limits = limits
        self.candidates: list[_Candidate] = []
        self.seen: set[Path] = set()
        self.skipped: list[Skipped] = []
        self.tops: list[str] = []
        self.matched = 0
        self.links: list[tuple[Path, str]] = []
        """Files reached through a symlink inside the tree: taken last, so the file's own name wins."""
        self.as_list = False

    # -- naming ---------------------------------------------------------------------------------------

    def locate(self, spec: str) -> Path:
        if self.roots is not None:
            return self.roots.locate(spec, base=self.base)
        path = Path(spec).expanduser()
        if not path.is_absolute():
            path = (self.base or Path.cwd()) / path
        real = _resolve(path, spec)
        if not real.exists():
            raise ContextError(f"Context path not found: {spec}")
        return real

    def display_base(self, real: Path, fallback: Path) -> Path:
        """Names are relative to the allowed root holding the file, or else to the directory named."""
        if self.roots is not None:
            return self.roots.root_of(real) or fallback
        return fallback

    def boundary(self, real: Path) -> Path:
        """A walk never follows a symlink out of this directory."""
        if self.roots is not None:
            return self.roots.root_of(real) or real
        return real

    # -- named paths ----------------------------------------------------------------------------------

    def add(self, spec: str) -> None:
        if _is_glob(spec):
            try:
                real = self.locate(spec)  # a file really named like a glob ("a[1].txt") is taken as it is
            except PathNotAllowedError:
                raise
            except ContextError:
                self.add_glob(spec)
                return
        else:
            real = self.locate(spec)
        if real.is_dir():
            self.as_list = True
            self.walk(self.new_walk(real))
        elif real.is_file():
            name = _relative_name(real, self.display_base(real, real.parent)) if self.roots else spec
            self.take(real, name)
        else:
            raise ContextError(f"{spec} is neither a regular file nor a directory (a device or pipe?); it is not read.")

    def add_glob(self, spec: str) -> None:
        parts = Path(spec).expanduser().parts
        fixed = next(i for i, part in enumerate(parts) if any(c in _GLOB_CHARS for c in part))
        prefix = Path(*parts[:fixed]) if fixed else Path(".")
        pattern = parts[fixed:]
        try:
            real = self.locate(str(prefix))
        except PathNotAllowedError:
            raise
        except ContextError:  # the directory before the first wildcard does not exist
            raise ContextError(f"No file matches the glob {spec!r}.") from None
        if not real.is_dir():
            raise ContextError(f"No file matches the glob {spec!r}.")
        self.as_list = True
        walk = self.new_walk(real)
        walk.pattern = _gitignore(["/" + "/".join(pattern)])
        walk.max_depth = None if "**" in pattern else len(pattern)
        before = self.matched + len(self.links)
        self.walk(walk)
        if self.matched + len(self.links) == before:
            raise ContextError(f"No file matches the glob {spec!r}.")

    def take(self, real: Path, name: str) -> None:
        self.matched += 1
        if real in self.seen:
            return
        try:
            st = real.stat()
        except OSError as exc:
            raise ContextError(f"Cannot read context file {name}: {exc.strerror}") from None
        self.seen.add(real)
        self.candidates.append(_Candidate(real, name, st))
        if len(self.candidates) > self.limits.max_files:
            raise ContextTooLargeError(
                f"The context names more than {self.limits.max_files:,} files; narrow it with include/exclude globs, "
                "a .gitignore or .ignore file, or a subdirectory.",
                biggest=[], limit=self.limits.max_files,
            )

    # -- walking --------------------------------------------------------------------------------------

    def new_walk(self, top: Path) -> _Walk:
        boundary = self.boundary(top)
        self.tops.append(str(boundary))
        display = self.display_base(top, top)
        ignore_base = boundary if self.roots is not None else _git_root(top) or top
        rules: list[_Rules] = []
        chain = [ignore_base, *reversed(top.relative_to(ignore_base).parents[:-1])] if top != ignore_base else []
        for directory in chain:  # ignore files above the directory named, from the root (or repository) down
            rules.extend(self.read_rules(ignore_base / directory, _prefix(ignore_base / directory, ignore_base),
                                         ignore_base))
        return _Walk(
            top=top, boundary=boundary, display_prefix=_prefix(top, display), rules=rules,
            rules_prefix=_prefix(top, ignore_base),
        )

    def read_rules(self, directory: Path, anchor: str, boundary: Path) -> list[_Rules]:
        """The rules of ``directory``'s ignore files; one that is a symlink out of ``boundary`` is not read."""
        lines: list[str] = []
        for filename in IGNORE_FILES:
            path = directory / filename
            try:
                st = path.lstat()
            except OSError:
                continue
            real = path
            if stat.S_ISLNK(st.st_mode):
                real = _resolve(path, str(path))
                if not real.is_relative_to(boundary):
                    continue
                try:
                    st = real.stat()
                except OSError:
                    continue
            if not stat.S_ISREG(st.st_mode):
                continue
            data = _read_approved(real, st, _MAX_IGNORE_FILE_BYTES)
            if data is not None:
                lines.extend(data.decode("utf-8", errors="replace").splitlines())
        if not lines:
            return []
        return [_Rules(anchor, _gitignore(lines))]

    def walk(self, walk: _Walk) -> None:
        stack: list[tuple[Path, str, list[_Rules]]] = [(walk.top, "", walk.rules)]
        while stack:
            directory, rel_dir, rules = stack.pop()
            rules = rules + self.read_rules(directory, walk.rules_prefix + rel_dir, walk.boundary)
            depth = rel_dir.count("/")
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError:
                self.skip(walk.display_prefix + rel_dir, "unreadable")
                continue
            subdirs: list[tuple[Path, str, list[_Rules]]] = []
            for entry in entries:
                rel = rel_dir + entry.name
                name = walk.display_prefix + rel
                path = Path(entry.path)
                try:
                    is_link = entry.is_symlink()
                    is_dir = not is_link and entry.is_dir(follow_symlinks=False)
                    is_file = not is_link and entry.is_file(follow_symlinks=False)
                except OSError:
                    self.skip(name, "unreadable")
                    continue
                if is_dir:
                    if walk.max_depth is not None and depth + 1 >= walk.max_depth:
                        continue
                    reason = _dir_reason(entry.name, path) or self.filtered(walk, rules, rel + "/", directory=True)
                    if reason:
                        self.skip(name + "/", reason)
                    else:
                        subdirs.append((path, rel + "/", rules))
                    continue
                if walk.pattern is not None and not walk.pattern.match_file(rel):
                    continue
                real = path
                if is_link:
                    try:
                        real = _resolve(path, name)
                    except ContextError:
                        self.skip(name, "unreadable")
                        continue
                    if not real.is_relative_to(walk.boundary):
                        self.skip(name + ("/" if real.is_dir() else ""), "outside")
                        continue
                    if real.is_dir():
                        self.skip(name + "/", "symlinked_dir")
                        continue
                    is_file = real.is_file()
                if not is_file:
                    self.skip(name, "special")
                    continue
                reason = self.filtered(walk, rules, rel, directory=False)
                if reason:
                    self.skip(name, reason)
                elif is_link:
                    self.links.append((real, name))
                else:
                    self.take(real, name)
            stack.extend(reversed(subdirs))

    def filtered(self, walk: _Walk, rules: list[_Rules], rel: str, *, directory: bool) -> str | None:
        """Why the walk leaves ``rel`` (relative to the walk's top; a directory ends with ``/``) out, if it does."""
        if _ignored(rules, walk.rules_prefix + rel):
            return "ignored"
        if not directory and _secret_files().match_file(rel.rsplit("/", 1)[-1]):
            return "secret"
        if self.exclude is not None and self.exclude.match_file(rel):
            return "excluded"
        if not directory and self.include is not None and not self.include.match_file(rel):
            return "not_included"
        return None

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append(Skipped(name, reason))

    # -- limits and reading ---------------------------------------------------------------------------

    def take_links(self) -> None:
        for real, name in self.links:
            self.take(real, name)
        self.links = []

    def check_sizes(self) -> None:
        limits = self.limits
        too_big = []
        for cand in [c for c in self.candidates if c.st.st_size > limits.max_file_bytes]:
            if self.sniff_binary(cand):
                continue
            too_big.append(cand)
        if too_big:
            too_big.sort(key=lambda c: -c.st.st_size)
            named = ", ".join(f"{c.name} ({_size(c.st.st_size)})" for c in too_big[:5])
            raise ContextTooLargeError(
                f"{len(too_big)} file(s) are over the {_size(limits.max_file_bytes)} limit for one file: {named}; "
                "leave them out with an exclude glob or a .gitignore/.ignore entry, or name a smaller part.",
                biggest=[(c.name, c.st.st_size) for c in too_big], limit=limits.max_file_bytes,
            )
        total = sum(c.st.st_size for c in self.candidates)
        if total <= limits.max_total_bytes:
            return
        for cand in sorted(self.candidates, key=lambda c: -c.st.st_size):  # big binaries are no reason to refuse
            if total <= limits.max_total_bytes:
                return
            if self.sniff_binary(cand):
                total -= cand.st.st_size
        if total > limits.max_total_bytes:
            biggest = sorted(self.candidates, key=lambda c: -c.st.st_size)[:5]
            named = ", ".join(f"{c.name} ({_size(c.st.st_size)})" for c in biggest)
            raise ContextTooLargeError(
                f"The context is {_size(total)} in {len(self.candidates):,} files, over the "
                f"{_size(limits.max_total_bytes)} limit; the biggest: {named}. Leave some out with an exclude glob "
                "or a .gitignore/.ignore entry, or name a smaller part.",
                biggest=[(c.name, c.st.st_size) for c in biggest], limit=limits.max_total_bytes,
            )

    def sniff_binary(self, cand: _Candidate) -> bool:
        """Whether the file starts like a binary one; if so it is skipped now and never read in full."""
        head = _read_approved(cand.real, cand.st, _SNIFF_BYTES)
        if head is not None and b"\x00" in head:
            self.candidates.remove(cand)
            self.skip(cand.name, "binary")
            return True
        return False

    def read(self) -> Context:
        docs: list[str | FileText] = []
        names: list[str] = []
        metadata: list[dict[str, Any]] = []
        files: list[LoadedFile] = []
        for cand in sorted(self.candidates, key=lambda c: c.name):
            if cand.st.st_size > _HOLD_BYTES:
                checked = check_text(cand.real, cand.st, self.limits.max_file_bytes)
                if isinstance(checked, str):
                    self.skip(cand.name, checked)
                    continue
                docs.append(checked)
                names.append(cand.name)
                metadata.append({"path": str(cand.real), "bytes": checked.bytes})
                files.append(LoadedFile(cand.name, str(cand.real), checked.bytes, checked.chars))
                continue
            data = _read_approved(cand.real, cand.st, self.limits.max_file_bytes)
            if data is None:
                self.skip(cand.name, "unreadable")
                continue
            if b"\x00" in data:
                self.skip(cand.name, "binary")
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                self.skip(cand.name, "not_utf8")
                continue
            docs.append(text)
            names.append(cand.name)
            metadata.append({"path": str(cand.real), "bytes": len(data)})
            files.append(LoadedFile(cand.name, str(cand.real), len(data), len(text)))
        roots = [str(p) for p in self.roots.paths] if self.roots is not None else list(dict.fromkeys(self.tops))
        manifest = Manifest(roots=roots, files=files, skipped=self.skipped)
        return Context(docs, names, metadata, as_list=self.as_list or len(docs) > 1, manifest=manifest)


def load_files(
    specs: Sequence[str | os.PathLike[str]],
    *,
    roots: AllowedRoots | None = None,
    base: str | os.PathLike[str] | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    limits: LoadLimits | None = None,
) -> Context:
    """Load files, directories and globs as a ``Context`` whose ``manifest`` says what was read and skipped.

    ``roots`` confines every read (named paths and what walks find) to those directories; without
    them, a named path may be anywhere but a walk stays inside the directory named. Relative paths
    start at ``base`` (default: the working directory, or each root in turn). ``include``/``exclude``
    are gitignore-style globs relative to the directory walked (``*.py``, ``docs/**``); they filter
    walks, not files named directly. The result may hold no documents: ``load_context`` refuses it.
    """
    loader = _Loader(roots, Path(base).expanduser().resolve() if base is not None else None, include, exclude,
                     limits or LoadLimits())
    for spec in specs:
        loader.add(os.fspath(spec))
    loader.take_links()
    loader.check_sizes()
    return loader.read()


def load_context(
    source: Any,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Context:
    """Load a context from a string, bytes, a ``Context``, a path (file, directory or glob) or a list of
    those. Plain strings are text, never paths: wrap a path in ``Path``.

    Paths go through ``load_files``: ignore files and the default skips apply, binary
    and undecodable files are left out, and ``Context.manifest`` says what was read and skipped. A
    missing path or a context with no text raises ``ContextError``.
    """
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
    files = [s for s in specs if s != "-"]
    ctx = load_files(files, include=include, exclude=exclude, limits=limits) if files else Context([])
    if "-" in specs:
        text = _decode_bytes(sys.stdin.buffer.read(), "<stdin>")
        ctx = Context([text, *ctx.parts], ["<stdin>", *ctx.names], [{"source": "stdin"}, *ctx.metadata],
                      as_list=ctx.as_list or bool(ctx.parts), manifest=ctx.manifest)
    return load_context(ctx)


# -- helpers ------------------------------------------------------------------------------------------


def _gitignore(lines: Iterable[str]) -> pathspec.PathSpec:
    """Gitignore-style rules; ``pathspec`` is imported here, only when there is something to match (a walk, a glob)."""
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)


@functools.cache
def _secret_files() -> pathspec.PathSpec:
    return _gitignore(_SECRET_PATTERNS)


def _spec(patterns: Sequence[str]) -> pathspec.PathSpec | None:
    return _gitignore(patterns) if patterns else None


def _ignored(rules: list[_Rules], rel: str) -> bool:
    """Git's precedence: the deepest ignore file with a matching rule decides, its last matching rule winning."""
    for rules_ in reversed(rules):
        if not rel.startswith(rules_.anchor):
            continue
        result = rules_.spec.check_file(rel[len(rules_.anchor):])
        if result.include is not None:
            return bool(result.include)
    return False


def _dir_reason(name: str, path: Path) -> str | None:
    reason = _SKIP_DIRS.get(name)
    if reason is None and name.endswith(".egg-info"):
        reason = "build"
    if reason is None and os.path.lexists(path / "pyvenv.cfg"):
        reason = "virtualenv"
    return reason


def _read_approved(real: Path, approved: os.stat_result, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of ``real``, if it is still the regular file that was approved (no symlink swap)."""
    try:
        fd = os.open(real, O_SAFE)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (approved.st_dev, approved.st_ino):
            return None
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _resolve(path: Path, spec: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        raise ContextError(f"Path {spec!r} cannot be resolved (a symlink loop?).") from None


def _git_root(directory: Path) -> Path | None:
    """The enclosing repository's top, whose ignore files apply to the directory named (as in ripgrep)."""
    for candidate in (directory, *directory.parents):
        if os.path.lexists(candidate / ".git"):
            return candidate
    return None


def _prefix(path: Path, base: Path) -> str:
    rel = path.relative_to(base).as_posix()
    return "" if rel == "." else rel + "/"


def _relative_name(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def _is_glob(spec: str) -> bool:
    return any(c in _GLOB_CHARS for c in spec)


def _has_symlink(path: Path) -> bool:
    current = Path(path.anchor)
    for part in path.parts[1:]:
        current = current / part
        if current.is_symlink():
            return True
    return False


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


def _decode_bytes(data: bytes, label: str) -> str:
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise ContextError(f"The context {label} looks binary (it has NUL bytes); pass text.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContextError(f"The context {label} is not valid UTF-8 (byte {exc.start}); pass text.") from None

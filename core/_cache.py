"""A persistent cache of LM calls, shared by every recursa process of a user.

Reruns, ``recursa bench --resume``, sessions asking related questions and agents that retry pay once
for a call already made. ``LMCache`` is the store (one ``sqlite3`` file in WAL mode, so several
processes read and write it at once); ``CachedLM`` wraps any ``LM`` and answers from it.

What is cached, and why:

- **The key is the whole request**: the endpoint, the model, every message and every sampling
  parameter, the client's defaults merged in (a ``max_tokens`` set on the client changes the key as
  much as one passed per call). A parameter that cannot be written as JSON makes the call uncached
  rather than keyed loosely. One thing is left out: the loop's ``budget left: ...`` line, which says
  how many seconds (and, with hits being free, tokens and dollars) remain. It differs on every run, so
  keeping it would make a rerun's root calls miss after its first; a rerun replays the earlier run.
- **Greedy calls only, unless asked**: a call is reproducible, hence cacheable, when its effective
  temperature is 0 (the embedded model's default; ``OpenAIChat`` only with ``temperature=0``, since
  the server's own default samples). ``LMCache(sampled=True)`` caches every call: a rerun then
  repeats the first sample instead of drawing a new one.
- **Only answers**: a call that raised (any error) or was cancelled stores nothing, and an empty reply
  is not stored either (it is a failure in disguise more often than an answer). An entry is written in
  one transaction after the answer arrived, so a cancelled run never leaves half an entry.
- **A hit is free and credited**: it comes back as a ``Completion`` with zero usage and cost,
  ``cache="hit"`` and ``saved_usd`` holding what the call cost when it was made, so budgets do not
  count it and results report what it saved.
- **Bounded**: past ``max_bytes`` the least recently used entries go (down to 90 %, so eviction runs
  once per tenth of growth, not on every write). The byte total is kept by triggers in the same file,
  so every process sees one figure.
- **Never fatal**: a cache that cannot be opened or written (read-only disk, a damaged file) logs one
  warning on the ``recursa`` logger and the call goes to the model as if there were no cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from ._budget import BUDGET_LEFT
from ._lm import LM, Completion, Message, Usage

if TYPE_CHECKING:
    import sqlite3

__all__ = ["CacheStats", "CachedLM", "LMCache", "default_cache_dir", "resolve_cache", "with_cache"]

logger = logging.getLogger("recursa")

DB_NAME = "lm-calls.sqlite3"
DEFAULT_MAX_BYTES = 512 * 2**20
_SCHEMA_VERSION = 1
T = TypeVar("T")
_EVICT_TO = 0.9
_BUDGET_LINE = re.compile(re.escape(BUDGET_LEFT) + r"[^\n]*")
"""What the loop shows the root model of its budget each turn (``recursa._budget.budget_line``): left out of keys."""
_ENTRY_OVERHEAD = 160
"""Bytes an entry costs beyond its text (key, names, numbers): counted so tiny replies are bounded too."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    served_model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS calls_last_used ON calls(last_used);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('bytes', 0), ('hits', 0), ('saved_usd', 0);
CREATE TRIGGER IF NOT EXISTS calls_added AFTER INSERT ON calls
    BEGIN UPDATE counters SET value = value + NEW.size WHERE name = 'bytes'; END;
CREATE TRIGGER IF NOT EXISTS calls_removed AFTER DELETE ON calls
    BEGIN UPDATE counters SET value = value - OLD.size WHERE name = 'bytes'; END;
"""


def default_cache_dir() -> Path:
    """``$RECURSA_CACHE_DIR``, else ``cache/`` beside the embedded model's folder: ``$RECURSA_HOME/cache``,
    ``$XDG_CACHE_HOME/recursa/cache`` or ``~/.cache/recursa/cache``. Nothing is created."""
    if configured := os.environ.get("RECURSA_CACHE_DIR"):
        return Path(configured).expanduser()
    from ._model_store import model_path  # one rule for recursa's per-user folder

    return model_path().parent.parent / "cache"


@dataclass(frozen=True)
class CacheStats:
    """What a cache file holds, and what it has saved since it was created or cleared."""

    path: str
    entries: int
    bytes: int
    max_bytes: int
    hits: int
    """Calls answered from the cache, by every process that used this file."""
    saved_usd: float
    """What those calls cost when they were first made."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LMCache:
    """A persistent, size-bounded, multi-process cache of LM calls in one SQLite file.

    ``LMCache()`` uses ``default_cache_dir()``; ``LMCache("/tmp/c")`` a directory of your own (or a
    ``.sqlite3`` file path). ``sampled=True`` also caches calls that sample (temperature above 0).
    Pass it as ``RLM(cache=...)``, or wrap one model with ``cache.wrap(lm)``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        sampled: bool = False,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        where = Path(path).expanduser() if path is not None else default_cache_dir()
        self.path = where if where.suffix in (".sqlite3", ".sqlite", ".db") else where / DB_NAME
        self.max_bytes = max_bytes
        self.sampled = sampled
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None
        self._pid = 0
        self._broken = False

    def __repr__(self) -> str:
        return f"LMCache({str(self.path)!r}, max_bytes={self.max_bytes}, sampled={self.sampled})"

    def wrap(self, lm: LM) -> CachedLM:
        """``lm`` answering from this cache where it can."""
        return CachedLM(lm, self)

    # -- keys -------------------------------------------------------------------------------------

    def key(self, lm: LM, messages: list[Message], params: Mapping[str, Any]) -> str | None:
        """The entry a call would use, or ``None`` when it must not be cached (it samples, or a parameter
        cannot be written as JSON)."""
        effective = sampling_params(lm, params)
        if not self.sampled and effective.get("temperature") != 0:
            return None  # decided before the messages are looked at: most calls of a sampling client end here
        identity = request_identity(lm, messages, effective)
        try:
            text = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            return None
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    # -- reading and writing (blocking; CachedLM calls them in a worker thread) --------------------

    def get(self, key: str) -> Completion | None:
        """The stored answer as a free, credited hit (and marked as used now), or ``None``."""

        def work(con: sqlite3.Connection) -> Completion | None:
            row = con.execute("SELECT text, served_model, cost_usd FROM calls WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            text, model, cost = row
            with _write(con):
                con.execute("UPDATE calls SET last_used = ?, hits = hits + 1 WHERE key = ?", (time.time(), key))
                con.execute("UPDATE counters SET value = value + 1 WHERE name = 'hits'")
                con.execute("UPDATE counters SET value = value + ? WHERE name = 'saved_usd'", (cost,))
            return Completion(text=text, usage=Usage(), cost_usd=0.0, model=model, cache="hit", saved_usd=cost)

        return self._run(work, None)

    def put(self, key: str, lm: LM, completion: Completion) -> bool:
        """Store an answer; True when it was stored (not an empty reply, not larger than the whole cache)."""
        size = len(completion.text.encode("utf-8", "surrogatepass")) + _ENTRY_OVERHEAD
        if not completion.text.strip() or size > self.max_bytes:
            return False
        now = time.time()
        row = (key, endpoint_of(lm), lm.model, completion.text, completion.model or lm.model,
               completion.usage.input_tokens, completion.usage.output_tokens, completion.cost_usd, size, now, now)

        def work(con: sqlite3.Connection) -> bool:
            with _write(con):
                con.execute("INSERT INTO calls (key, endpoint, model, text, served_model, input_tokens, output_tokens,"
                            " cost_usd, size, created, last_used) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                            " ON CONFLICT(key) DO NOTHING", row)
                self._evict(con)
            return True

        return self._run(work, False)

    def stats(self) -> CacheStats:
        """Entries, bytes and lifetime savings of this cache file (all zero when it does not exist yet).

        Raises ``sqlite3.Error`` or ``OSError`` when the file cannot be read.
        """

        def work(con: sqlite3.Connection) -> tuple[int, dict[str, float]]:
            entries = con.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
            return entries, dict(con.execute("SELECT name, value FROM counters").fetchall())

        entries, counters = self._run(work, (0, {}), strict=True) if self.path.exists() else (0, {})
        return CacheStats(path=str(self.path), entries=entries, bytes=int(counters.get("bytes", 0)),
                          max_bytes=self.max_bytes, hits=int(counters.get("hits", 0)),
                          saved_usd=round(counters.get("saved_usd", 0.0), 6))

    def clear(self) -> int:
        """Remove every entry and reset the counters; returns how many entries there were.

        Raises ``sqlite3.Error`` or ``OSError`` when the file cannot be written.
        """

        def work(con: sqlite3.Connection) -> int:
            import sqlite3

            with _write(con):
                removed = con.execute("DELETE FROM calls").rowcount
                con.execute("UPDATE counters SET value = 0")
            with contextlib.suppress(sqlite3.Error):  # another process may be reading: the space is reused anyway
                con.execute("VACUUM")
            return max(removed, 0)

        return self._run(work, 0, strict=True) if self.path.exists() else 0

    def close(self) -> None:
        """Close this process's connection (reopened on the next use)."""
        with self._lock:
            con, self._con = self._con, None
            if con is not None and self._pid == os.getpid():
                con.close()

    # -- internals ----------------------------------------------------------------------------------

    def _evict(self, con: sqlite3.Connection) -> None:
        """Past the bound, drop the least recently used entries until 90 % of it is left."""
        total = con.execute("SELECT value FROM counters WHERE name = 'bytes'").fetchone()[0]
        if total <= self.max_bytes:
            return
        keep = int(self.max_bytes * _EVICT_TO)
        con.execute(
            "DELETE FROM calls WHERE key IN (SELECT key FROM (SELECT key, SUM(size) OVER "
            "(ORDER BY last_used DESC, key ROWS UNBOUNDED PRECEDING) AS newer FROM calls) WHERE newer > ?)",
            (keep,),
        )

    def _run(self, work: Callable[[sqlite3.Connection], T], fallback: T, *, strict: bool = False) -> T:
        """``work`` on this process's connection, one thread at a time. A cache that fails is switched off for
        this process with one warning, and ``fallback`` returned (``strict`` raises instead)."""
        import sqlite3  # here, not at the top: a run that caches nothing never loads it

        with self._lock:
            if self._broken and not strict:
                return fallback
            try:
                if self._con is None or self._pid != os.getpid():  # a forked child opens its own connection
                    self._con = self._open()
                    self._pid = os.getpid()
                return work(self._con)
            except (sqlite3.Error, OSError) as exc:
                if strict:
                    raise
                self._broken = True
                logger.warning("the LM cache at %s is not usable (%s); calls go uncached", self.path, exc)
                return fallback

    def _open(self) -> sqlite3.Connection:
        import sqlite3

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created private: entries hold what models said about the user's documents.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            con.execute("PRAGMA busy_timeout = 30000")
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = NORMAL")  # WAL: a power cut may lose the newest entries, never the file
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"schema version {version} is not {_SCHEMA_VERSION}; "
                                            "clear it with `recursa cache clear` or delete the file")
            if version == 0:  # every statement is idempotent: processes creating the file at once agree
                con.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version = {_SCHEMA_VERSION};COMMIT;")
        except BaseException:
            con.close()
            raise
        return con


@contextlib.contextmanager
def _write(con: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the write lock at once (waiting up to the busy timeout for other processes)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


class CachedLM:
    """An ``LM`` that answers from an ``LMCache`` when it can and asks ``lm`` otherwise.

    Every other attribute (``context_chars``, ``supports_grammar``, ``url``, ...) is ``lm``'s own, so the
    loop treats it exactly like the model it wraps.
    """

    def __init__(self, lm: LM, cache: LMCache) -> None:
        self.lm = lm
        self.cache = cache
        self.model = lm.model

    def __repr__(self) -> str:
        return f"CachedLM({self.lm!r}, {self.cache!r})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lm, name)

    async def complete(self, messages: list[Message], **params: Any) -> Completion:
        """The cached answer (``cache="hit"``, free), or ``lm``'s, stored once it has arrived (``cache="miss"``)."""
        key = self.cache.key(self.lm, messages, params)
        if key is None:
            return await self.lm.complete(messages, **params)
        hit = await anyio.to_thread.run_sync(self.cache.get, key)
        if hit is not None:
            return hit
        completion = await self.lm.complete(messages, **params)  # an error or a cancellation stores nothing
        with anyio.CancelScope(shield=True):  # the answer is whole: store it even if the caller is being cancelled
            await anyio.to_thread.run_sync(self.cache.put, key, self.lm, completion)
        return replace(completion, cache="miss")


# -- what identifies a request ----------------------------------------------------------------------


def endpoint_of(lm: LM) -> str:
    """Where ``lm`` sends requests: its URL, the local model file, or its class for other clients."""
    identify = getattr(lm, "cache_endpoint", None)
    if callable(identify):
        return str(identify())
    url = getattr(lm, "url", None)
    return url if isinstance(url, str) else f"{type(lm).__module__}.{type(lm).__qualname__}"


def sampling_params(lm: LM, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a call really uses: the client's ``sampling_defaults()``, when it has them, overridden by
    ``params``."""
    defaults = getattr(lm, "sampling_defaults", None)
    return {**(defaults() if callable(defaults) else {}), **params}


def request_identity(lm: LM, messages: list[Message], effective: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that decides a call's answer: endpoint, model, messages (their budget lines masked) and the
    effective sampling parameters (``sampling_params``)."""
    effective = dict(effective)
    model = effective.pop("model", lm.model)
    shown = [{**m, "content": _BUDGET_LINE.sub(BUDGET_LEFT + "-", m["content"])}
             if isinstance(m.get("content"), str) and BUDGET_LEFT in m["content"] else m for m in messages]
    return {"endpoint": endpoint_of(lm), "model": model, "messages": shown, "params": effective}


# -- choosing a cache -------------------------------------------------------------------------------------

_OFF = frozenset({"0", "off", "false", "no", "none"})
_DEFAULTS: dict[tuple[Path, bool], LMCache] = {}
_DEFAULTS_LOCK = threading.Lock()


def resolve_cache(cache: Any = None) -> LMCache | None:
    """The cache a run uses. ``None`` is the default: ``default_cache_dir()``, greedy calls only; the environment
    can change it (``RECURSA_CACHE=off`` disables it, ``RECURSA_CACHE=all`` caches sampled calls too).
    ``True`` is the default cache whatever the environment says; ``False`` is no cache."""
    if cache is False:
        return None
    if isinstance(cache, LMCache):
        return cache
    if isinstance(cache, str | os.PathLike):
        return LMCache(cache)
    if cache is not None and cache is not True:
        raise TypeError(f"cache must be an LMCache, a directory, True, False or None, not {type(cache).__name__}")
    setting = os.environ.get("RECURSA_CACHE", "").strip().lower()
    if cache is None and setting in _OFF:
        return None
    key = (default_cache_dir(), setting == "all")
    with _DEFAULTS_LOCK:  # one connection per process and folder, however many runs there are
        if key not in _DEFAULTS:
            _DEFAULTS[key] = LMCache(key[0], sampled=key[1])
        return _DEFAULTS[key]


def with_cache(lm: LM, cache: LMCache | None) -> LM:
    """``lm`` answering from ``cache`` (unchanged when there is none, or when it already uses one)."""
    if cache is None or isinstance(lm, CachedLM):
        return lm
    return CachedLM(lm, cache)

"""The processes a test starts: the environment a recursa subprocess gets, and finding them from /proc (a server's
REPL workers must be gone after a cancel)."""

from __future__ import annotations

import os
from pathlib import Path

SESSION_SETTINGS = ("RECURSA_CACHE", "RECURSA_CACHE_DIR")
"""Set by tests/conftest.py for the whole session (no shared cache of model calls): children keep them."""


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a ``recursa`` subprocess: the user's own ``OPENAI_*``/``RECURSA_*`` settings left out, so
    a test does not depend on them, the session's cache settings kept, so a child never uses the user's cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RECURSA_")) or k in SESSION_SETTINGS}
    return {**env, **extra}


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    children, found, todo = _children(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def workers_of(pid: int) -> list[int]:
    """REPL worker processes (``python -I -S .../sandbox/_worker``) started, directly or not, by process ``pid``."""
    return [p for p in descendants(pid) if "sandbox/_worker" in cmdline(p)]

"""What the server remembers between tool calls: open contexts (each a warm REPL) and recent traces."""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from recursa import Context, Event, Session

from ._sampling import SamplingLM

__all__ = ["ContextRegistry", "OpenContext", "TraceStore", "UnknownContext"]


class UnknownContext(KeyError):
    """No open context has this id (never loaded, closed, or the server restarted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown context"


@dataclass
class OpenContext:
    """A context loaded by ``load_context``: its documents and the warm REPL session over them."""

    context_id: str
    context: Context
    session: Session
    sampling: SamplingLM | None = None
    """The client-sampling model this context's session uses, re-bound to each ``ask``."""
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    """Questions on one context run one at a time: they share one REPL."""
    running: anyio.CancelScope | None = None
    """The scope of the question being answered now, so closing the context can stop it."""
    created: float = field(default_factory=time.time)
    questions: int = 0
    trace_ids: list[str] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        """What the context holds, for the ``recursa://context/{id}`` resource."""
        ctx = self.context
        return {
            "context_id": self.context_id,
            "documents": [
                {"name": name, "chars": len(doc), **{k: v for k, v in meta.items() if k in ("path", "bytes", "source")}}
                for name, doc, meta in zip(ctx.names, ctx.documents, ctx.metadata, strict=False)
            ],
            "chars": ctx.total_chars,
            "repl_type": "list[str]" if ctx.as_list else "str",
            "skipped": list(ctx.skipped),
            "questions": self.questions,
            "trace_ids": list(self.trace_ids),
            "created": self.created,
        }


class ContextRegistry:
    """Open contexts by id, with a cap so a client cannot pile up REPL workers without end."""

    def __init__(self, max_open: int = 16) -> None:
        self.max_open = max_open
        self._open: dict[str, OpenContext] = {}

    def __len__(self) -> int:
        return len(self._open)

    def ids(self) -> list[str]:
        return list(self._open)

    def new_id(self) -> str:
        return "ctx_" + uuid.uuid4().hex[:16]

    def check_room(self) -> None:
        if len(self._open) >= self.max_open:
            raise RuntimeError(
                f"{len(self._open)} contexts are already open (the limit is {self.max_open}); "
                f"close one with close_context first (open: {', '.join(self._open)})."
            )

    def add(self, entry: OpenContext) -> None:
        self.check_room()
        self._open[entry.context_id] = entry

    def holds(self, entry: OpenContext) -> bool:
        """Whether ``entry`` is still open (it may have been closed while a question waited for it)."""
        return self._open.get(entry.context_id) is entry

    def get(self, context_id: str) -> OpenContext:
        try:
            return self._open[context_id]
        except KeyError:
            hint = f" Open contexts: {', '.join(self._open)}." if self._open else " No context is open."
            raise UnknownContext(
                f"Unknown context_id {context_id!r}: it was never loaded, was closed, or the server restarted; "
                f"call load_context first.{hint}"
            ) from None

    async def close(self, context_id: str) -> OpenContext:
        """Forget the context, stop the question running on it (if any) and stop its REPL worker."""
        entry = self.get(context_id)
        del self._open[context_id]
        if entry.running is not None:
            entry.running.cancel()
        with anyio.CancelScope(shield=True):
            async with entry.lock:
                await entry.session.aclose()
        return entry

    async def aclose(self) -> None:
        """Close every open context and stop its REPL worker (server shutdown)."""
        for context_id in list(self._open):
            await self.close(context_id)


class TraceStore:
    """The events of the most recent runs, served as ``recursa://trace/{trace_id}``."""

    def __init__(self, max_runs: int = 64) -> None:
        self.max_runs = max_runs
        self._runs: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    def __contains__(self, trace_id: str) -> bool:
        return trace_id in self._runs

    def ids(self) -> list[str]:
        return list(self._runs)

    def put(self, trace_id: str, events: Iterable[Event]) -> None:
        self._runs[trace_id] = [event.to_dict() for event in events]
        self._runs.move_to_end(trace_id)
        while len(self._runs) > self.max_runs:
            self._runs.popitem(last=False)

    def jsonl(self, trace_id: str) -> str:
        events = self._runs[trace_id]
        return "".join(json.dumps(e, ensure_ascii=False, default=str) + "\n" for e in events)

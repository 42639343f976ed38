"""Trace events: every LM call, every code execution and the final answer, as plain data.

The loop emits them in order; ``RLM.astream`` yields them, ``Result.trace`` keeps them, and
``Trace.write_jsonl`` stores them one JSON object per line for ``recursa view``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any, ClassVar

__all__ = [
    "CodeExecuted",
    "Event",
    "IterationStarted",
    "LMCalled",
    "Notice",
    "RunFinished",
    "RunStarted",
    "SubCallsStarted",
    "TraceWriter",
    "event_from_dict",
]


@dataclass(frozen=True, kw_only=True)
class Event:
    """Common fields of every trace event."""

    type: ClassVar[str] = "event"
    run_id: str
    """The run (or sub-run, for ``rlm_query``) that emitted it."""
    depth: int = 0
    """0 for the root run, 1 for a sub-RLM started by ``rlm_query``, and so on."""
    t: float = field(default_factory=time.time)
    """Wall-clock time (Unix seconds) when it happened."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in fields(self):
            if f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if hasattr(value, "to_dict") else value
        return out


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    """A run began: its question, what the context looks like, its budget and models."""

    type: ClassVar[str] = "run_started"
    question: str
    context: dict[str, Any]
    budget: dict[str, Any]
    root_model: str
    sub_model: str
    parent_run_id: str | None = None
    sandbox: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class IterationStarted(Event):
    """The root model is about to be asked for its next step."""

    type: ClassVar[str] = "iteration_started"
    iteration: int
    remaining: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class LMCalled(Event):
    """One request to a model and its answer (or the error that ended it)."""

    type: ClassVar[str] = "lm_called"
    role: str
    """"root" for the model driving the REPL, "sub" for ``llm_query`` calls."""
    model: str
    iteration: int
    prompt: str
    """For the root: the newest message it was shown; for a sub-call: the whole prompt."""
    response: str
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class SubCallsStarted(Event):
    """Model code asked for sub-calls (``llm_query``, ``llm_query_batched`` or ``rlm_query``)."""

    type: ClassVar[str] = "sub_calls_started"
    iteration: int
    count: int
    recursive: bool = False


@dataclass(frozen=True, kw_only=True)
class CodeExecuted(Event):
    """One code block ran in the REPL."""

    type: ClassVar[str] = "code_executed"
    iteration: int
    code: str
    output: str
    error: str | None = None
    final: str | None = None
    duration_s: float = 0.0
    timed_out: bool = False
    crashed: bool = False


@dataclass(frozen=True, kw_only=True)
class Notice(Event):
    """Something the loop told the root model or decided (a refused FINAL, a budget running out)."""

    type: ClassVar[str] = "notice"
    iteration: int
    message: str


@dataclass(frozen=True, kw_only=True)
class RunFinished(Event):
    """The run ended: its answer, why it stopped and what it spent."""

    type: ClassVar[str] = "run_finished"
    answer: str | None
    stopped_reason: str
    iterations: int
    sub_calls: int
    usage: dict[str, int]
    cost_usd: float
    duration_s: float
    error: str | None = None
    grounded: bool | None = None
    """See ``Result.grounded``."""


_EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (RunStarted, IterationStarted, LMCalled, SubCallsStarted, CodeExecuted, Notice, RunFinished)
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from ``to_dict()`` output (e.g. a JSONL trace line)."""
    data = dict(data)
    cls = _EVENT_TYPES[data.pop("type")]
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


class TraceWriter:
    """Appends events to a JSONL file as they happen, so a crash keeps everything up to it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("w", encoding="utf-8")

    def write(self, event: Event) -> None:
        if self._file is not None:
            self._file.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_trace(path: str | Path) -> list[Event]:
    """Read a JSONL trace written by ``TraceWriter``."""
    with Path(path).open(encoding="utf-8") as f:
        return [event_from_dict(json.loads(line)) for line in f if line.strip()]

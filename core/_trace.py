"""Trace events (each LM call, each code execution, the answer) as plain data, and the tally every display reads.

The loop emits events in order; ``RLM.astream`` yields them, ``Result.trace`` keeps them, and a
``TraceWriter`` (``trace_path=``) stores them one JSON object per line for ``recursa view``;
``read_trace`` reads such a file back. A ``Tally`` fed the same events keeps the counts that the status
line, the MCP progress notifications, the adapters, the viewer and the benchmark show.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import cache, partial
from pathlib import Path
from typing import IO, Any, ClassVar, get_origin, get_type_hints

from ._exceptions import TraceFormatError
from ._lm import Completion, Usage

__all__ = [
    "CodeExecuted",
    "Event",
    "IterationStarted",
    "LMCalled",
    "Notice",
    "RunFinished",
    "RunStarted",
    "RunTally",
    "StepTally",
    "SubCallsStarted",
    "Tally",
    "TraceWriter",
    "event_from_dict",
    "read_trace",
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
    cached: bool = False
    """The reply came from a cache of earlier calls, not from the model (it cost nothing this time)."""

    @classmethod
    def answered(
        cls, completion: Completion, *, run_id: str, depth: int = 0, role: str, model: str, iteration: int,
        prompt: str, latency_s: float,
    ) -> LMCalled:
        """The event of a call that ``completion`` answered (``model``: the name asked for, if it names none)."""
        return cls(
            run_id=run_id, depth=depth, role=role, model=completion.model or model, iteration=iteration,
            prompt=prompt, response=completion.text, input_tokens=completion.usage.input_tokens,
            output_tokens=completion.usage.output_tokens, latency_s=latency_s, cost_usd=completion.cost_usd,
            cached=completion.cached,
        )


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


def event_from_dict(data: Mapping[str, Any]) -> Event:
    """Rebuild an event from ``to_dict()`` output (e.g. a JSONL trace line), tolerantly.

    Fields this version does not know (a newer one wrote them) are dropped; missing fields take their
    defaults, and missing required ones a blank value (``""``, ``0``, ``{}``, ``None`` where allowed).
    Raises ``TraceFormatError`` when ``data`` has no ``type`` this version knows.
    """
    cls = _EVENT_TYPES.get(data.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise TraceFormatError(f"not a trace event this version knows: type {data.get('type')!r}")
    names, blanks = _fields_of(cls)
    values = {name: data[name] for name in names if name in data}
    for name, blank in blanks.items():
        if name not in values:
            values[name] = blank()
    return cls(**values)


@cache
def _fields_of(cls: type[Event]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """An event type's field names, and a maker of a blank value for each required one."""
    hints = get_type_hints(cls)
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    return tuple(f.name for f in fields(cls)), {name: partial(_blank, hints[name]) for name in required}


def _blank(hint: Any) -> Any:
    """The empty value of a field's type: ``str()``, ``int()``, ``dict()``...; None for optional fields."""
    origin = get_origin(hint) or hint
    try:
        return origin()
    except TypeError:  # a union such as ``str | None``
        return None


def read_trace(path: str | Path) -> list[Event]:
    """Read a JSONL trace written by ``trace_path=`` (a ``TraceWriter``); what ``recursa view`` reads too.

    Lines that are not events (one cut short by a crash, an event type from a newer version) are skipped,
    as long as some lines are events; otherwise it raises ``TraceFormatError``.
    """
    events: list[Event] = []
    bad = 0
    with Path(path).open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                events.append(event_from_dict(data if isinstance(data, dict) else {}))
            except (ValueError, TypeError):  # TraceFormatError is a ValueError
                bad += 1
    if not events:
        raise TraceFormatError(f"{path} holds no trace events ({bad} unreadable lines); "
                               "write one with `recursa ask --trace FILE` or RLM.arun(..., trace_path=FILE)")
    return events


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


# -- the tally ----------------------------------------------------------------------------------------


@dataclass
class StepTally:
    """One root iteration of one run, as far as the events so far tell. Read-only outside ``Tally.update``."""

    iteration: int
    t: float | None = None
    """When it started (Unix seconds): its ``IterationStarted``, else the first event that named it."""
    usage: Usage = Usage()
    """Tokens of every model call in it (root, sub-calls, answer checks), and of its sub-runs once they end."""
    cost_usd: float = 0.0
    """US dollars, counted like ``usage``."""
    root_usage: Usage = Usage()
    """Tokens of the root model's own calls."""
    sub_calls: int = 0
    """Sub-calls its code asked for (``SubCallsStarted.count``)."""
    code_runs: int = 0
    children: list[str] = field(default_factory=list)
    """Run ids of the sub-runs (``rlm_query``) started in it."""


@dataclass
class RunTally:
    """One run (or ``rlm_query`` sub-run) of a trace and its steps. Read-only outside ``Tally.update``."""

    run_id: str
    depth: int = 0
    started: RunStarted | None = None
    """None when the trace lacks the run's start (a cut trace)."""
    finished: RunFinished | None = None
    steps: list[StepTally] = field(default_factory=list)
    """In iteration order (0: before the first root turn)."""
    parent_step: StepTally | None = None
    """The step of the parent run that started this sub-run."""
    current: StepTally | None = None
    """The step that came into the trace last."""

    def step(self, iteration: int, t: float | None = None) -> StepTally:
        """The step numbered ``iteration``, added (started at ``t``) if the trace had not named it yet."""
        for step in reversed(self.steps):
            if step.iteration == iteration:
                return step
        step = StepTally(iteration, t)
        self.steps.append(step)
        self.steps.sort(key=lambda s: s.iteration)
        self.current = step
        return step

    def seconds(self, step: StepTally) -> float | None:
        """How long ``step`` took: until the next step started, or the run finished; None when unknown."""
        i = self.steps.index(step)
        end = self.steps[i + 1].t if i + 1 < len(self.steps) else (self.finished.t if self.finished else None)
        return end - step.t if end is not None and step.t is not None else None


@dataclass
class Tally:
    """What the events of a run say so far: the one set of counts every display reads (rich's ``Task``).

    Feed it each event (``tally.update`` as ``on_event``, or ``Tally.of(result.trace)``) and read its
    fields; only ``update`` changes them. Totals cover every depth: sub-calls and ``rlm_query`` sub-runs.
    """

    iteration: int = 0
    """The top-level run's latest root iteration."""
    usage: Usage = Usage()
    cost_usd: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    """Model calls by role: ``"root"``, ``"sub"`` (``llm_query``), ``"verify"`` (answer checks)."""
    cached: int = 0
    """Model calls answered from a cache."""
    sub_calls: int = 0
    """Sub-calls the REPL code asked for (``llm_query``, ``llm_query_batched``, ``rlm_query``)."""
    code_runs: int = 0
    runs: dict[str, RunTally] = field(default_factory=dict)
    """Every run by id, in the order the trace named them."""
    top: list[RunTally] = field(default_factory=list)
    """The runs that are not sub-runs of another run in the trace."""

    @classmethod
    def of(cls, events: Iterable[Event]) -> Tally:
        tally = cls()
        for event in events:
            tally.update(event)
        return tally

    @property
    def tokens(self) -> int:
        return self.usage.total_tokens

    @property
    def runs_started(self) -> int:
        """Runs whose start is in the trace (a cut trace can name runs it has not seen start)."""
        return sum(run.started is not None for run in self.runs.values())

    def update(self, event: Event) -> None:
        """Count one event."""
        if isinstance(event, RunStarted):
            self._started(event)
            return
        run = self.runs.get(event.run_id) or self._add(RunTally(event.run_id, event.depth))
        if isinstance(event, RunFinished):
            run.finished = event
            if run.parent_step is not None:  # a sub-run's spending counts in the step that started it
                run.parent_step.usage += Usage(event.usage.get("input_tokens", 0), event.usage.get("output_tokens", 0))
                run.parent_step.cost_usd += event.cost_usd
            return
        step = run.step(int(getattr(event, "iteration", 0) or 0), event.t)
        if isinstance(event, IterationStarted):
            step.t = event.t
            if event.depth == 0:
                self.iteration = event.iteration
        elif isinstance(event, LMCalled):
            usage = Usage(event.input_tokens, event.output_tokens)
            self.usage += usage
            self.cost_usd += event.cost_usd
            self.calls[event.role] += 1
            self.cached += event.cached
            step.usage += usage
            step.cost_usd += event.cost_usd
            if event.role == "root":
                step.root_usage += usage
        elif isinstance(event, SubCallsStarted):
            self.sub_calls += event.count
            step.sub_calls += event.count
        elif isinstance(event, CodeExecuted):
            self.code_runs += 1
            step.code_runs += 1

    def _started(self, event: RunStarted) -> None:
        parent = self.runs.get(event.parent_run_id or "")
        run = self.runs.get(event.run_id)
        if run is None:
            run = self._add(RunTally(event.run_id, event.depth), top=parent is None)
        run.started, run.depth = event, event.depth
        if parent is not None:
            run.parent_step = parent.current or parent.step(0, event.t)
            run.parent_step.children.append(run.run_id)
            if run in self.top:  # its events came before its start (a shuffled trace)
                self.top.remove(run)

    def _add(self, run: RunTally, *, top: bool = True) -> RunTally:
        self.runs[run.run_id] = run
        if top:
            self.top.append(run)
        return run

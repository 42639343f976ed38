"""``recursa view``: a trace as one self-contained HTML page (no network, opens offline).

The page shows each run as a tree: root iterations with the model's reply, the code and its output,
the sub-calls made (prompt and reply), notices, sub-runs of ``rlm_query`` nested under the iteration
that started them, tokens, cost and time per step, the budget used and the final answer, plus a
search box that filters steps.

The page's HTML, CSS and JavaScript are package data (``recursa/viewer/``). The trace is grouped here
(``build_tree``) and embedded as JSON in a ``<script type="application/json">``
element, with ``<``, ``>``, ``&`` and the JavaScript line separators escaped so no text in a trace
(``</script>`` in model output, say) can end the element. The page builds the body of an iteration only
when it is opened, and lists sub-calls in pages of 200, so traces with thousands of sub-calls stay
responsive.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ._exceptions import TraceFormatError
from ._text import clip
from ._trace import (
    CodeExecuted,
    Event,
    IterationStarted,
    LMCalled,
    Notice,
    RunTally,
    StepTally,
    SubCallsStarted,
    Tally,
    event_from_dict,
    read_trace,
)

__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_SUB_PROMPT_CHARS",
    "build_tree",
    "embed_json",
    "render_html",
    "write_html",
]

MAX_FIELD_CHARS = 100_000
"""Longer text fields (a huge prompt, say) are cut in the page, saying how much; the JSONL keeps all."""
MAX_SUB_PROMPT_CHARS = 20_000
"""Sub-call prompts are mostly slices of the context and come by the thousand: they are cut shorter."""
TraceEvents = Sequence[Event | Mapping[str, Any]]
"""Events, or their ``to_dict()`` form (read tolerantly: unknown types are left out, missing fields blank)."""
_CUT = "\n[… {cut:,} more characters not shown here; see the JSONL trace]"
_CALL_FIELDS = ("model", "prompt", "response", "input_tokens", "output_tokens", "latency_s", "cost_usd", "error", "t",
                "depth")
_CODE_FIELDS = ("code", "output", "error", "final", "duration_s", "timed_out", "crashed")
_FINISHED_FIELDS = ("answer", "stopped_reason", "iterations", "sub_calls", "usage", "cost_usd", "duration_s", "error",
                    "t")


def build_tree(events: TraceEvents, *, max_field_chars: int = MAX_FIELD_CHARS) -> dict[str, Any]:
    """Group flat events into runs > iterations > (root calls, code, sub-calls, notices, child runs).

    The structure and every number come from a ``Tally``; this adds what the page shows of each event,
    long text cut.
    """
    tally = Tally()
    shown: dict[tuple[str, int], dict[str, Any]] = {}  # (run id, iteration) -> what the page shows of it

    def cut(value: Any, limit: int = max_field_chars) -> Any:
        return clip(value, limit, note=_CUT) if isinstance(value, str) and len(value) > limit else value

    def picked(event: Event, names: Sequence[str]) -> dict[str, Any]:
        return {name: cut(getattr(event, name)) for name in names}

    for event in _events(events):
        tally.update(event)
        if not hasattr(event, "iteration"):  # a run's start or end: read from the tally below
            continue
        step = shown.setdefault((event.run_id, event.iteration), _no_content())  # type: ignore[attr-defined]
        if isinstance(event, IterationStarted):
            step["remaining"] = event.remaining or {}
        elif isinstance(event, LMCalled) and event.role in ("sub", "verify"):  # verify: the answer check
            call = picked(event, _CALL_FIELDS)
            call["prompt"] = cut(call["prompt"], min(max_field_chars, MAX_SUB_PROMPT_CHARS))
            step["subs"].append(call)
        elif isinstance(event, LMCalled):
            step["roots"].append(picked(event, _CALL_FIELDS))
        elif isinstance(event, CodeExecuted):
            step["code"].append(picked(event, _CODE_FIELDS))
        elif isinstance(event, SubCallsStarted):
            step["batches"].append({"count": event.count, "recursive": event.recursive})
        elif isinstance(event, Notice):
            step["notices"].append(cut(event.message))

    def run_view(run: RunTally) -> dict[str, Any]:
        start = run.started
        return {
            "id": run.run_id, "depth": run.depth, "t": start.t if start else None,
            "question": cut(start.question) if start else "", "context": (start.context if start else None) or {},
            "budget": (start.budget if start else None) or {}, "root_model": start.root_model if start else "",
            "sub_model": start.sub_model if start else "", "sandbox": (start.sandbox if start else None) or [],
            "parent": start.parent_run_id if start else None,
            "iterations": [step_view(run, step) for step in run.steps],
            "finished": picked(run.finished, _FINISHED_FIELDS) if run.finished else None,
        }

    def step_view(run: RunTally, step: StepTally) -> dict[str, Any]:
        content = shown.get((run.run_id, step.iteration)) or _no_content()
        return {"n": step.iteration, "t": step.t, **content,
                "children": [run_view(tally.runs[child]) for child in step.children],
                "tokens": step.usage.total_tokens, "cost_usd": step.cost_usd, "seconds": run.seconds(step)}

    counts = {"events": len(events), "sub_calls": tally.calls["sub"], "code_blocks": tally.code_runs,
              "runs": tally.runs_started}
    return {"runs": [run_view(run) for run in tally.top], "counts": counts}


def _no_content() -> dict[str, Any]:
    return {"remaining": {}, "roots": [], "code": [], "subs": [], "batches": [], "notices": []}


def _events(events: TraceEvents) -> list[Event]:
    """Events as ``Event`` objects; dicts of types this version does not know are left out."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, Event):
            out.append(event)
        else:
            try:
                out.append(event_from_dict(event))
            except TraceFormatError:
                continue
    return out


def embed_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>``, ``&``, U+2028 or U+2029 left raw."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def render_html(events: TraceEvents, *, title: str = "recursa trace",
                max_field_chars: int = MAX_FIELD_CHARS) -> str:
    """The whole page as a string."""
    tree = build_tree(events, max_field_chars=max_field_chars)
    tree["title"] = title
    page, css, js = _assets()
    return (page.replace("__TITLE__", html.escape(title))
            .replace("__CSS__", css).replace("__JS__", js).replace("__DATA__", embed_json(tree)))


@cache
def _assets() -> tuple[str, str, str]:
    """The page's HTML template, stylesheet and script: package data in ``recursa/viewer/``."""
    folder = resources.files("recursa") / "viewer"
    return tuple((folder / name).read_text(encoding="utf-8") for name in ("page.html", "page.css", "page.js"))  # type: ignore[return-value]


def write_html(trace: str | Path, output: str | Path) -> str:
    """Render the trace file into ``output``; returns a short description of what it holds."""
    events = read_trace(trace)
    page = render_html(events, title=f"recursa trace · {Path(trace).name}")
    Path(output).write_text(page, encoding="utf-8")
    tally = Tally.of(events)
    return (f"{tally.runs_started} run(s), {tally.code_runs} code block(s), {tally.calls['sub']} sub-call(s), "
            f"{len(page) / 1e6:.1f} MB")

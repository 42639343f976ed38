"""The OpenAI chat wire format, both ways, without any I/O: a request body becomes an RLM job, a run's
result and events become a ``chat.completion``, its chunks, or an OpenAI-shaped error.

Kept apart from the ASGI app so every rule about what a request may ask for (which message is the
question, which text becomes context, how far a request may raise the budget) is one plain function
that tests can call directly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .._budget import Budget
from .._loop import Result
from .._trace import CodeExecuted, Event, IterationStarted, RunStarted, Tally

__all__ = [
    "BUDGET_FIELDS",
    "ChatJob",
    "HTTPProblem",
    "ProgressText",
    "capped_budget",
    "chunk",
    "completion",
    "error_body",
    "finish_reason",
    "parse_chat",
]

BUDGET_FIELDS: dict[str, type] = {
    "max_iterations": int,
    "max_depth": int,
    "max_sub_calls": int,
    "max_tokens": int,
    "max_cost_usd": float,
    "timeout_s": float,
}
"""Budget fields a request may set in ``extra_body={"recursa": {...}}``; the server's values cap them."""

RECURSA_FIELDS = frozenset({"paths", "glob", *BUDGET_FIELDS})

_FALLBACK_QUESTION = (
    "Answer the user's last message: it is too long to show here, so it is the document {name!r} in "
    "`context`; its request is usually at its start or its end."
)


class HTTPProblem(Exception):
    """A request the server answers with an OpenAI-shaped error instead of a completion."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


def error_body(message: str, *, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:  # noqa: A002
    """OpenAI's error JSON: every OpenAI client turns it into its own exception with this message."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass
class ChatJob:
    """What one chat request asks the RLM to do."""

    model: str
    """The served model name the request named."""
    question: str
    documents: list[str] = field(default_factory=list)
    """Message texts that become ``context``, in message order."""
    names: list[str] = field(default_factory=list)
    """``role[index]`` of each document, e.g. ``system[0]``, ``user[3]``."""
    paths: list[str] = field(default_factory=list)
    """Files or directories to read under the server's roots."""
    glob: str | None = None
    budget: dict[str, Any] = field(default_factory=dict)
    """Budget fields the request set (before the server caps them)."""
    stream: bool = False
    include_usage: bool = False
    """``stream_options.include_usage``: end the stream with a usage chunk, as OpenAI does."""


def parse_chat(body: Any, *, served: list[str], question_max_chars: int) -> ChatJob:
    """Read a ``/v1/chat/completions`` body; raise ``HTTPProblem`` (400, or 404 for an unknown model).

    The last user message is the question. Every other message, and a last user message longer than
    ``question_max_chars``, becomes a ``context`` document named by role and index, so pasted text of any
    size reaches the REPL and never the root model's prompt. An oversized question is replaced by its last
    paragraph when that is short, else by an instruction naming the document that holds it.
    """
    if not isinstance(body, dict):
        raise HTTPProblem(400, "The request body must be a JSON object.")
    model = body.get("model") or served[0]
    if not isinstance(model, str):
        raise HTTPProblem(400, "'model' must be a string.", param="model")
    if model not in served:
        raise HTTPProblem(404, f"The model {model!r} does not exist; this server serves {', '.join(served)}.",
                          code="model_not_found", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HTTPProblem(400, "'messages' must be a non-empty list of chat messages.", param="messages")
    if body.get("n") not in (None, 1):
        raise HTTPProblem(400, "Only n=1 is supported: each request runs one RLM.", param="n")
    texts = [(_role(m, i), _text(m, i)) for i, m in enumerate(messages)]
    asked = max((i for i, (role, _) in enumerate(texts) if role == "user"), default=None)
    if asked is None:
        raise HTTPProblem(400, "'messages' has no user message; the last one is the question.", param="messages")
    job = ChatJob(model=model, question=texts[asked][1], stream=bool(body.get("stream")))
    options = body.get("stream_options")
    job.include_usage = job.stream and isinstance(options, dict) and bool(options.get("include_usage"))
    for i, (role, text) in enumerate(texts):
        if (i != asked or len(text) > question_max_chars) and text:
            job.documents.append(text)
            job.names.append(f"{role}[{i}]")
    if len(job.question) > question_max_chars:
        tail = job.question.rstrip().rsplit("\n\n", 1)[-1].strip()
        short = tail and len(tail) <= question_max_chars
        job.question = tail if short else _FALLBACK_QUESTION.format(name=f"user[{asked}]")
    _read_extension(body.get("recursa"), job)
    if not job.question.strip():
        raise HTTPProblem(400, "The last user message is empty; it is the question.", param="messages")
    if not job.documents and not job.paths and not job.glob:
        job.documents, job.names = [texts[asked][1]], [f"user[{asked}]"]  # nothing else to read: the message itself
    return job


def _role(message: Any, index: int) -> str:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise HTTPProblem(400, f"messages[{index}] must be an object with a 'role'.", param=f"messages[{index}]")
    return message["role"]


def _text(message: dict[str, Any], index: int) -> str:
    """A message's text: a string, or the text parts of a content list (other parts are refused)."""
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise HTTPProblem(400, f"messages[{index}].content must be a string or a list of parts.",
                          param=f"messages[{index}].content")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("text", "input_text") or not isinstance(part.get("text"), str):
            raise HTTPProblem(400, f"messages[{index}] has a {kind or 'malformed'} part; recursa serve reads text "
                              "only (send files as text, or by path with extra_body={'recursa': {'paths': [...]}}).",
                              param=f"messages[{index}].content")
        parts.append(part["text"])
    return "\n".join(parts)


def _read_extension(ext: Any, job: ChatJob) -> None:
    """The ``recursa`` object a client adds with ``extra_body``: files by path and per-request budgets."""
    if ext is None:
        return
    if not isinstance(ext, dict):
        raise HTTPProblem(400, "'recursa' must be an object, e.g. {\"paths\": [\"logs/\"], \"max_iterations\": 10}.",
                          param="recursa")
    unknown = sorted(set(ext) - RECURSA_FIELDS)
    if unknown:
        raise HTTPProblem(400, f"Unknown recursa option(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(RECURSA_FIELDS))}.", param="recursa")
    paths = ext.get("paths", [])
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise HTTPProblem(400, "recursa.paths must be a list of file or directory paths.", param="recursa.paths")
    glob = ext.get("glob")
    if glob is not None and not isinstance(glob, str):
        raise HTTPProblem(400, "recursa.glob must be a string such as '**/*.py'.", param="recursa.glob")
    job.paths, job.glob = list(paths), glob
    for name, kind in BUDGET_FIELDS.items():
        value = ext.get(name)
        if value is None:
            continue
        number_ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        least = 0 if name == "max_sub_calls" else 1e-9  # max_sub_calls=0 is the REPL without sub-calls
        if not number_ok or value < least or (kind is int and value != int(value)):
            what = "a whole number" if kind is int else "a number"
            what = f"{what} >= 0" if least == 0 else f"a positive {what[2:]}"
            raise HTTPProblem(400, f"recursa.{name} must be {what}, not {value!r}.", param=f"recursa.{name}")
        job.budget[name] = kind(value)


def capped_budget(server: Budget, asked: Mapping[str, Any]) -> Budget:
    """The server's budget lowered where the request asked for less; a request can never raise it."""
    values: dict[str, Any] = {}
    for f in fields(Budget):
        mine, theirs = getattr(server, f.name), asked.get(f.name)
        values[f.name] = mine if theirs is None else (theirs if mine is None else min(mine, theirs))
    return Budget(**values)


def finish_reason(result: Result) -> str:
    """``stop`` when the model answered (checked or not), ``length`` when a budget ended the run."""
    return "stop" if result.stopped_reason in ("final", "ungrounded") else "length"


def extension(result: Result, *, documents: int) -> dict[str, Any]:
    """The ``recursa`` object beside ``choices``: how the run ended and what it spent."""
    return {
        "stopped_reason": result.stopped_reason,
        "iterations": result.iterations,
        "sub_calls": result.sub_calls,
        "cost_usd": round(result.cost_usd, 6),
        "duration_s": round(result.duration_s, 3),
        "trace_id": result.run_id,
        "grounded": result.grounded,
        "documents": documents,
        "root_model": result.model,
    }


def _usage(result: Result) -> dict[str, int]:
    u = result.usage
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens}


def completion(completion_id: str, model: str, result: Result, *, documents: int) -> dict[str, Any]:
    """A ``chat.completion`` whose assistant message is the RLM's answer and whose usage is the whole run's."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": result.answer or "", "refusal": None},
            "logprobs": None,
            "finish_reason": finish_reason(result),
        }],
        "usage": _usage(result),
        "recursa": extension(result, documents=documents),
    }


def chunk(
    completion_id: str,
    model: str,
    delta: dict[str, Any] | None = None,
    *,
    finish: str | None = None,
    result: Result | None = None,
    documents: int = 0,
    usage_only: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``: a delta, the closing chunk (``finish`` and the ``recursa`` object), or
    with ``usage_only`` the trailing usage chunk OpenAI sends for ``stream_options.include_usage``."""
    out: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
                           "model": model, "choices": []}
    if usage_only:
        assert result is not None
        out["usage"] = _usage(result)
        return out
    out["choices"] = [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
    if result is not None:
        out["recursa"] = extension(result, documents=documents)
    return out


class ProgressText:
    """What a streaming client is shown while the run works: a line when the run starts, one per root
    iteration, one per code step. Counters come from the shared run ``Tally``, not from here."""

    def __init__(self, max_iterations: int) -> None:
        self.max_iterations = max_iterations
        self.tally = Tally()

    def update(self, event: Event) -> str | None:
        self.tally.update(event)
        if event.depth != 0:
            return None
        t = self.tally
        if isinstance(event, RunStarted):
            info = event.context
            return (f"Reading {info.get('documents', 1)} document(s), {info.get('total_chars', 0):,} characters, "
                    f"with {event.root_model} writing code in a sandboxed REPL.\n")
        if isinstance(event, IterationStarted):
            return (f"\nIteration {event.iteration} of at most {self.max_iterations}: {t.sub_calls} sub-call(s), "
                    f"{t.tokens:,} tokens, ${t.cost_usd:.4f} so far.\n")
        if isinstance(event, CodeExecuted):
            first = next((line for line in event.code.splitlines() if line.strip()), "")
            lines = len(event.output.splitlines())
            how = "timed out" if event.timed_out else ("failed" if event.error else f"printed {lines} line(s)")
            return f"Ran `{_clip(first, 80)}` ({event.duration_s:.1f} s): {how}.\n"
        return None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

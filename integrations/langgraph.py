"""recursa as a LangGraph subgraph or node: hand an oversized context from any graph to an RLM.

>>> from recursa import RLM
>>> from recursa.integrations.langgraph import create_rlm_graph
>>> graph = create_rlm_graph(RLM())
>>> graph.invoke({"question": "Which host failed most?", "context": Path("logs/")})["answer"]

The graph's input state carries the question and the context; its output adds ``answer``,
``stopped_reason``, ``usage``, ``cost_usd``, the run's result (``rlm_result``) and a per-iteration
summary of its trace (``rlm_trace``). It runs on its own (``invoke``, ``ainvoke``, ``stream``,
``astream``) and as a subgraph of any ``StateGraph`` that shares those keys; ``create_rlm_node`` gives
the same step as a plain node for a graph of your own. In messages mode (``messages_key="messages"``) the
question is the last human message and the answer is appended as an ``AIMessage``.

Progress goes to ``stream_mode="custom"`` as small dicts (see ``event_payload``: ``{"source": "recursa",
"type": "iteration_started", "iteration": 2, ...}``); the models' own tokens never reach
``stream_mode="messages"``. Per-call settings go in ``config["configurable"]``: ``"recursa_budget"`` (a
``Budget`` or a dict of its fields) and ``"recursa_trace_path"`` (write a JSONL trace).

This module also re-exports ``LangChainLM``, ``create_rlm_tool`` and ``create_rlm_file_tool`` from
``recursa.integrations.langchain``. Needs ``pip install 'recursa[langgraph]'``.
"""

from __future__ import annotations

import copy
import hashlib
import re
import uuid
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

try:
    from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
    from langchain_core.runnables import RunnableConfig, RunnableLambda
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.message import add_messages
    from langgraph.graph.state import CompiledStateGraph
    from langgraph.types import Checkpointer
except ImportError:  # pragma: no cover - exercised by a test that hides the packages
    raise ImportError(
        "recursa.integrations.langgraph needs langgraph and langchain-core, which are not installed. "
        "Install them with: pip install 'recursa[langgraph]'"
    ) from None

from recursa import (
    LM,
    RLM,
    Budget,
    CodeExecuted,
    Completion,
    Context,
    LMCalled,
    Message,
    Notice,
    RecursaError,
    Result,
    SubCallsStarted,
    Usage,
)
from recursa._lm import window_chars
from recursa._text import clip
from recursa._trace import Tally

from .langchain import (
    BUDGET_CONFIG_KEY,
    TRACE_PATH_CONFIG_KEY,
    LangChainLM,
    _error_text,
    _run_options,
    _stream_writer,
    _to_context,
    create_rlm_file_tool,
    create_rlm_tool,
    event_payload,
)

__all__ = [
    "BUDGET_CONFIG_KEY",
    "REPLAY_KEY",
    "RESULT_KEY",
    "TRACE_KEY",
    "TRACE_PATH_CONFIG_KEY",
    "LangChainLM",
    "create_rlm_file_tool",
    "create_rlm_graph",
    "create_rlm_node",
    "create_rlm_tool",
    "event_payload",
    "rlm_state_schema",
]

RESULT_KEY = "rlm_result"
"""State key of ``Result.to_dict()`` plus ``fingerprint`` (of question and context) and ``replayed_calls``."""
TRACE_KEY = "rlm_trace"
"""State key of the trace summary: one small dict per root iteration (tokens, code blocks, output, sub-calls)."""
REPLAY_KEY = "rlm_replay"
"""State key of the model replies an unfinished run received, so a retry replays them instead of paying again."""
_RESULT_FIELDS = ("stopped_reason", "usage", "cost_usd")
_MEMORY_SLOTS = 8


# -- state ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Keys:
    question: str
    context: str
    answer: str
    messages: str | None


def rlm_state_schema(
    *,
    question_key: str = "question",
    context_key: str = "context",
    answer_key: str = "answer",
    messages_key: str | None = None,
) -> type:
    """The ``TypedDict`` state of ``create_rlm_graph``, to build (or subclass for) a parent graph.

    Keys: the question (str), the context (str, list of str or ``Document``, ``Path``s), the answer,
    ``stopped_reason``, ``usage`` (dict of token counts), ``cost_usd``, ``rlm_result``, ``rlm_trace``,
    ``rlm_replay`` and, in messages mode, the messages (with the ``add_messages`` reducer).
    """
    fields: dict[str, Any] = {
        question_key: str,
        context_key: Any,
        answer_key: str | None,
        "stopped_reason": str | None,
        "usage": dict[str, int] | None,
        "cost_usd": float | None,
        RESULT_KEY: dict[str, Any] | None,
        TRACE_KEY: list[dict[str, Any]] | None,
        REPLAY_KEY: dict[str, Any] | None,
    }
    if messages_key:
        fields[messages_key] = Annotated[list[AnyMessage], add_messages]
    return TypedDict("RLMState", fields, total=False)  # type: ignore[operator]


def _sub_schema(schema: type, name: str, keys: list[str]) -> type:
    hints = schema.__annotations__
    return TypedDict(name, {k: hints[k] for k in keys}, total=False)  # type: ignore[operator]


# -- replay: what an unfinished run's models answered ------------------------------------------------------

_DIGITS = re.compile(r"\d+")


def _request_key(role: str, messages: list[Message]) -> str:
    """Identify a request across attempts. Root prompts carry budget numbers (seconds left, say) that change
    from one attempt to the next, so digits in their user turns do not count; sub-call prompts count exactly."""
    digest = hashlib.sha256(role.encode())
    for m in messages:
        content = m["content"]
        if role == "root" and m["role"] == "user":
            content = _DIGITS.sub("#", content)
        digest.update(f"{m['role']}\0{content}\0".encode())
    return digest.hexdigest()[:32]


class _Recorder:
    """Keeps every reply of one attempt and serves the replies an earlier attempt already paid for."""

    def __init__(self, recorded: Mapping[str, list[dict[str, Any]]] | None) -> None:
        self.recorded = recorded or {}
        self.used: Counter[str] = Counter()
        self.calls: dict[str, list[dict[str, Any]]] = {}
        self.replayed = 0

    def wrap(self, lm: LM, role: str) -> _RecordingLM:
        return _RecordingLM(lm, role, self)


class _RecordingLM:
    def __init__(self, inner: LM, role: str, recorder: _Recorder) -> None:
        self.inner = inner
        self.role = role
        self.recorder = recorder
        self.model = inner.model
        self.context_chars = window_chars(inner)

    async def complete(self, messages: list[Message], **params: Any) -> Completion:
        rec = self.recorder
        key = _request_key(self.role, messages)
        index = rec.used[key]
        rec.used[key] += 1
        earlier = rec.recorded.get(key, [])
        if index < len(earlier):
            c = earlier[index]
            rec.replayed += 1
            completion = Completion(text=c["text"], usage=Usage(c["input_tokens"], c["output_tokens"]),
                                    cost_usd=c["cost_usd"], model=c["model"])
        else:
            completion = await self.inner.complete(messages, **params)
        rec.calls.setdefault(key, []).append({
            "text": completion.text, "input_tokens": completion.usage.input_tokens,
            "output_tokens": completion.usage.output_tokens, "cost_usd": completion.cost_usd,
            "model": completion.model,
        })
        return completion


def _fingerprint(question: str, context: Context) -> str:
    digest = hashlib.sha256(question.encode())
    digest.update(b"list" if context.as_list else b"str")
    for name, doc in zip(context.names, context.documents, strict=True):
        digest.update(name.encode() + b"\0" + hashlib.sha256(doc.encode()).digest())
    return digest.hexdigest()[:32]


# -- the node ------------------------------------------------------------------------------------------------


_SHORT = 200
"""How many characters of an output, error or notice the trace summary keeps."""


def _trace_summary(result: Result | None) -> list[dict[str, Any]]:
    """One small dict per root iteration of ``result``'s run: tokens, code blocks, output, sub-calls.

    The numbers are the run's ``Tally`` (sub-runs of ``rlm_query`` count in their parent's sub-calls); the
    texts are the last output and error, and the notices, of each step.
    """
    run = Tally.of(result.trace).runs.get(result.run_id) if result is not None else None
    if run is None:
        return []
    rows: dict[int, dict[str, Any]] = {}

    def row(iteration: int) -> dict[str, Any]:
        if iteration not in rows:
            step = run.step(iteration)
            rows[iteration] = {"iteration": iteration, "input_tokens": step.root_usage.input_tokens,
                               "output_tokens": step.root_usage.output_tokens, "code_blocks": step.code_runs,
                               "output": None, "error": None, "sub_calls": step.sub_calls}
        return rows[iteration]

    for e in result.trace:  # type: ignore[union-attr]
        if e.run_id != run.run_id:
            continue
        if isinstance(e, LMCalled) and e.role == "root":
            r = row(e.iteration)
            r["error"] = clip(e.error, _SHORT) or r["error"]
        elif isinstance(e, CodeExecuted):
            r = row(e.iteration)
            r["output"] = clip(e.output, _SHORT)
            r["error"] = clip(e.error, _SHORT, end=True) or r["error"]
        elif isinstance(e, SubCallsStarted):
            row(e.iteration)
        elif isinstance(e, Notice):
            row(e.iteration).setdefault("notices", []).append(clip(e.message, _SHORT))
    return [rows[i] for i in sorted(rows)]


@dataclass
class _Prepared:
    question: str
    update: dict[str, Any] | None = None
    """Set when there is nothing to run: a reused result, or a context that could not be loaded."""
    context: Context | None = None
    fingerprint: str | None = None
    rlm: RLM | None = None
    recorder: _Recorder | None = None
    options: dict[str, Any] = field(default_factory=dict)


class _RLMNode:
    """The graph step. ``invoke`` and ``ainvoke`` share everything but the call into the RLM."""

    def __init__(self, rlm: RLM, keys: _Keys, *, budget: Budget | None, reuse_results: bool,
                 raise_errors: bool, name: str) -> None:
        self.rlm = rlm
        self.keys = keys
        self.budget = budget
        self.reuse_results = reuse_results
        self.raise_errors = raise_errors
        self.name = name
        self._unfinished: OrderedDict[str, dict[str, list[dict[str, Any]]]] = OrderedDict()
        """Replies of recent unfinished runs by fingerprint, for retries in this process (RetryPolicy)."""

    def invoke(self, state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
        prep = self._prepare(state, config)
        if prep.update is not None:
            return prep.update
        assert prep.rlm is not None
        try:
            result = prep.rlm.run(prep.question, prep.context, **prep.options)
        except BaseException as exc:
            return self._failed(prep, exc)
        return self._finished(prep, result)

    async def ainvoke(self, state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
        prep = self._prepare(state, config)
        if prep.update is not None:
            return prep.update
        assert prep.rlm is not None
        try:
            result = await prep.rlm.arun(prep.question, prep.context, **prep.options)
        except BaseException as exc:
            return self._failed(prep, exc)
        return self._finished(prep, result)

    # -- before ----------------------------------------------------------------------------------------

    def _prepare(self, state: Mapping[str, Any], config: RunnableConfig) -> _Prepared:
        prep = _Prepared(question=self._question(state))
        writer = _stream_writer()
        if self.keys.context not in state or state[self.keys.context] is None:
            raise ValueError(f"The graph state has no {self.keys.context!r}: put the documents recursa should "
                             f"read there (a str, a list of str or Documents, Paths).")
        try:
            prep.context = _to_context(state[self.keys.context])
        except RecursaError as exc:
            prep.update = self._failed(prep, exc)
            return prep
        prep.fingerprint = _fingerprint(prep.question, prep.context)
        saved = state.get(RESULT_KEY) or {}
        finished = saved.get("fingerprint") == prep.fingerprint and saved.get("stopped_reason") == "final"
        if self.reuse_results and finished:
            if writer:
                writer({"source": "recursa", "type": "result_reused", "run_id": saved.get("run_id"), "depth": 0})
            prep.update = self._reused(state, prep, saved)
            return prep
        replay = state.get(REPLAY_KEY) or {}
        recorded = (replay.get("calls") if replay.get("fingerprint") == prep.fingerprint
                    else self._unfinished.get(prep.fingerprint))
        prep.recorder = _Recorder(recorded)
        prep.rlm = copy.copy(self.rlm)
        prep.rlm.root = prep.recorder.wrap(self.rlm.root, "root")
        prep.rlm.sub = prep.recorder.wrap(self.rlm.sub, "sub")
        prep.options = _run_options(config, writer, self.rlm, self.budget)
        return prep

    def _question(self, state: Mapping[str, Any]) -> str:
        if self.keys.messages:
            for message in reversed(state.get(self.keys.messages) or []):
                if isinstance(message, HumanMessage) and str(message.text).strip():
                    return str(message.text)
            raise ValueError(f"Messages mode takes the question from the last human message, and "
                             f"state[{self.keys.messages!r}] has none with text.")
        question = state.get(self.keys.question)
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"The graph state has no question: set state[{self.keys.question!r}] to a non-empty "
                             f"string.")
        return question

    # -- after -----------------------------------------------------------------------------------------

    def _finished(self, prep: _Prepared, result: Result) -> dict[str, Any]:
        assert prep.recorder is not None and prep.fingerprint is not None
        saved = {**result.to_dict(), "fingerprint": prep.fingerprint, "replayed_calls": prep.recorder.replayed}
        replay = None
        if result.stopped_reason == "final":
            self._unfinished.pop(prep.fingerprint, None)
        else:  # a budget stopped it: a retry with a larger budget need not pay for these replies again
            replay = self._remember(prep)
        return self._update(prep, result.answer, saved, _trace_summary(result), replay)

    def _failed(self, prep: _Prepared, exc: BaseException) -> dict[str, Any]:
        replay = self._remember(prep)
        if self.raise_errors or not isinstance(exc, RecursaError):
            raise exc
        partial: Result | None = getattr(exc, "result", None)
        saved: dict[str, Any] = partial.to_dict() if partial is not None else {
            "answer": None, "stopped_reason": "error", "iterations": 0, "sub_calls": 0,
            "usage": Usage().to_dict(), "cost_usd": 0.0, "duration_s": 0.0, "run_id": None}
        saved.update(stopped_reason="error", error=_error_text(exc), fingerprint=prep.fingerprint,
                     replayed_calls=prep.recorder.replayed if prep.recorder else 0)
        return self._update(prep, None, saved, _trace_summary(partial), replay)

    def _remember(self, prep: _Prepared) -> dict[str, Any] | None:
        if prep.recorder is None or prep.fingerprint is None or not prep.recorder.calls:
            return None
        self._unfinished[prep.fingerprint] = prep.recorder.calls
        self._unfinished.move_to_end(prep.fingerprint)
        while len(self._unfinished) > _MEMORY_SLOTS:
            self._unfinished.popitem(last=False)
        return {"fingerprint": prep.fingerprint, "calls": prep.recorder.calls}

    def _reused(self, state: Mapping[str, Any], prep: _Prepared, saved: dict[str, Any]) -> dict[str, Any]:
        update = self._update(prep, saved.get("answer"), saved, state.get(TRACE_KEY), None)
        if self.keys.messages:
            messages = state.get(self.keys.messages) or []
            last = messages[-1] if messages else None
            if isinstance(last, AIMessage) and str(last.id).startswith(f"recursa-{saved.get('run_id')}"):
                del update[self.keys.messages]  # the answer is already the last message
            else:
                update[self.keys.messages][0].id = f"recursa-{saved.get('run_id')}-{uuid.uuid4().hex[:6]}"
        return update

    def _update(self, prep: _Prepared, answer: str | None, saved: dict[str, Any],
                summary: list[dict[str, Any]] | None, replay: dict[str, Any] | None) -> dict[str, Any]:
        update: dict[str, Any] = {
            self.keys.question: prep.question,
            self.keys.answer: answer,
            **{k: saved.get(k) for k in _RESULT_FIELDS},
            RESULT_KEY: saved,
            TRACE_KEY: summary,
            REPLAY_KEY: replay,
        }
        if self.keys.messages:
            update[self.keys.messages] = [self._message(answer, saved)]
        return update

    def _message(self, answer: str | None, saved: dict[str, Any]) -> AIMessage:
        reason = saved.get("stopped_reason")
        if reason == "error":
            content = f"recursa could not answer: {saved.get('error')}"
        elif answer is None:
            content = f"recursa found no answer: its {reason} budget ran out first."
        else:
            content = answer
        usage = saved.get("usage") or {}
        return AIMessage(
            content=content, name=self.name, id=f"recursa-{saved.get('run_id') or uuid.uuid4().hex[:12]}",
            response_metadata={"recursa": {k: v for k, v in saved.items() if k != "answer"}},
            usage_metadata={"input_tokens": usage.get("input_tokens", 0),
                            "output_tokens": usage.get("output_tokens", 0),
                            "total_tokens": usage.get("total_tokens", 0)},
        )


# -- factories -------------------------------------------------------------------------------------------------


def create_rlm_node(
    rlm: RLM,
    *,
    question_key: str = "question",
    context_key: str = "context",
    answer_key: str = "answer",
    messages_key: str | None = None,
    budget: Budget | None = None,
    reuse_results: bool = True,
    raise_errors: bool = False,
    name: str = "recursa",
) -> RunnableLambda:
    """The step ``create_rlm_graph`` runs, as a runnable to ``add_node`` to a graph of your own.

    It has a sync and an async implementation, so its graph works with ``invoke`` and ``ainvoke``. It
    reads the keys of ``rlm_state_schema`` and returns an update for them. Custom stream events reach
    the parent graph's ``stream_mode="custom"`` directly (a subgraph's need ``subgraphs=True``).
    Arguments as in ``create_rlm_graph``.
    """
    node = _RLMNode(rlm, _Keys(question_key, context_key, answer_key, messages_key), budget=budget,
                    reuse_results=reuse_results, raise_errors=raise_errors, name=name)
    return RunnableLambda(node.invoke, afunc=node.ainvoke, name=name)


def create_rlm_graph(
    rlm: RLM,
    *,
    question_key: str = "question",
    context_key: str = "context",
    answer_key: str = "answer",
    messages_key: str | None = None,
    budget: Budget | None = None,
    reuse_results: bool = True,
    raise_errors: bool = False,
    checkpointer: Checkpointer = None,
    name: str = "recursa",
) -> CompiledStateGraph:
    """A compiled LangGraph graph that answers ``state[question_key]`` over ``state[context_key]``.

    Input: the question and the context (a str, a list of str, a list of LangChain ``Document``s, a
    ``Path`` or a list of ``Path``s; plain strings are text, never paths). Output: the question, the
    answer, ``stopped_reason``, ``usage`` (token counts), ``cost_usd``, ``rlm_result``
    (``Result.to_dict()`` with ``error``, ``fingerprint`` and ``replayed_calls``) and ``rlm_trace`` (one
    small dict per root iteration). The context itself is not echoed in the output.

    Use it standalone (``invoke``/``ainvoke``/``stream``/``astream``) or add it with ``add_node`` to a
    parent ``StateGraph`` that shares the keys; the parent keeps only the keys it has.

    Messages mode (``messages_key="messages"``): the question is the text of the last human message, and
    the answer is appended as an ``AIMessage`` (named ``name``, with ``usage_metadata`` and the result in
    ``response_metadata["recursa"]``), so it drops into chat graphs. The context still comes from
    ``state[context_key]``.

    Streaming: ``stream_mode="custom"`` yields small dicts per event (run started, each root iteration,
    each model call's tokens, each sub-call batch, each code block's size and error, the final result,
    or ``result_reused`` when a saved result is returned);
    from a parent graph, stream with ``subgraphs=True`` to see them. The models' tokens never reach
    ``stream_mode="messages"`` (``LangChainLM`` tags its calls ``nostream``); in messages mode the final
    ``AIMessage`` does.

    Per-call config (``config["configurable"]``): ``"recursa_budget"`` (a ``Budget``, or a dict of its
    fields applied over ``budget``, where ``None`` means unlimited) and ``"recursa_trace_path"`` (write
    the JSONL trace for ``recursa view``).

    Errors: a ``RecursaError`` (a model or endpoint failing, a context that cannot be loaded) does not
    raise; the run ends with ``stopped_reason="error"``, ``answer=None`` and the message in
    ``rlm_result["error"]`` (and, in messages mode, an ``AIMessage`` saying so), so the state and the work
    done are kept. ``raise_errors=True`` raises instead (for a ``RetryPolicy``). A state without a
    question or context raises ``ValueError``.

    Checkpointing and what is resumable (with a checkpointer and a ``thread_id``):

    - A finished run (``stopped_reason="final"``) is in the saved state. Invoking again on the thread
      with the same question and context (same text, same documents) returns it without running
      anything; ``reuse_results=False`` turns this off.
    - A run that failed or that a budget stopped leaves every model reply it received in ``rlm_replay``
      (and in memory, for retries in this process, including ``raise_errors=True`` and a ``RetryPolicy``).
      The next attempt with the same question and context replays those replies instead of calling the
      models, re-runs the code, and goes on with live calls from where the last attempt stopped: the
      tokens and dollars already spent are not spent again. ``usage``/``cost_usd`` still count the replayed
      calls (they are what the answer cost), and ``rlm_result["replayed_calls"]`` says how many there were.
    - Not resumable: the REPL itself. Its variables live in a worker process and are rebuilt by re-running
      the code. If that code is not deterministic (randomness, clocks), the replay diverges where it
      differs and the rest of the calls are live. A cancelled or killed run leaves nothing in the state
      (only the in-memory copy). Used as a subgraph, ``rlm_replay`` stays in the subgraph's state; give the
      parent an ``rlm_replay`` key too for it to be saved with the parent's checkpoints.

    Args:
        rlm: the configured RLM (models, budget, sandbox limits).
        question_key, context_key, answer_key: the state keys to read and write.
        messages_key: turn on messages mode with this key (usually ``"messages"``).
        budget: the budget of each run; default ``rlm.budget``.
        reuse_results: return a finished result from the state instead of re-running (see above).
        raise_errors: raise a failed run's error instead of recording it in the state.
        checkpointer: passed to ``compile``; a subgraph usually leaves it ``None`` to use its parent's.
        name: the compiled graph's name (and the answer message's ``name``).
    """
    keys = _Keys(question_key, context_key, answer_key, messages_key)
    state = rlm_state_schema(question_key=question_key, context_key=context_key, answer_key=answer_key,
                             messages_key=messages_key)
    inputs = [messages_key, context_key] if messages_key else [question_key, context_key]
    outputs = [k for k in state.__annotations__ if k not in (context_key, REPLAY_KEY)]
    builder = StateGraph(state, input_schema=_sub_schema(state, "RLMInput", inputs),
                         output_schema=_sub_schema(state, "RLMOutput", outputs))
    builder.add_node("rlm", create_rlm_node(
        rlm, question_key=keys.question, context_key=keys.context, answer_key=keys.answer,
        messages_key=keys.messages, budget=budget, reuse_results=reuse_results, raise_errors=raise_errors,
        name=name,
    ))
    builder.add_edge(START, "rlm")
    builder.add_edge("rlm", END)
    return builder.compile(checkpointer=checkpointer, name=name)


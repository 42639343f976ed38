"""recursa for LangChain: any chat model as recursa's root or sub model, and recursa as an agent's tool.

>>> from recursa import RLM
>>> from recursa.integrations.langchain import LangChainLM, create_rlm_tool
>>> rlm = RLM(root=LangChainLM(ChatOpenAI(model="gpt-5-mini")), sub=LangChainLM(ChatOpenAI(model="gpt-5-nano")))
>>> agent = create_agent(model, tools=[create_rlm_tool(rlm)], state_schema=StateWithContext)
>>> agent.invoke({"messages": [("user", "Which host failed most?")], "context": five_megabytes_of_logs})

``create_rlm_tool`` reads the large context from the agent's graph state (or its runtime context), so the
agent's model never sees it: not in its prompt, not in the tool-call arguments. ``create_rlm_file_tool``
takes file paths or globs as arguments instead, for agents without such state. Both return errors as a
tool error message the agent can read instead of raising.

Per-call settings go through ``config["configurable"]`` (the graph's ``config=`` argument):

- ``"recursa_budget"``: a ``Budget`` or a dict of its fields (``{"max_iterations": 5, "timeout_s": 60}``),
  applied over the budget given to the factory (or the RLM's). In a dict, ``None`` means unlimited.
- ``"recursa_trace_path"``: write the run's JSONL trace (for ``recursa view``) to this path.

Needs ``pip install 'recursa[langgraph]'`` (langchain-core, langchain and langgraph).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

try:
    from langchain_core.documents import Document
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
    from langchain_core.runnables import RunnableConfig
    from langchain_core.tools import BaseTool, StructuredTool, ToolException
    from langgraph.config import get_stream_writer
    from langgraph.constants import TAG_NOSTREAM
    from langgraph.errors import GraphBubbleUp
    from langgraph.prebuilt import ToolRuntime
    from pydantic import Field
except ImportError:  # pragma: no cover - exercised by a test that hides the packages
    raise ImportError(
        "recursa.integrations.langchain needs langchain-core, langchain and langgraph, which are not "
        "installed. Install them with: pip install 'recursa[langgraph]'"
    ) from None

from recursa import (
    RLM,
    Budget,
    CodeExecuted,
    Completion,
    Context,
    ContextError,
    Event,
    IterationStarted,
    LMCalled,
    LMError,
    Message,
    Notice,
    Price,
    RecursaError,
    Result,
    RunFinished,
    RunStarted,
    SubCallsStarted,
    Usage,
    load_context,
)
from recursa._files import AllowedRoots, load_files
from recursa._pricing import cost_of
from recursa._text import clip

__all__ = [
    "BUDGET_CONFIG_KEY",
    "TRACE_PATH_CONFIG_KEY",
    "LangChainLM",
    "create_rlm_file_tool",
    "create_rlm_tool",
    "event_payload",
]

BUDGET_CONFIG_KEY = "recursa_budget"
"""``config["configurable"]`` key for a per-call ``Budget`` (or a dict of its fields)."""
TRACE_PATH_CONFIG_KEY = "recursa_trace_path"
"""``config["configurable"]`` key for a path to write the run's JSONL trace to."""

_ROLE_TO_MESSAGE: dict[str, type[BaseMessage]] = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
_SHORT = 300
"""How many characters of free text (errors, outputs, questions) a stream event or summary keeps."""


# -- LangChain chat models as recursa LMs -------------------------------------------------------------


class LangChainLM:
    """Any LangChain chat model (``ChatOpenAI``, ``ChatAnthropic``, ``ChatOllama``, a fake) as an ``LM``.

    Usage comes from the reply's ``usage_metadata``; when a model reports none, tokens are estimated as
    characters / 4 so token budgets still hold. Cost comes from recursa's price table for the model's
    name (``prices`` overrides or extends it); unknown models cost 0.0.

    Its calls are tagged ``nostream``: inside a LangGraph graph they still show up in tracing, but their
    tokens never reach the graph's ``stream_mode="messages"``. A failing call raises ``LMError``.
    """

    def __init__(
        self,
        chat_model: BaseChatModel,
        *,
        model: str | None = None,
        prices: Mapping[str, Price] | None = None,
        context_chars: int | None = None,
    ) -> None:
        """
        Args:
            chat_model: the LangChain chat model to call.
            model: the name recursa reports and prices by; default: the chat model's ``model_name`` or ``model``.
            prices: per-model prices, US dollars per million tokens, over recursa's defaults.
            context_chars: how many characters the model can read at once, when its window is small
                (recursa shows it less REPL output and sizes sub-call prompts to match).
        """
        self.chat_model = chat_model
        self.model = model or _chat_model_name(chat_model)
        self.prices = prices
        self.context_chars = context_chars

    def __repr__(self) -> str:
        return f"LangChainLM({type(self.chat_model).__name__}, model={self.model!r})"

    async def complete(self, messages: list[Message], **params: Any) -> Completion:
        request = [_ROLE_TO_MESSAGE.get(m["role"], HumanMessage)(content=m["content"]) for m in messages]
        config: RunnableConfig = {"tags": [TAG_NOSTREAM, "recursa"], "run_name": "recursa_lm"}
        try:
            reply = await self.chat_model.ainvoke(request, config=config, **params)
        except Exception as exc:
            raise LMError(f"The LangChain model {self.model!r} failed: {type(exc).__name__}: {exc}",
                          model=self.model) from exc
        text = str(reply.text) if isinstance(reply, BaseMessage) else str(reply)
        meta = getattr(reply, "usage_metadata", None)
        if meta:
            usage = Usage(int(meta.get("input_tokens", 0)), int(meta.get("output_tokens", 0)))
        else:
            usage = Usage.estimate(messages, text)
        served = (getattr(reply, "response_metadata", None) or {}).get("model_name") or self.model
        return Completion(text=text, usage=usage, cost_usd=cost_of(served, usage, self.prices), model=served)


def _chat_model_name(chat_model: BaseChatModel) -> str:
    for attr in ("model_name", "model", "model_id"):
        value = getattr(chat_model, attr, None)
        if isinstance(value, str) and value:
            return value
    return getattr(chat_model, "_llm_type", None) or type(chat_model).__name__


# -- helpers shared with recursa.integrations.langgraph (private to the two) --------------------------


def _to_context(value: Any) -> Context:
    """Turn a graph-state value into a recursa ``Context``.

    Accepts what ``recursa.load_context`` does (str, bytes, list of str, ``Path``, list of ``Path``,
    ``Context``) plus a LangChain ``Document`` or a list of them: each becomes one document of
    ``context``, its ``metadata["source"]`` its name and its metadata ``context_metadata``.
    """
    if isinstance(value, Document):
        value = [value]
    if isinstance(value, list | tuple) and value and any(isinstance(v, Document) for v in value):
        if not all(isinstance(v, Document | str) for v in value):
            raise ContextError("A context list with Documents may hold only Documents and strings.")
        docs = [v if isinstance(v, Document) else Document(page_content=v) for v in value]
        names = [str(d.metadata.get("source") or d.id or f"doc{i}") for i, d in enumerate(docs)]
        metadata = [_plain(d.metadata) for d in docs]
        return load_context(Context([d.page_content for d in docs], names, metadata, as_list=True))
    if value is None:
        raise ContextError("There is no context: the state's context value is None.")
    return load_context(value)


def _plain(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as plain JSON values (the REPL worker receives it as JSON)."""
    return json.loads(json.dumps(dict(metadata), default=str))


_BUDGET_FIELDS = frozenset(f.name for f in dataclasses.fields(Budget))


def _budget_from_config(config: RunnableConfig | None, base: Budget) -> Budget:
    """The budget of one call: ``config["configurable"]["recursa_budget"]`` over ``base``.

    A ``Budget`` replaces ``base``; a dict changes the fields it names (``None`` meaning unlimited).
    """
    value = ((config or {}).get("configurable") or {}).get(BUDGET_CONFIG_KEY)
    if value is None:
        return base
    if isinstance(value, Budget):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - _BUDGET_FIELDS
        if unknown:
            raise ValueError(f"Unknown {BUDGET_CONFIG_KEY} field(s) {sorted(unknown)} in config['configurable']; "
                             f"use {sorted(_BUDGET_FIELDS)}.")
        return dataclasses.replace(base, **value)
    raise TypeError(f"config['configurable'][{BUDGET_CONFIG_KEY!r}] must be a recursa.Budget or a dict, "
                    f"not {type(value).__name__}.")


def _trace_path_from_config(config: RunnableConfig | None) -> str | None:
    value = ((config or {}).get("configurable") or {}).get(TRACE_PATH_CONFIG_KEY)
    return os.fspath(value) if value is not None else None


def _run_options(config: RunnableConfig | None, writer: Callable[[Any], None] | None, rlm: RLM,
                 budget: Budget | None) -> dict[str, Any]:
    """``RLM.run`` keyword arguments for one call: the config's budget and trace path, events to ``writer``."""
    return {
        "budget": _budget_from_config(config, budget or rlm.budget),
        "trace_path": _trace_path_from_config(config),
        "on_event": _event_forwarder(writer),
    }


def event_payload(event: Event) -> dict[str, Any]:
    """A trace event as a small dict for ``stream_mode="custom"``: no context, prompts or code output.

    Every payload has ``"source": "recursa"``, ``"type"`` (the event type: ``run_started``,
    ``iteration_started``, ``lm_called``, ``sub_calls_started``, ``code_executed``, ``notice``,
    ``run_finished``), ``run_id`` and ``depth``; free text is cut to a few hundred characters.
    """
    out: dict[str, Any] = {"source": "recursa", "type": event.type, "run_id": event.run_id, "depth": event.depth}
    if isinstance(event, RunStarted):
        ctx = event.context
        out.update(question=clip(event.question, _SHORT), root_model=event.root_model, sub_model=event.sub_model,
                   context={k: ctx.get(k) for k in ("type", "total_chars", "documents")},
                   parent_run_id=event.parent_run_id)
    elif isinstance(event, IterationStarted):
        out.update(iteration=event.iteration, remaining=event.remaining)
    elif isinstance(event, LMCalled):
        out.update(role=event.role, model=event.model, iteration=event.iteration, input_tokens=event.input_tokens,
                   output_tokens=event.output_tokens, latency_s=round(event.latency_s, 3),
                   cost_usd=event.cost_usd, error=clip(event.error, _SHORT))
    elif isinstance(event, SubCallsStarted):
        out.update(iteration=event.iteration, count=event.count, recursive=event.recursive)
    elif isinstance(event, CodeExecuted):
        out.update(iteration=event.iteration, code_chars=len(event.code), output_chars=len(event.output),
                   error=clip(event.error, _SHORT, end=True), final=event.final is not None,
                   duration_s=round(event.duration_s, 3), timed_out=event.timed_out, crashed=event.crashed)
    elif isinstance(event, Notice):
        out.update(iteration=event.iteration, message=clip(event.message, _SHORT))
    elif isinstance(event, RunFinished):
        out.update(answer=clip(event.answer, 1000), stopped_reason=event.stopped_reason,
                   iterations=event.iterations, sub_calls=event.sub_calls, usage=event.usage,
                   cost_usd=event.cost_usd, duration_s=round(event.duration_s, 3), error=clip(event.error, _SHORT))
    return out


def _stream_writer() -> Callable[[Any], None] | None:
    """LangGraph's custom-stream writer of the running node or tool, or None outside a graph."""
    try:
        return get_stream_writer()
    except (RuntimeError, KeyError, AttributeError):
        return None


def _event_forwarder(writer: Callable[[Any], None] | None) -> Callable[[Event], None] | None:
    """An ``on_event`` callback that sends each event's small payload to ``writer``."""
    if writer is None:
        return None

    def forward(event: Event) -> None:
        writer(event_payload(event))

    return forward


def _error_text(exc: BaseException) -> str:
    """One line an agent (or a user) can act on."""
    if isinstance(exc, RecursaError):
        return f"{type(exc).__name__}: {exc}"
    return f"unexpected {type(exc).__name__}: {exc}"


# -- tools ----------------------------------------------------------------------------------------------

_QUESTION = "One precise, self-contained question about the documents; include every detail it depends on."
_PATHS = "Files, directories or glob patterns (like 'logs/*.log') to read; relative paths start at the base directory."

_STATE_TOOL_DESCRIPTION = (
    "Answer a question about the large document(s) held in the conversation state, which are far too big "
    "for you to read. A recursive language model explores the text with code and sub-queries and returns "
    "the answer. Ask one precise question at a time; you never need to pass the documents themselves."
)
_FILE_TOOL_DESCRIPTION = (
    "Answer a question about files too large for you to read: give the question and the file paths, "
    "directories or glob patterns. A recursive language model explores the text with code and "
    "sub-queries and returns the answer."
)


def _tool_content(result: Result) -> str:
    if result.stopped_reason == "final":
        return result.answer or ""
    if result.answer:
        return (f"{result.answer}\n\n(recursa stopped early: its {result.stopped_reason} budget ran out, so this "
                "is its best guess from what it had seen.)")
    return f"recursa found no answer: its {result.stopped_reason} budget ran out first."


class _Asker:
    """What both tools share: budget and trace settings from config, events to the stream, errors as text."""

    def __init__(self, rlm: RLM, budget: Budget | None) -> None:
        self.rlm = rlm
        self.budget = budget

    def options(self, config: RunnableConfig | None, writer: Callable[[Any], None] | None) -> dict[str, Any]:
        return _run_options(config, writer, self.rlm, self.budget)

    def run(self, question: str, context: Any, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        try:
            result = self.rlm.run(question, context, **options)
        except GraphBubbleUp:
            raise
        except Exception as exc:
            raise ToolException(f"recursa could not answer: {_error_text(exc)}") from exc
        return _tool_content(result), result.to_dict()

    async def arun(self, question: str, context: Any, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        try:
            result = await self.rlm.arun(question, context, **options)
        except GraphBubbleUp:
            raise
        except Exception as exc:
            raise ToolException(f"recursa could not answer: {_error_text(exc)}") from exc
        return _tool_content(result), result.to_dict()


def _context_from_runtime(runtime: ToolRuntime, key: str) -> Context:
    state = runtime.state
    value = state.get(key) if isinstance(state, Mapping) else getattr(state, key, None)
    if value is None and runtime.context is not None:
        ctx = runtime.context
        value = ctx.get(key) if isinstance(ctx, Mapping) else getattr(ctx, key, None)
    if value is None:
        raise ToolException(
            f"recursa could not answer: there is no {key!r} in the graph state or runtime context to read. "
            f"Put the documents under {key!r} in the agent's state (or runtime context) before asking."
        )
    try:
        return _to_context(value)
    except RecursaError as exc:
        raise ToolException(f"recursa could not answer: {_error_text(exc)}") from exc


def create_rlm_tool(
    rlm: RLM,
    *,
    context_key: str = "context",
    name: str = "query_large_context",
    description: str | None = None,
    budget: Budget | None = None,
) -> BaseTool:
    """A tool that answers the agent's question over the large context in its graph state.

    The tool's only argument is ``question``. The context is read when the tool runs, from
    ``state[context_key]`` of the graph that runs the tool (``langchain.agents.create_agent`` with a
    ``state_schema`` that has the key, a prebuilt ReAct agent, or any ``ToolNode``), or else from the
    runtime context (``agent.invoke(..., context={context_key: ...})``), so it never enters the agent
    model's prompt or the tool-call arguments. It may be anything ``recursa.load_context`` takes (a string,
    a list of strings, paths) or LangChain ``Document``s (each one document, its ``metadata["source"]`` its name).

    The reply's text is the answer (with a note when a budget cut the run short); its ``artifact`` holds
    ``Result.to_dict()``. Progress goes to ``stream_mode="custom"`` as small dicts (``event_payload``).
    Errors (a failing model, a missing or empty context) come back as a tool message with
    ``status="error"`` the agent can read; they never end the graph.

    Args:
        rlm: the configured RLM (models, budget, sandbox limits).
        context_key: the state (or runtime-context) key holding the context.
        name: the tool's name, as the agent's model sees it.
        description: what the agent's model is told the tool does.
        budget: the budget of each call; ``config["configurable"]["recursa_budget"]`` overrides it.
    """
    asker = _Asker(rlm, budget)

    def query(question: Annotated[str, Field(description=_QUESTION)],
              runtime: ToolRuntime[Any, Any]) -> tuple[str, dict]:
        context = _context_from_runtime(runtime, context_key)
        return asker.run(question, context, asker.options(runtime.config, runtime.stream_writer))

    async def aquery(question: Annotated[str, Field(description=_QUESTION)],
                     runtime: ToolRuntime[Any, Any]) -> tuple[str, dict]:
        context = _context_from_runtime(runtime, context_key)
        return await asker.arun(question, context, asker.options(runtime.config, runtime.stream_writer))

    return StructuredTool.from_function(
        func=query, coroutine=aquery, name=name, description=description or _STATE_TOOL_DESCRIPTION,
        response_format="content_and_artifact", handle_tool_error=True,
    )


def create_rlm_file_tool(
    rlm: RLM,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    name: str = "query_files",
    description: str | None = None,
    budget: Budget | None = None,
) -> BaseTool:
    """A tool that answers a question over files the agent names: ``question`` plus ``paths``.

    For agents whose state does not hold the documents. ``paths`` are files, directories or globs;
    relative ones start at ``base_dir``, and nothing outside ``base_dir`` (default: the working directory
    when the tool was made) is ever opened: each path is resolved, symlinks and ``..`` included, and
    checked before a byte is read, by the same loader as ``recursa ask --context`` (ignore files,
    virtualenvs and caches skipped, size limits). The agent's model chooses the paths, so pass
    ``base_dir="/"`` only if it may read any file. Results, progress events and errors behave as in
    ``create_rlm_tool``. It also works outside a graph (``tool.invoke({...})``).
    """
    asker = _Asker(rlm, budget)
    base = Path(base_dir if base_dir is not None else os.getcwd()).resolve()
    roots = AllowedRoots([base], hint="name a path inside it, or make the tool with a wider base_dir")

    def load(paths: Sequence[str]) -> Context:
        if isinstance(paths, str):
            paths = [paths]
        if not paths:
            raise ToolException("recursa could not answer: give at least one path, directory or glob in `paths`.")
        try:
            return load_context(load_files(paths, roots=roots, base=base))
        except RecursaError as exc:
            raise ToolException(f"recursa could not answer: {_error_text(exc)}") from exc

    def query(question: Annotated[str, Field(description=_QUESTION)],
              paths: Annotated[list[str], Field(description=_PATHS)],
              config: RunnableConfig) -> tuple[str, dict]:
        return asker.run(question, load(paths), asker.options(config, _stream_writer()))

    async def aquery(question: Annotated[str, Field(description=_QUESTION)],
                     paths: Annotated[list[str], Field(description=_PATHS)],
                     config: RunnableConfig) -> tuple[str, dict]:
        return await asker.arun(question, load(paths), asker.options(config, _stream_writer()))

    return StructuredTool.from_function(
        func=query, coroutine=aquery, name=name, description=description or _FILE_TOOL_DESCRIPTION,
        response_format="content_and_artifact", handle_tool_error=True,
    )

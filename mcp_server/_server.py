"""The MCP server's tools and resources, and the state behind them: ``create_server`` builds it, ``serve`` runs it.

Tools take the context by reference (paths under the allowed roots), run the RLM loop and return the
answer with what it spent. ``load_context``/``ask`` keep one REPL warm across questions.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import anyio
from pydantic import BaseModel, Field
from recursa import LM, RLM, Budget, Event, IterationStarted, RecursaError, RunStarted
from recursa import Context as RecursaContext
from recursa._defaults import uses_local_model
from recursa._trace import Tally

from ._paths import AllowedRoots, Limits, PathError, gather_context, server_roots
from ._registry import ContextRegistry, OpenContext, TraceStore, UnknownContext
from ._sampling import SamplingLM, SamplingUnavailable, check_sampling
from ._sdk import (
    Context,
    ResourceNotFoundError,
    Server,
    ToolError,
    call_quietly,
    can_send_request,
    client_capabilities,
    run_streamable_http,
    types,
)

__all__ = [
    "AnswerResult",
    "AskResult",
    "ClosedContext",
    "LoadedContext",
    "RLMFactory",
    "RunResult",
    "create_server",
    "serve",
]

logger = logging.getLogger("recursa.mcp_server")

RLMFactory = Callable[[LM, LM], RLM]
"""Builds the ``RLM`` for one run or one open context from the root and sub model the server chose."""

INSTRUCTIONS = """\
recursa answers questions over text far larger than your context window: whole repositories, long \
logs, document dumps. Pass the files by path (never paste their contents): rlm_answer(question, \
paths=[...], glob=...) reads them on the server, a model explores them with code in a sandboxed \
REPL, and you get the answer back. For several questions over the same files, call load_context once \
and then ask(context_id, question) repeatedly: the REPL and its variables stay warm between \
questions. Close it with close_context when done. Paths must lie under the server's allowed roots.\
"""

PATHS_DESC = (
    "Files or directories to read, absolute or relative to an allowed root (the server's working "
    "directory unless configured). Directories are read recursively the way ripgrep searches them: .gitignore "
    "and .ignore rules apply, and version control, virtualenvs, node_modules, build outputs and caches are skipped."
)
GLOB_DESC = "Only read files matching this pattern inside the directories, e.g. '**/*.py' or '*.log'. " \
    "With no paths it searches every allowed root."
TEXT_DESC = "Inline text to use as (part of) the context, for small texts only; pass bigger ones as paths."
COST_DESC = "Stop spending after this many US dollars (root and sub-model calls together)."
ITER_DESC = "Most root-model turns for this question (default 30)."
SKIPPED_DESC = (
    "Files and directories left out, each with its reason (ignored, virtualenv, binary, symlink out of the "
    "allowed directories, ...); the full list is in the trace and, for load_context, in its context manifest."
)


# -- tool results ---------------------------------------------------------------------------------


class RunResult(BaseModel):
    """What one question produced and spent."""

    answer: str | None = Field(description="The answer; null when the run stopped without one.")
    stopped_reason: str = Field(
        description="'final' when the model answered; otherwise the budget that stopped it: 'max_iterations', "
        "'max_sub_calls', 'max_tokens', 'max_cost_usd' or 'timeout' (the answer is then a best guess)."
    )
    iterations: int = Field(description="Root-model turns taken.")
    sub_calls: int = Field(description="Sub-model calls made from the REPL.")
    tokens: int = Field(description="Tokens spent, input and output, root and sub calls together.")
    cost_usd: float = Field(description="US dollars spent (0 when prices are unknown or the model is local).")
    trace_id: str = Field(description="Read the full trace as the resource recursa://trace/{trace_id}.")
    duration_s: float = Field(description="Wall-clock seconds.")


class AnswerResult(RunResult):
    """The answer of one rlm_answer call and what it spent."""

    documents: int = Field(description="Documents (files, plus inline text) the context held.")
    skipped: list[str] = Field(default_factory=list, description=SKIPPED_DESC)


class AskResult(RunResult):
    """The answer of one ask call and what it spent."""

    context_id: str
    question_number: int = Field(description="1 for the first question on this context, 2 for the next, ...")


class LoadedContext(BaseModel):
    """A context opened by load_context."""

    context_id: str = Field(description="Pass this to ask and close_context.")
    documents: int = Field(description="Number of documents (files, plus inline text).")
    chars: int = Field(description="Characters in all documents together.")
    preview: str = Field(description="The start of the first document.")
    names: list[str] = Field(description="Document names (paths relative to their root), at most the first 200.")
    skipped: list[str] = Field(default_factory=list, description=SKIPPED_DESC)


class ClosedContext(BaseModel):
    """A context closed by close_context."""

    context_id: str
    closed: bool
    questions: int = Field(description="Questions that were asked on it.")


# -- progress -------------------------------------------------------------------------------------


class _Progress:
    """Turns core events into MCP progress notifications: one when the run starts, one per root iteration.

    The counts come from a ``Tally`` fed the events in order, so each message says what was spent by then.
    """

    def __init__(self, max_iterations: int) -> None:
        self.total = float(max_iterations)
        self.tally = Tally()

    def update(self, event: Event) -> tuple[float, str] | None:
        tally = self.tally
        tally.update(event)
        if isinstance(event, RunStarted) and event.depth == 0:
            chars = event.context.get("total_chars", 0)
            docs = event.context.get("documents", 1)
            return 0.0, f"Started: {docs} document(s), {chars:,} characters; root model {event.root_model}."
        if isinstance(event, IterationStarted) and event.depth == 0:
            return float(event.iteration), (
                f"Iteration {event.iteration} of at most {int(self.total)}: {tally.sub_calls} sub-call(s), "
                f"{tally.tokens:,} tokens, ${tally.cost_usd:.4f} so far."
            )
        return None


# -- the server -----------------------------------------------------------------------------------


class _Recursa:
    """The state behind the tools: configuration, models, open contexts and traces."""

    def __init__(
        self,
        *,
        roots: AllowedRoots,
        limits: Limits,
        rlm_factory: RLMFactory,
        make_models: Callable[[], tuple[LM, LM]],
        use_client_sampling: bool,
        use_client_roots: bool,
        max_open_contexts: int,
    ) -> None:
        self.roots = roots
        self.limits = limits
        self.rlm_factory = rlm_factory
        self._make_models = make_models
        self._models: tuple[LM, LM] | None = None
        self._models_lock = threading.Lock()
        self.use_client_sampling = use_client_sampling
        self.use_client_roots = use_client_roots
        self.contexts = ContextRegistry(max_open_contexts)
        self.traces = TraceStore()

    # -- models, roots, context -------------------------------------------------------------------

    async def models(self, ctx: Context) -> tuple[LM, LM]:
        if self.use_client_sampling:
            lm = SamplingLM(require_sampling(ctx))
            return lm, lm
        try:
            return await anyio.to_thread.run_sync(self._build_models)
        except Exception as exc:  # model construction failing (missing key, local model not installed)
            raise ToolError(
                f"No model is available ({exc}). Set OPENAI_API_KEY or OPENAI_BASE_URL (and RECURSA_MODEL) in "
                "the server's environment, install the local model, or start the server with --sampling."
            ) from None

    def _build_models(self) -> tuple[LM, LM]:
        with self._models_lock:
            if self._models is None:
                self._models = self._make_models()
            return self._models

    def prefetch_models(self) -> None:
        """Build the models in the background at startup, so the first call does not wait for the client
        library's imports; a failure is reported by the first tool call instead."""
        if self.use_client_sampling or self._models is not None:
            return

        def build() -> None:
            try:
                self._build_models()
            except Exception:
                logger.debug("building the models failed; the first tool call will say why", exc_info=True)

        threading.Thread(target=build, name="recursa-models", daemon=True).start()

    async def allowed_roots(self, ctx: Context) -> AllowedRoots:
        if not self.use_client_roots:
            return self.roots
        extra = await _client_roots(ctx)
        return self.roots + extra if extra else self.roots

    async def load(self, ctx: Context, paths: Sequence[str], glob: str | None, text: str | None) -> RecursaContext:
        roots = await self.allowed_roots(ctx)
        try:
            return await anyio.to_thread.run_sync(
                lambda: gather_context(roots, paths=paths, glob=glob, text=text, limits=self.limits)
            )
        except PathError as exc:
            raise ToolError(str(exc)) from None

    @staticmethod
    def budget_for(rlm: RLM, max_cost_usd: float | None, max_iterations: int | None) -> Budget:
        """The RLM's budget with what the tool call asked for on top."""
        return rlm.budget.with_overrides(max_cost_usd=max_cost_usd, max_iterations=max_iterations)

    # -- running --------------------------------------------------------------------------------

    async def run(
        self, ctx: Context, budget: Budget, start: Callable[[Callable[[Event], None]], Awaitable[Any]]
    ) -> Any:
        """Run one question, forwarding progress to the client and keeping the trace.

        ``start(emit)`` runs the question with ``emit`` as its event callback. A failed run becomes a
        tool error; a cancelled one stops here (the core kills its REPL worker) and keeps its partial trace.
        """
        progress = _Progress(budget.max_iterations)
        events: list[Event] = []
        send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=math.inf)

        def emit(event: Event) -> None:
            events.append(event)
            try:
                send.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the forwarder is gone (the call was cancelled); the trace still gets the event

        async def forward() -> None:
            async with receive:
                async for event in receive:
                    update = progress.update(event)
                    if update is not None:
                        try:
                            await ctx.report_progress(update[0], progress.total, update[1])
                        except Exception:  # a client that went away must not end the run
                            logger.debug("progress notification failed", exc_info=True)

        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(forward)
                try:
                    result = await start(emit)
                except Exception as exc:  # re-raised below, outside the task group's ExceptionGroup
                    failure = exc
                finally:
                    send.close()
        finally:
            self._keep_trace(events)
        if isinstance(failure, RecursaError):
            trace_id = _trace_id(events)
            where = f" The trace so far is recursa://trace/{trace_id}." if trace_id else ""
            raise ToolError(f"The run failed: {failure}{where}") from None
        if failure is not None:
            raise failure
        return result

    def _keep_trace(self, events: list[Event]) -> None:
        trace_id = _trace_id(events)
        if trace_id is not None:
            self.traces.put(trace_id, events)


def _trace_id(events: list[Event]) -> str | None:
    return next((e.run_id for e in events if isinstance(e, RunStarted) and e.depth == 0), None)


def _run_fields(result: Any) -> dict[str, Any]:
    return {
        "answer": result.answer,
        "stopped_reason": result.stopped_reason,
        "iterations": result.iterations,
        "sub_calls": result.sub_calls,
        "tokens": result.usage.total_tokens,
        "cost_usd": round(result.cost_usd, 6),
        "trace_id": result.run_id,
        "duration_s": round(result.duration_s, 3),
    }


def require_sampling(ctx: Context) -> Context:
    """``ctx`` when its client can run sampling requests now; otherwise a tool error saying what to do."""
    try:
        check_sampling(ctx)
    except SamplingUnavailable as exc:
        raise ToolError(str(exc)) from None
    return ctx


async def _client_roots(ctx: Context) -> list[Path]:
    """The client's MCP roots as local directories; none when it offers no roots or cannot be asked now."""
    caps = client_capabilities(ctx)
    if caps is None or caps.roots is None or not can_send_request(ctx):
        return []
    try:
        with anyio.fail_after(10):
            result = await call_quietly(lambda: ctx.session.list_roots())
    except Exception as exc:  # a client that fails roots/list simply contributes no roots
        logger.warning("roots/list failed: %s", exc)
        return []
    found = []
    for root in result.roots:
        parsed = urlparse(str(root.uri))
        if parsed.scheme == "file":
            path = Path(url2pathname(parsed.path))
            if path.is_dir():
                found.append(path)
    return found


def create_server(
    *,
    roots: Sequence[str | os.PathLike[str]] | None = None,
    root: LM | None = None,
    sub: LM | None = None,
    model: str | None = None,
    sub_model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    use_client_sampling: bool = False,
    rlm_factory: RLMFactory | None = None,
    budget: Budget | None = None,
    limits: Limits | None = None,
    use_client_roots: bool = True,
    max_open_contexts: int = 16,
    name: str = "recursa",
    log_level: str = "WARNING",
) -> Any:
    """Build the recursa MCP server (an ``MCPServer``; ``FastMCP`` on mcp 1.x) without running it.

    Args:
        roots: directories tools may read under (default: the working directory). The client's MCP
            roots are added where it offers them, unless ``use_client_roots=False``.
        root, sub: models to use; by default they are built from ``model``/``sub_model``/``base_url``/
            ``api_key`` and the environment exactly as ``recursa ask`` does, on the first tool call.
        use_client_sampling: send root and sub calls to the client's own model (MCP sampling).
        rlm_factory: ``(root, sub) -> RLM``, to configure the RLM (limits, prompts) or inject one in tests.
        budget: default budget of each question (tool calls may set cost and iterations); ignored when
            ``rlm_factory`` is given, whose RLM's budget is used instead.
        limits: how much one call may load (inline text size, files, bytes).
    """
    allowed = server_roots(roots or [Path.cwd()])
    base_budget = budget or Budget()

    def default_models() -> tuple[LM, LM]:
        if root is not None:
            return root, sub or root
        from recursa._defaults import make_models

        return make_models(model, sub_model, base_url, api_key)

    def default_factory(root_lm: LM, sub_lm: LM) -> RLM:
        return RLM(root_lm, sub_lm, budget=base_budget)

    state = _Recursa(
        roots=allowed,
        limits=limits or Limits(),
        rlm_factory=rlm_factory or default_factory,
        make_models=default_models,
        use_client_sampling=use_client_sampling,
        use_client_roots=use_client_roots,
        max_open_contexts=max_open_contexts,
    )

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[dict[str, Any]]:
        if root is None and not uses_local_model(model or os.environ.get("RECURSA_MODEL"), base_url, api_key):
            state.prefetch_models()  # an endpoint client is cheap; the local model is loaded on first use only
        try:
            yield {}
        finally:
            await state.contexts.aclose()

    server = Server(name, instructions=INSTRUCTIONS, lifespan=lifespan, log_level=log_level)
    server.recursa = state  # type: ignore[attr-defined]  # for tests and embedding applications

    read_only = types.ToolAnnotations(read_only_hint=True, open_world_hint=True)

    @server.tool(title="Answer a question over large files", annotations=read_only)
    async def rlm_answer(
        question: Annotated[str, Field(description="The question to answer about the files or text.")],
        ctx: Context,
        paths: Annotated[list[str], Field(description=PATHS_DESC)] = [],  # noqa: B006 - copied by pydantic
        glob: Annotated[str | None, Field(description=GLOB_DESC)] = None,
        text: Annotated[str | None, Field(description=TEXT_DESC)] = None,
        max_cost_usd: Annotated[float | None, Field(gt=0, description=COST_DESC)] = None,
        max_iterations: Annotated[int | None, Field(ge=1, le=200, description=ITER_DESC)] = None,
    ) -> AnswerResult:
        """Answer a question over files far larger than your context window (a repository, logs, documents).

        The files are read on the server; a model explores them with Python in a sandboxed REPL and
        calls sub-models on the pieces, then returns the answer. Pass paths, not contents. Progress is
        reported once per iteration. For several questions over the same files use load_context + ask.
        """
        root_lm, sub_lm = await state.models(ctx)
        context = await state.load(ctx, paths, glob, text)
        rlm = state.rlm_factory(root_lm, sub_lm)
        budget = state.budget_for(rlm, max_cost_usd, max_iterations)
        result = await state.run(ctx, budget, lambda emit: rlm.arun(question, context, budget=budget, on_event=emit))
        return AnswerResult(**_run_fields(result), documents=len(context.documents), skipped=list(context.skipped))

    @server.tool(title="Load files for several questions", annotations=read_only)
    async def load_context(
        ctx: Context,
        paths: Annotated[list[str], Field(description=PATHS_DESC)] = [],  # noqa: B006 - copied by pydantic
        glob: Annotated[str | None, Field(description=GLOB_DESC)] = None,
        text: Annotated[str | None, Field(description=TEXT_DESC)] = None,
    ) -> LoadedContext:
        """Load files into a warm REPL for several questions; returns a context_id for ask and close_context.

        Variables the model creates while answering one question are still there for the next, so
        follow-up questions reuse earlier work. Close the context when done: each holds a worker process.
        """
        try:
            state.contexts.check_room()
        except RuntimeError as exc:
            raise ToolError(str(exc)) from None
        sampling: SamplingLM | None = None
        if state.use_client_sampling:
            require_sampling(ctx)
            root_lm = sub_lm = sampling = SamplingLM()  # bound to each ask's tool call in turn
        else:
            root_lm, sub_lm = await state.models(ctx)
        context = await state.load(ctx, paths, glob, text)
        session = state.rlm_factory(root_lm, sub_lm).session(context)
        try:
            await session.__aenter__()
        except RecursaError as exc:
            raise ToolError(f"Could not start the REPL: {exc}") from None
        entry = OpenContext(state.contexts.new_id(), context, session, sampling=sampling)
        state.contexts.add(entry)
        first = context.documents[0]
        return LoadedContext(
            context_id=entry.context_id, documents=len(context.documents), chars=context.total_chars,
            preview=first[:500], names=context.names[:200], skipped=list(context.skipped),
        )

    @server.tool(title="Ask about a loaded context", annotations=read_only)
    async def ask(
        context_id: Annotated[str, Field(description="The id load_context returned.")],
        question: Annotated[str, Field(description="The question to answer about the loaded context.")],
        ctx: Context,
        max_cost_usd: Annotated[float | None, Field(gt=0, description=COST_DESC)] = None,
        max_iterations: Annotated[int | None, Field(ge=1, le=200, description=ITER_DESC)] = None,
    ) -> AskResult:
        """Answer a question over a context opened with load_context, reusing the REPL's variables.

        Questions on one context run one at a time. The model sees what earlier questions computed
        (their variables are still defined), so follow-ups can build on them.
        """
        try:
            entry = state.contexts.get(context_id)
        except UnknownContext as exc:
            raise ToolError(str(exc)) from None
        if entry.sampling is not None:
            require_sampling(ctx)
        budget = state.budget_for(entry.session.rlm, max_cost_usd, max_iterations)
        async with entry.lock:
            if not state.contexts.holds(entry):
                raise ToolError(f"Context {context_id!r} was closed while this question waited for it.")
            entry.questions += 1
            number = entry.questions

            async def start(emit: Callable[[Event], None]) -> Any:
                if entry.sampling is None:
                    return await entry.session.ask(question, budget=budget, on_event=emit)
                with entry.sampling.bind(ctx):
                    return await entry.session.ask(question, budget=budget, on_event=emit)

            with anyio.CancelScope() as scope:
                entry.running = scope
                try:
                    result = await state.run(ctx, budget, start)
                finally:
                    entry.running = None
            if scope.cancelled_caught:
                raise ToolError(f"Context {context_id!r} was closed while this question was being answered.")
            entry.trace_ids.append(result.run_id)
        return AskResult(**_run_fields(result), context_id=context_id, question_number=number)

    closing = types.ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)

    @server.tool(title="Close a loaded context", annotations=closing)
    async def close_context(
        context_id: Annotated[str, Field(description="The id load_context returned.")],
    ) -> ClosedContext:
        """Close a context opened with load_context: a question running on it stops, its REPL worker stops
        and its variables are gone."""
        try:
            entry = await state.contexts.close(context_id)
        except UnknownContext as exc:
            raise ToolError(str(exc)) from None
        return ClosedContext(context_id=context_id, closed=True, questions=entry.questions)

    @server.resource(
        "recursa://trace/{trace_id}", name="trace", mime_type="application/x-ndjson",
        description="Every event of one run (LM calls, code run, sub-calls, the answer), one JSON object per line.",
    )
    def trace(trace_id: str) -> str:
        if trace_id not in state.traces:
            raise ResourceNotFoundError(
                f"No trace {trace_id!r}: the server keeps the last {state.traces.max_runs} runs since it started."
            )
        return state.traces.jsonl(trace_id)

    @server.resource(
        "recursa://context/{context_id}", name="context_manifest", mime_type="application/json",
        description="What an open context holds: its documents (sizes, paths), what was skipped and why, "
        "the questions asked, their traces.",
    )
    def context_manifest(context_id: str) -> str:
        try:
            entry = state.contexts.get(context_id)
        except UnknownContext as exc:
            raise ResourceNotFoundError(str(exc)) from None
        manifest = entry.manifest()
        if entry.context.manifest is not None:  # what the loader read and left out, with reasons and counts
            manifest["files"] = entry.context.manifest.to_dict()
        return json.dumps(manifest, ensure_ascii=False, indent=2)

    return server


def serve(
    *,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    roots: list[str] | None = None,
    model: str | LM | None = None,
    sub_model: str | LM | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    use_client_sampling: bool = False,
    **options: Any,
) -> None:
    """Run the recursa MCP server until the client disconnects (stdio) or the process is stopped (HTTP).

    ``transport`` is ``"stdio"`` (what Claude Desktop, Claude Code and IDEs start) or ``"http"``
    (streamable HTTP at ``http://HOST:PORT/mcp``). ``model``/``sub_model`` are model names (as for
    ``recursa ask``) or ``LM`` objects. Other keyword arguments go to ``create_server``.
    """
    if not isinstance(model, str | None):
        options.setdefault("root", model)
        model = None
    if not isinstance(sub_model, str | None):
        options.setdefault("sub", sub_model)
        sub_model = None
    server = create_server(
        roots=roots, model=model, sub_model=sub_model, base_url=base_url, api_key=api_key,
        use_client_sampling=use_client_sampling, **options,
    )
    if not roots and Path.cwd() == Path(Path.cwd().anchor):
        print(f"recursa: no --root given, so tools may read anything under {Path.cwd()} (the working directory); "
              "pass --root DIR to limit them.", file=sys.stderr)
    if transport == "stdio":
        server.run("stdio")
    elif transport in ("http", "streamable-http"):
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"recursa: serving on {host}:{port} without authentication: anyone who can reach it can read "
                  "files under the allowed roots and spend your model budget.", file=sys.stderr)
        print(f"recursa: MCP server on http://{host}:{port}/mcp (allowed roots: "
              f"{server.recursa.roots.describe()})", file=sys.stderr)
        run_streamable_http(server, host=host, port=port)
    else:
        raise ValueError(f"Unknown transport {transport!r}; use 'stdio' or 'http'.")


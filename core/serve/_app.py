"""The ASGI app behind ``recursa serve``: OpenAI's chat API in front of the RLM loop.

Routes: ``POST /v1/chat/completions`` (JSON or Server-Sent Events), ``GET /v1/models``,
``GET /v1/models/{id}``, ``GET /v1/traces/{id}`` (a run's JSONL trace) and ``GET /healthz``. Each request
is one run with its own REPL worker; nothing survives between requests except recent traces, so replicas
behind a load balancer need no shared state. A client that hangs up cancels its run and its worker.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from hmac import compare_digest
from pathlib import Path
from typing import Any, TypeVar

import anyio

try:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "recursa serve needs 'starlette' and 'uvicorn', which are not installed. "
        "Install them with: pip install 'recursa[serve]'"
    ) from None

from .._budget import Budget
from .._context import Context
from .._exceptions import (
    ContextError,
    ContextTooLargeError,
    LMError,
    LMTimeoutError,
    PathNotAllowedError,
    RecursaError,
)
from .._files import AllowedRoots, LoadLimits, load_files
from .._lm import LM
from .._loop import RLM, Result
from .._trace import Event, RunStarted
from ._chat import (
    ChatJob,
    HTTPProblem,
    ProgressText,
    capped_budget,
    chunk,
    completion,
    error_body,
    finish_reason,
    parse_chat,
)

__all__ = ["ServeConfig", "create_app"]

logger = logging.getLogger("recursa.serve")

T = TypeVar("T")
ROOT_HINT = "start recursa serve with --root for that directory to allow it"
_TRACE_ID = re.compile(r"[0-9a-f]{1,64}")
SHUTDOWN_DRAIN_S = 10.0
"""At shutdown, how long to wait for cancelled runs to stop their REPL workers."""


@dataclass(frozen=True)
class ServeConfig:
    """How the server answers: who may call it, how much it runs at once, and the most a request may spend."""

    name: str = "recursa"
    """The model name clients ask for (``model="recursa"``); ``GET /v1/models`` lists it."""
    token: str | None = None
    """Bearer token every ``/v1`` request must carry (``api_key=`` in OpenAI clients); None: no check."""
    roots: Sequence[str] = ()
    """Directories requests may read files under (``extra_body={"recursa": {"paths": [...]}}``); none: no files."""
    budget: Budget = field(default_factory=Budget)
    """Each run's budget; a request may lower any field, never raise it."""
    max_concurrent_runs: int = 4
    """Runs in flight at once (each holds a REPL worker and its context in memory)."""
    max_queued: int = 0
    """Requests that wait for a free run slot; past running + queued, requests get 429 with ``Retry-After``."""
    max_request_bytes: int = 64 * 2**20
    """Largest request body; bigger ones get 413 (pass big files by path under a root instead)."""
    question_max_chars: int = 4_000
    """A last user message longer than this is context, not the question shown to the root model."""
    concurrency: int = 8
    """Model requests one run keeps in flight at once (``llm_query_batched``)."""
    keep_traces: int = 100
    """Recent runs whose traces ``GET /v1/traces/{id}`` serves from memory."""
    trace_dir: str | None = None
    """Also write every trace here as ``{id}.jsonl`` (a shared volume lets any replica serve any trace)."""
    timeout_grace_s: float = 30.0
    """How long past its ``timeout_s`` a run may take for its last answer turn before it is cut off with 504."""

    def __post_init__(self) -> None:
        if self.max_concurrent_runs < 1:
            raise ValueError(f"max_concurrent_runs must be at least 1, not {self.max_concurrent_runs}")
        if self.max_queued < 0:
            raise ValueError(f"max_queued must be 0 or more, not {self.max_queued}")


# -- run slots -------------------------------------------------------------------------------------


class _Slots:
    """At most ``limit`` runs at once and ``max_queued`` waiting; the rest are refused at once with 429."""

    def __init__(self, limit: int, max_queued: int) -> None:
        self.limit = limit
        self.max_queued = max_queued
        self.reserved = 0
        """Requests holding or waiting for a slot."""
        self.running = 0
        self._semaphore = anyio.Semaphore(limit)
        self._durations: deque[float] = deque(maxlen=32)

    def reserve(self) -> _Ticket:
        if self.reserved >= self.limit + self.max_queued:
            wait = self.retry_after()
            queue = f" and {self.max_queued} queued" if self.max_queued else ""
            raise HTTPProblem(
                429, f"All {self.limit} run slots are busy{queue} (--max-concurrent-runs); retry in {wait} s.",
                type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": str(wait)},
            )
        self.reserved += 1
        return _Ticket(self)

    def retry_after(self) -> int:
        """Whole seconds until a slot is likely free: the mean length of recent runs (1 s before any ran)."""
        if not self._durations:
            return 1
        return max(1, math.ceil(sum(self._durations) / len(self._durations)))


class _Ticket:
    """One request's place: wait for a slot with ``async with ticket.running()``; ``close()`` gives the place up."""

    def __init__(self, slots: _Slots) -> None:
        self._slots = slots
        self._closed = False

    async def __aenter__(self) -> None:
        await self._slots._semaphore.acquire()
        self._slots.running += 1
        self._started = time.monotonic()

    async def __aexit__(self, *exc_info: object) -> None:
        self._slots.running -= 1
        self._slots._durations.append(time.monotonic() - self._started)
        self._slots._semaphore.release()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._slots.reserved -= 1


# -- traces ----------------------------------------------------------------------------------------


class _Traces:
    """The events of recent runs (live while a run goes on), and optionally a directory of JSONL files."""

    def __init__(self, keep: int, directory: str | None) -> None:
        self.keep = keep
        self.directory = Path(directory) if directory else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._runs: OrderedDict[str, list[Event]] = OrderedDict()

    def watch(self, run_id: str, events: list[Event]) -> None:
        self._runs[run_id] = events
        while len(self._runs) > self.keep:
            self._runs.popitem(last=False)

    def save(self, run_id: str, events: list[Event]) -> None:
        if self.directory is not None:
            try:
                (self.directory / f"{run_id}.jsonl").write_text(_jsonl(events), encoding="utf-8")
            except OSError as exc:
                logger.warning("could not write the trace of run %s: %s", run_id, exc)

    def jsonl(self, run_id: str) -> str | None:
        if run_id in self._runs:
            return _jsonl(self._runs[run_id])
        if self.directory is not None and _TRACE_ID.fullmatch(run_id):
            path = self.directory / f"{run_id}.jsonl"
            if path.is_file():
                return path.read_text(encoding="utf-8")
        return None


def _jsonl(events: list[Event]) -> str:
    return "".join(json.dumps(e.to_dict(), ensure_ascii=False, default=str) + "\n" for e in list(events))


# -- running one request ---------------------------------------------------------------------------


class _Server:
    """Configuration, the RLM, run slots and traces: what every request shares."""

    def __init__(self, rlm: RLM, config: ServeConfig) -> None:
        self.rlm = rlm
        self.config = config
        self.roots = AllowedRoots(config.roots, hint=ROOT_HINT) if config.roots else None
        self.slots = _Slots(config.max_concurrent_runs, config.max_queued)
        self.traces = _Traces(config.keep_traces, config.trace_dir)
        self.started = int(time.time())
        self.active = 0
        """Runs started and not yet cleaned up (their worker may still be stopping)."""

    async def drain(self, timeout_s: float) -> None:
        """At shutdown, after the ASGI server cancelled the requests: wait until every run has stopped its
        worker, so the process does not exit (uvicorn re-raises SIGTERM) and leave one behind."""
        with anyio.move_on_after(timeout_s):
            while self.active:
                await anyio.sleep(0.02)
        if self.active:
            logger.warning("%d run(s) still stopping at shutdown", self.active)

    def check_paths(self, job: ChatJob) -> None:
        """Refuse paths outside the roots (403) or missing (400) before anything runs, so a streaming client
        gets the status code, not an error event after a 200. Nothing is read here."""
        if not (job.paths or job.glob):
            return
        if self.roots is None:
            raise HTTPProblem(403, "This server reads no files: it was started without --root. Send the text in "
                              "the messages, or restart it with --root DIR.", code="path_not_allowed",
                              param="recursa.paths")
        for path in job.paths:
            try:
                self.roots.locate(path)
            except ContextError as exc:
                raise _problem_for(exc, []) from None

    def context_for(self, job: ChatJob) -> Context:
        """The run's context: message documents, then files read under the roots by the core loader."""
        docs, names = list(job.documents), list(job.names)
        metadata: list[dict[str, Any]] = [{"source": "message", "name": n} for n in names]
        manifest = None
        if job.paths or job.glob:
            self.check_paths(job)
            assert self.roots is not None
            specs = job.paths or [str(p) for p in self.roots.paths]
            loaded = load_files(specs, roots=self.roots, include=[job.glob] if job.glob else (), limits=LoadLimits())
            docs, names, metadata = docs + loaded.documents, names + loaded.names, metadata + loaded.metadata
            manifest = loaded.manifest
            if not loaded.documents:
                detail = f" ({manifest.skipped_text()})" if manifest is not None and manifest.skipped else ""
                raise HTTPProblem(400, f"No text to read under the paths given{detail}.", param="recursa.paths")
        return Context(docs, names, metadata, as_list=len(docs) > 1 or bool(job.paths or job.glob), manifest=manifest)

    async def execute(self, job: ChatJob, budget: Budget, ticket: _Ticket, emit: Callable[[Event], None]) -> Result:
        """Wait for a slot, load the context, run; every failure becomes an ``HTTPProblem``."""
        events: list[Event] = []
        run_id: list[str] = []

        def record(event: Event) -> None:
            events.append(event)
            if isinstance(event, RunStarted) and event.depth == 0:
                run_id.append(event.run_id)
                self.traces.watch(event.run_id, events)
            emit(event)

        self.active += 1
        try:
            async with ticket:
                try:
                    context = await anyio.to_thread.run_sync(partial(self.context_for, job))
                    deadline = budget.timeout_s + self.config.timeout_grace_s if budget.timeout_s else math.inf
                    with anyio.fail_after(deadline):
                        result = await self.rlm.arun(job.question, context, budget=budget, on_event=record)
                except TimeoutError:
                    raise _problem_for_timeout(budget, run_id) from None
                except RecursaError as exc:
                    raise _problem_for(exc, run_id) from None
                except HTTPProblem:
                    raise
                except Exception as exc:  # a bug: the client gets a 500 that says so, the log the traceback
                    logger.exception("run %s failed", run_id[0] if run_id else "(not started)")
                    raise HTTPProblem(500, f"Internal error: {type(exc).__name__}: {exc}.{_trace_hint(run_id)}",
                                      type="server_error") from None
        finally:
            self.active -= 1
            ticket.close()
            if run_id:
                self.traces.save(run_id[0], events)
        if result.answer is None and result.stopped_reason == "timeout":
            raise _problem_for_timeout(budget, run_id)
        return result


def _documents(result: Result) -> int:
    """How many documents the run's context held, as its ``RunStarted`` event recorded."""
    started = next((e for e in result.trace if isinstance(e, RunStarted) and e.depth == 0), None)
    return int(started.context.get("documents", 1)) if started is not None else 0


def _trace_hint(run_id: list[str]) -> str:
    return f" The trace so far: GET /v1/traces/{run_id[0]}." if run_id else ""


def _problem_for_timeout(budget: Budget, run_id: list[str]) -> HTTPProblem:
    return HTTPProblem(504, f"The run timed out after {budget.timeout_s:g} s without an answer; ask with a larger "
                       f"recursa.timeout_s (up to the server's) or a narrower question.{_trace_hint(run_id)}",
                       type="timeout", code="run_timeout")


def _problem_for(exc: RecursaError, run_id: list[str]) -> HTTPProblem:
    """The status a failed run answers with: the client's fault (4xx), the upstream's (502/504) or ours (500)."""
    hint = _trace_hint(run_id)
    if isinstance(exc, ContextTooLargeError):
        return HTTPProblem(413, str(exc), code="context_too_large", param="recursa.paths")
    if isinstance(exc, PathNotAllowedError):
        return HTTPProblem(403, str(exc), code="path_not_allowed", param="recursa.paths")
    if isinstance(exc, ContextError):
        return HTTPProblem(400, str(exc), param="recursa.paths")
    if isinstance(exc, LMTimeoutError):
        return HTTPProblem(504, f"The upstream model timed out: {exc}.{hint}", type="timeout", code="upstream_timeout")
    if isinstance(exc, LMError):
        return HTTPProblem(502, f"The upstream model failed: {exc}.{hint}", type="upstream_error",
                           code="upstream_error")
    return HTTPProblem(500, f"The run failed: {exc}.{hint}", type="server_error")


async def _until_disconnect(receive: Receive, work: Callable[[], Awaitable[T]]) -> tuple[T | None, bool]:
    """Run ``work`` until it ends or the client hangs up (then it is cancelled). Returns its value and whether
    the client left. Exceptions from ``work`` propagate unchanged."""
    outcome: list[Any] = []

    async def keep(tg: anyio.abc.TaskGroup) -> None:
        try:
            outcome.append(await work())
        except Exception as exc:  # re-raised below, outside the task group's ExceptionGroup
            outcome.append(exc)
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(keep, tg)
        await _wait_for_disconnect(receive)
        tg.cancel_scope.cancel()
    if not outcome:
        return None, True
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0], False


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# -- request bodies and auth -----------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit``. A refused body is still read (and dropped) up to a few times
    the limit, so the client gets the 413 instead of a connection reset while it is still sending."""
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else None
    parts: list[bytes] = []
    received = 0
    if size is None or size <= 4 * limit:
        async for part in request.stream():
            received += len(part)
            if received <= limit:
                parts.append(part)
            elif received > 4 * limit:
                break
    if received > limit or (size is not None and size > limit):
        total = max(received, size or 0)
        raise HTTPProblem(413, f"The request body is {total:,} bytes, over this server's limit of {limit:,} "
                          "(--max-request-mb). Pass large files by path instead: start the server with --root DIR "
                          "and send extra_body={\"recursa\": {\"paths\": [\"...\"]}}.", code="request_too_large")
    return b"".join(parts)


class _BearerAuth:
    """Pure-ASGI check of ``Authorization: Bearer <token>`` on everything but ``/healthz``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/healthz":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        what = "no" if not given else "a wrong"
        problem = HTTPProblem(401, f"The request has {what} bearer token; pass the server's token as the API key "
                              "(Authorization: Bearer <token>).", code="invalid_api_key",
                              headers={"WWW-Authenticate": "Bearer"})
        request = Request(scope, receive)
        try:  # a small body is read first, so the client can read the answer instead of a reset
            await _read_body(request, 2**20)
        except (HTTPProblem, ClientDisconnect):
            pass
        await _problem_response(problem)(scope, receive, send)


def _problem_response(problem: HTTPProblem) -> JSONResponse:
    return JSONResponse(problem.body(), status_code=problem.status, headers=problem.headers or None)


# -- streaming ---------------------------------------------------------------------------------------


class _EventStream:
    """``stream=true``: the run as Server-Sent Events in OpenAI's chunk format.

    Progress goes out as ``delta.reasoning_content`` (what reasoning models send; Open WebUI shows it as a
    collapsible thinking block, other clients ignore it), then the answer as ``delta.content``, a closing chunk
    with ``finish_reason`` and the ``recursa`` object, the usage chunk when asked for, and ``[DONE]``. A
    comment line every ``keepalive_s`` keeps proxies from closing a quiet stream.
    """

    keepalive_s = 15.0

    def __init__(self, server: _Server, job: ChatJob, budget: Budget, ticket: _Ticket) -> None:
        self.server = server
        self.job = job
        self.budget = budget
        self.ticket = ticket
        self.id = f"chatcmpl-{uuid.uuid4().hex}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
            ]})
            _, left = await _until_disconnect(receive, partial(self._stream, send))
            if not left:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while we wrote
            pass
        finally:
            self.ticket.close()

    async def _stream(self, send: Send) -> None:
        job, name = self.job, self.server.config.name

        async def data(payload: Any) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
            await send({"type": "http.response.body", "body": f"data: {text}\n\n".encode(), "more_body": True})

        await data(chunk(self.id, name, {"role": "assistant", "content": ""}))
        progress = ProgressText(self.budget.max_iterations)
        to_client, from_run = anyio.create_memory_object_stream[str](max_buffer_size=math.inf)
        outcome: list[Result | HTTPProblem] = []

        def emit(event: Event) -> None:
            text = progress.update(event)
            if text:
                try:
                    to_client.send_nowait(text)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass  # the client is gone and the run is being cancelled

        async def run() -> None:
            try:
                outcome.append(await self.server.execute(job, self.budget, self.ticket, emit))
            except HTTPProblem as problem:
                outcome.append(problem)
            finally:
                to_client.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            async with from_run:
                while True:
                    with anyio.move_on_after(self.keepalive_s) as idle:
                        try:
                            text = await from_run.receive()
                        except anyio.EndOfStream:
                            break
                    if idle.cancelled_caught:
                        await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
                    else:
                        await data(chunk(self.id, name, {"reasoning_content": text}))
        result = outcome[0]
        if isinstance(result, HTTPProblem):
            await data(result.body())
        else:
            await data(chunk(self.id, name, {"content": result.answer or ""}))
            await data(chunk(self.id, name, finish=finish_reason(result), result=result, documents=_documents(result)))
            if job.include_usage:
                await data(chunk(self.id, name, result=result, usage_only=True))
        await data("[DONE]")


# -- the app -------------------------------------------------------------------------------------------


def create_app(root: LM, sub: LM | None = None, *, config: ServeConfig | None = None) -> Starlette:
    """The ASGI app serving ``root`` (and ``sub`` for ``llm_query``) as one OpenAI-compatible RLM model.

    Run it with any ASGI server (``uvicorn.run(create_app(...))``); ``recursa.serve.serve`` does that and
    also refuses a public address without a token.
    """
    config = config or ServeConfig()
    server = _Server(RLM(root, sub, budget=config.budget, concurrency=config.concurrency), config)

    async def chat_completions(request: Request) -> Response:
        try:
            raw = await _read_body(request, config.max_request_bytes)
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise HTTPProblem(400, f"The request body is not valid JSON: {exc}.") from None
            job = parse_chat(body, served=[config.name], question_max_chars=config.question_max_chars)
            budget = capped_budget(config.budget, job.budget)
            await anyio.to_thread.run_sync(partial(server.check_paths, job))
            ticket = server.slots.reserve()
        except HTTPProblem as problem:
            return _problem_response(problem)
        except ClientDisconnect:
            return Response(status_code=499)
        if job.stream:
            return _EventStream(server, job, budget, ticket)  # type: ignore[return-value]  # an ASGI response
        try:
            result, left = await _until_disconnect(
                request.receive, partial(server.execute, job, budget, ticket, lambda event: None))
        except HTTPProblem as problem:
            return _problem_response(problem)
        finally:
            ticket.close()
        if left or result is None:
            return Response(status_code=499)  # nobody reads it: the client closed the connection
        body = completion(f"chatcmpl-{uuid.uuid4().hex}", config.name, result, documents=_documents(result))
        return JSONResponse(body, headers={"X-Recursa-Trace-Id": result.run_id})

    def model_entry() -> dict[str, Any]:
        return {"id": config.name, "object": "model", "created": server.started, "owned_by": "recursa"}

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_entry()]})

    async def get_model(request: Request) -> Response:
        if request.path_params["model"] != config.name:
            return _problem_response(HTTPProblem(404, f"The model {request.path_params['model']!r} does not exist; "
                                                 f"this server serves {config.name}.", code="model_not_found"))
        return JSONResponse(model_entry())

    async def get_trace(request: Request) -> Response:
        trace_id = request.path_params["trace_id"]
        text = server.traces.jsonl(trace_id)
        if text is None:
            return _problem_response(HTTPProblem(
                404, f"No trace {trace_id!r}: this server keeps the last {config.keep_traces} runs since it started"
                + (" and those in its --trace-dir." if config.trace_dir else "."), code="trace_not_found"))
        return Response(text, media_type="application/x-ndjson")

    async def healthz(request: Request) -> Response:
        slots = server.slots
        return JSONResponse({"status": "ok", "running": slots.running, "queued": slots.reserved - slots.running,
                             "max_concurrent_runs": slots.limit, "max_queued": slots.max_queued})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse(error_body(f"{request.method} {request.url.path}: {exc.detail}",
                                       type="invalid_request_error"), status_code=exc.status_code)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await server.drain(SHUTDOWN_DRAIN_S)

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", get_model, methods=["GET"]),
            Route("/v1/traces/{trace_id}", get_trace, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.recursa = server
    if config.token:
        app.add_middleware(_BearerAuth, token=config.token)
    return app

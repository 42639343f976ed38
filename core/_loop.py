"""The RLM loop: the root model writes code, the REPL runs it, sub-models answer what the code asks.

``RLM`` holds configuration; each question becomes a ``_Run`` that owns one REPL sandbox (or borrows
a session's) and follows the paper's steps: prompt, code, execute, FINAL?
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ._answer_kind import answer_kind, host_count, host_total, list_values, total_code
from ._budget import Budget, Spend, SubCallsRefused
from ._cache import LMCache, resolve_cache, with_cache
from ._context import Context
from ._exceptions import RecursaError
from ._files import load_context
from ._grounding import (
    Grounding,
    agrees,
    check_grounding,
    count_doubt,
    extraction_prompt,
    is_bare_value,
    is_form_count,
    lookalike,
    missing_words,
    names_not_in,
    read_off_key_lines,
    reads_a_definition,
    supporting_lines,
    uncovered_lines,
    whole_value,
)
from ._lm import LM, Message, Usage, supports_grammar, window_chars
from ._parsing import CODE_GRAMMAR, STEP_GRAMMAR, FinalAnswer, find_code_blocks, find_final, text_outside_code
from ._prompts import PromptTemplates
from ._text import clip
from ._trace import (
    CodeExecuted,
    Event,
    IterationStarted,
    LMCalled,
    Notice,
    RunFinished,
    RunStarted,
    SubCallsStarted,
    TraceWriter,
)
from ._transcript import Transcript, format_result
from .sandbox import ExecResult, ReplSandbox, SandboxLimits, SubCallRequest
from .sandbox._repl_tools import SearchReport, read_search

__all__ = ["RLM", "Result", "RunStream", "Session"]

Emit = Callable[[Event], None]


@dataclass(kw_only=True)
class Result:
    """What a run produced and spent. ``trace`` holds every event, sub-runs included."""

    answer: str | None
    stopped_reason: str
    """"final" when the model answered; otherwise the budget that stopped it ("max_iterations",
    "max_sub_calls", "max_tokens", "max_cost_usd", "timeout") or "error"."""
    iterations: int
    sub_calls: int
    usage: Usage
    cost_usd: float
    duration_s: float
    run_id: str
    trace: list[Event] = field(default_factory=list, repr=False)
    error: str | None = None
    grounded: bool | None = None
    """Whether the answer's values appear in what the code printed or stored: True, False (the loop doubts the
    answer; ``stopped_reason`` is then "ungrounded" unless a budget stopped the run) or None (not checked, or
    nothing to check, e.g. "not found")."""
    model: str = ""
    """The root model that gave the answer."""
    cache_hits: int = 0
    """Model calls answered from the LM cache: free, and not counted against any budget."""
    cache_misses: int = 0
    """Cacheable calls the cache did not hold (the model answered; the answer is stored now)."""
    saved_usd: float = 0.0
    """What the cache hits cost when they were first made."""

    def to_dict(self, *, include_trace: bool = False) -> dict[str, Any]:
        out = {
            "answer": self.answer,
            "stopped_reason": self.stopped_reason,
            "iterations": self.iterations,
            "sub_calls": self.sub_calls,
            "usage": self.usage.to_dict(),
            "cost_usd": round(self.cost_usd, 6),
            "duration_s": round(self.duration_s, 3),
            "run_id": self.run_id,
            "error": self.error,
            "grounded": self.grounded,
            "model": self.model,
            "cache": {"hits": self.cache_hits, "misses": self.cache_misses, "saved_usd": round(self.saved_usd, 6)},
        }
        if include_trace:
            out["trace"] = [e.to_dict() for e in self.trace]
        return out


class RLM:
    """A Recursive Language Model: answers questions over contexts far larger than any model's window.

    >>> rlm = RLM(root=OpenAIChat("gpt-5-mini"), sub=OpenAIChat("gpt-5-nano"))
    >>> rlm.run("Which user bought the most?", context=Path("logs/")).answer
    """

    def __init__(
        self,
        root: LM | None = None,
        sub: LM | None = None,
        *,
        budget: Budget | None = None,
        concurrency: int = 8,
        max_output_chars: int | None = None,
        sub_calls: bool = True,
        require_look: bool = True,
        sandbox_limits: SandboxLimits | None = None,
        prompts: PromptTemplates | None = None,
        sub_context_chars: int | None = None,
        history: str | None = None,
        first_search: bool | None = None,
        verify_answers: bool | None = None,
        cache: LMCache | str | os.PathLike[str] | bool | None = None,
    ) -> None:
        """
        Args:
            root: the model that writes code; default: the configured endpoint or the local model.
            sub: the model ``llm_query`` calls; default: the root model.
            budget: limits of each run (iterations, depth, sub-calls, tokens, cost, time).
            concurrency: LM requests in flight at once, shared by every depth of recursion.
            max_output_chars: how much of a code block's output the root model is shown (default 20,000,
                less for models that state a small window: ``HasWindow``).
            sub_calls: False runs the REPL without ``llm_query`` (the paper's "no sub-calls" ablation).
            require_look: refuse a FINAL before the model has seen any code output (helps small models).
            sub_context_chars: how much text the prompt tells the model a sub-call can read.
            history: "full" shows the root model the whole chat (the paper's way); "compact" rebuilds one
                message each turn listing the code run and its output, which small models follow better
                and which keeps prompts short. Default: compact for models with a small window.
            first_search: run ``search(question)`` in the REPL before the first root turn and show its real
                output, so the model's first decision is made on data, not on what it imagines the code would
                print. Default: on with compact history (small models).
            verify_answers: check every FINAL against what the code printed and the REPL's variables; an answer
                asserting values never shown gets one turn to show them, and is reported as ``grounded=False``
                with ``stopped_reason="ungrounded"`` if it still cannot. Default: on with compact history.
            cache: where identical model calls are answered from (``recursa.LMCache``): None, the default, is the
                per-user cache for greedy (temperature 0) calls (``RECURSA_CACHE=off`` disables it); False, none;
                a directory; or an ``LMCache`` (``LMCache(sampled=True)`` caches sampled calls too). A hit is free
                and counts against no budget; ``Result`` reports hits, misses and the dollars saved.
        """
        if root is None:
            from ._defaults import default_lm

            root = default_lm()
        self.root = root
        self.sub = sub or root
        self.budget = budget or Budget()
        self.concurrency = concurrency
        window = window_chars(root)
        self.max_output_chars = max_output_chars or (min(20_000, window // 8) if window else 20_000)
        self.sub_calls = sub_calls
        self.require_look = require_look
        self.sandbox_limits = sandbox_limits or SandboxLimits()
        self.prompts = prompts or PromptTemplates.default()
        sub_window = window_chars(self.sub)
        if history not in (None, "full", "compact"):
            raise ValueError(f"history must be 'full' or 'compact', not {history!r}")
        self.history = history or ("compact" if window and window < 100_000 else "full")
        small = self.history == "compact"
        self.first_search = small if first_search is None else first_search
        self.verify_answers = small if verify_answers is None else verify_answers
        self.sub_context_chars = sub_context_chars or (sub_window * 3 // 4 if sub_window else 100_000)
        self.cache = resolve_cache(cache)

    def __repr__(self) -> str:
        return f"RLM(root={self.root.model!r}, sub={self.sub.model!r}, budget={self.budget})"

    async def arun(
        self,
        question: str,
        context: Any,
        *,
        budget: Budget | None = None,
        trace_path: str | Path | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> Result:
        """Answer ``question`` over ``context`` (str, bytes, list of str, Path, list of Paths, ``Context``).

        ``on_event`` is called with every trace event as it happens (for progress displays).
        Errors raise a ``RecursaError`` whose ``result`` attribute keeps the partial trace.
        """
        return await self._start(question, context, budget, trace_path, emit=on_event)

    def run(
        self,
        question: str,
        context: Any,
        *,
        budget: Budget | None = None,
        trace_path: str | Path | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> Result:
        """Blocking ``arun``; works inside a running event loop (e.g. Jupyter) too."""
        return run_sync(lambda: self.arun(question, context, budget=budget, trace_path=trace_path, on_event=on_event))

    def stream(
        self,
        question: str,
        context: Any,
        *,
        budget: Budget | None = None,
        trace_path: str | Path | None = None,
    ) -> RunStream:
        """Blocking ``astream``: iterate over the events as they happen (the last is ``RunFinished``), then call
        ``result()`` for the ``Result``. The run has a thread and an event loop of its own, so this works from
        any sync code, inside a running event loop too. Stopping early (``break``, ``close()``, leaving a
        ``with`` block) cancels the run and returns once its worker is gone.

        >>> with rlm.stream("Which user bought the most?", Path("logs/")) as run:
        ...     for event in run:
        ...         print(event.type)
        ...     answer = run.result().answer
        """
        return RunStream(lambda emit: self._start(question, context, budget, trace_path, emit=emit))

    async def astream(
        self,
        question: str,
        context: Any,
        *,
        budget: Budget | None = None,
        trace_path: str | Path | None = None,
    ) -> AsyncIterator[Event]:
        """Yield trace events as they happen; the last one is ``RunFinished``.

        Leaving the iteration early cancels the run and stops its worker.
        """
        events: asyncio.Queue[Event | None] = asyncio.Queue()
        task = asyncio.ensure_future(self._start(question, context, budget, trace_path, emit=events.put_nowait))
        task.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while (event := await events.get()) is not None:
                yield event
            if task.exception() is not None and not isinstance(task.exception(), RecursaError):
                raise task.exception()  # type: ignore[misc]
        finally:
            if not task.done():
                task.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(task, return_exceptions=True)

    def session(self, context: Any) -> Session:
        """A multi-turn session: one REPL kept warm across questions, with its variables."""
        return Session(self, load_context(context))

    async def _start(
        self,
        question: str,
        context: Any,
        budget: Budget | None,
        trace_path: str | Path | None,
        emit: Emit | None,
        sandbox: ReplSandbox | None = None,
        on_run: Callable[[_Run], None] | None = None,
    ) -> Result:
        ctx = context if isinstance(context, Context) else load_context(context)
        writer = TraceWriter(trace_path) if trace_path else None
        trace: list[Event] = []

        def record(event: Event) -> None:
            trace.append(event)
            if writer:
                writer.write(event)
            if emit:
                emit(event)

        spend = Spend(budget or self.budget)
        limiter = anyio.CapacityLimiter(self.concurrency)
        run = _Run(self, question, ctx, depth=0, spend=spend, limiter=limiter, emit=record, trace=trace)
        if on_run:
            on_run(run)
        try:
            return await run.execute(sandbox)
        finally:
            if writer:
                writer.close()


class Session:
    """One context, one warm REPL, many questions: later questions see variables earlier ones made."""

    def __init__(self, rlm: RLM, context: Context) -> None:
        self.rlm = rlm
        self.context = context
        self._current: _Run | None = None
        self._sandbox = ReplSandbox(context, on_sub_call=self._on_sub_call, limits=rlm.sandbox_limits)

    async def _on_sub_call(self, request: SubCallRequest) -> list[str]:
        if self._current is None:
            raise RuntimeError("sub-calls are only available while a question is being answered")
        return await self._current.on_sub_call(request)

    async def ask(
        self,
        question: str,
        *,
        budget: Budget | None = None,
        trace_path: str | Path | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> Result:
        """Answer ``question`` in the warm REPL; like ``RLM.arun``."""

        def bind(run: _Run) -> None:
            self._current = run

        try:
            return await self.rlm._start(
                question, self.context, budget, trace_path, on_event, sandbox=self._sandbox, on_run=bind
            )
        finally:
            self._current = None

    async def aclose(self) -> None:
        await self._sandbox.aclose()

    async def __aenter__(self) -> Session:
        await self._sandbox.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class RunStream(Iterator[Event]):
    """The events of one run as they happen, for sync code: what ``RLM.stream`` returns.

    The run goes on in a thread with its own event loop, started by the first ``next()``. Iteration ends after
    ``RunFinished``; ``result()`` then gives the ``Result`` (or raises the ``RecursaError`` that ended the run, with
    its ``result``). Other exceptions are raised by the iteration itself, as ``RLM.astream`` does. ``close()``,
    also called when a ``with`` block is left or the stream is dropped, cancels a run still going and waits
    until its worker is gone.
    """

    def __init__(self, start: Callable[[Emit], Awaitable[Result]]) -> None:
        self._outcome: list[Result | BaseException] = []
        self._events = _events_in_thread(start, self._outcome)

    def __next__(self) -> Event:
        return next(self._events)

    def result(self) -> Result:
        """The run's ``Result``, once the events are consumed (the rest are read now and dropped)."""
        for _ in self._events:
            pass
        if not self._outcome:
            raise RuntimeError("the stream was closed before its run ended; there is no result")
        outcome = self._outcome[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def close(self) -> None:
        """Cancel the run if it is still going, and wait until it has stopped its worker."""
        self._events.close()

    def __enter__(self) -> RunStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Ended:
    """The last item of a stream's queue: the run's ``Result`` or the exception that ended it."""

    def __init__(self, outcome: Result | BaseException) -> None:
        self.outcome = outcome


def _events_in_thread(
    start: Callable[[Emit], Awaitable[Result]], outcome: list[Result | BaseException]
) -> Iterator[Event]:
    """Run ``start(emit)`` in a thread of its own with its own event loop, yielding what it emits; its result or
    error goes into ``outcome``. Closing the generator early cancels the run and joins the thread. Neither the
    thread nor the run refers to the generator, so dropping it closes it."""
    items: queue.SimpleQueue[Event | _Ended] = queue.SimpleQueue()
    running: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []
    stop = threading.Event()

    async def main() -> Result:
        running.append((asyncio.get_running_loop(), asyncio.current_task()))  # type: ignore[arg-type]
        if stop.is_set():  # closed before the loop was running: the consumer found nothing to cancel
            raise asyncio.CancelledError()
        return await start(items.put)

    def work() -> None:
        try:
            items.put(_Ended(asyncio.run(main())))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            items.put(_Ended(exc))

    thread = threading.Thread(target=work, name="recursa-stream", daemon=True)
    thread.start()
    ended: _Ended | None = None
    try:
        while not isinstance(item := items.get(), _Ended):
            yield item
        ended = item
    finally:
        if ended is None:  # the consumer stopped early (or was interrupted): cancel the run
            stop.set()
            for loop, task in running:
                with contextlib.suppress(RuntimeError):  # the loop has closed: the run ended meanwhile
                    loop.call_soon_threadsafe(task.cancel)
        thread.join()
    outcome.append(ended.outcome)
    if isinstance(ended.outcome, BaseException) and not isinstance(ended.outcome, RecursaError):
        raise ended.outcome


class _Run:
    """One question over one context at one depth; sub-runs (``rlm_query``) are ``_Run``s too."""

    def __init__(
        self,
        rlm: RLM,
        question: str,
        context: Context,
        *,
        depth: int,
        spend: Spend,
        limiter: anyio.CapacityLimiter,
        emit: Emit,
        trace: list[Event],
        parent_run_id: str | None = None,
    ) -> None:
        self.rlm = rlm
        self.question = question
        self.context = context
        self.depth = depth
        self.spend = spend
        self.limiter = limiter
        self.emit = emit
        self.trace = trace
        self.parent_run_id = parent_run_id
        self.run_id = uuid.uuid4().hex[:12]
        self.iteration = 0
        self.sub_calls = 0
        self.usage = Usage()
        self.cost_usd = 0.0
        self.cache_hits = self.cache_misses = 0
        self.saved_usd = 0.0
        self.started = time.monotonic()
        self.seen_output = False
        """A code step ran without error: only then may a FINAL be accepted (with ``require_look``)."""
        self.last_step_failed = False
        self.evidence: list[str] = []
        """Everything real the root model was shown: the context preview and every code output."""
        self.grounding_turn_used = False
        self.search_report = SearchReport()
        self.own_steps = 0
        """Code blocks the root model wrote that ran (the host's first search is not one)."""
        self.own_step_asked = False
        self.code_next = False
        self.resample_next = False
        self.final_turn = False
        self.grounded: bool | None = None
        self.ran_code: set[str] = set()
        self.sandbox: ReplSandbox | None = None
        self.transcript: Transcript
        """What the root model is shown (made when the loop starts)."""

    # -- the loop ---------------------------------------------------------------------------------

    async def execute(self, sandbox: ReplSandbox | None = None) -> Result:
        owned = sandbox is None
        handler = self.on_sub_call if self.rlm.sub_calls else None
        self.sandbox = sandbox or ReplSandbox(self.context, on_sub_call=handler, limits=self.rlm.sandbox_limits)
        self.emit(RunStarted(
            run_id=self.run_id, depth=self.depth, question=self.question, context=self.context.describe(200),
            budget=self.spend.budget.to_dict(), root_model=self.rlm.root.model, sub_model=self.rlm.sub.model,
            parent_run_id=self.parent_run_id, sandbox=list(getattr(self.sandbox, "mechanisms", [])),
        ))
        try:
            answer, reason = await (self._loop_while_warming() if owned else self._loop())
        except RecursaError as exc:
            exc.result = self._finish(None, "error", error=str(exc))
            raise
        except anyio.get_cancelled_exc_class():
            self._finish(None, "cancelled")
            raise
        finally:
            if owned:
                with anyio.CancelScope(shield=True):
                    await self.sandbox.aclose()
        return self._finish(answer, reason)

    async def _loop_while_warming(self) -> tuple[str | None, str]:
        """The loop, with the REPL worker starting beside the first root call rather than after it: the worker is
        ready when the first code block arrives (its start would otherwise add ~0.3 s before the first step)."""
        outcome: tuple[str | None, str] | BaseException
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._warm_sandbox)
            try:
                outcome = await self._loop()
            except BaseException as exc:  # re-raised below as itself, not inside the task group's ExceptionGroup
                outcome = exc
            tg.cancel_scope.cancel()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _warm_sandbox(self) -> None:
        assert self.sandbox is not None
        with contextlib.suppress(Exception):  # a worker that cannot start says so when the first step needs it
            await self.sandbox.start()

    async def _loop(self) -> tuple[str | None, str]:
        self.transcript = Transcript(
            self.rlm.prompts, self.question, self.context, remaining=self._remaining, sub_calls=self.rlm.sub_calls,
            recursive=self.depth + 1 < self.spend.budget.max_depth, sub_context_chars=self.rlm.sub_context_chars,
            compact=self.rlm.history == "compact", max_output_chars=self.rlm.max_output_chars,
        )
        self.evidence.append(self.transcript.preview)
        self.transcript.begin(await self._first_search() if self.rlm.first_search else None)
        try:
            if (answer := await self._host_answer()) is not None:
                self.grounded = True
                return answer, "final"
            return await self._turns()
        except _TimeBudgetSpent:
            return await self._final_turn("timeout")

    async def _turns(self) -> tuple[str | None, str]:
        transcript = self.transcript
        while self.iteration < self.spend.budget.max_iterations:
            if reason := self.spend.exhausted():
                return await self._final_turn(reason)
            self.iteration += 1
            self.emit(IterationStarted(run_id=self.run_id, depth=self.depth, iteration=self.iteration,
                                       remaining=self._remaining()))
            reply = await self._ask_root(transcript.messages())
            blocks, final = find_code_blocks(reply), find_final(reply)
            code: list[str] = []
            outputs = notes = ""
            if blocks and all(_normalise(b) in self.ran_code for b in blocks) and not final:
                self._notice("code not re-run: it repeats code that already ran")
                notes = self.rlm.prompts.repeated_code
                self.resample_next = True
            elif blocks:
                outputs, answer, ran = await self._run_blocks(blocks)
                if answer is not None:
                    notes = await self._judge(answer, code=ran)
                    if not notes:
                        return answer, self._stop_reason("final")
                code = blocks
                if final and not notes:
                    notes = self.rlm.prompts.deferred_final
                    self._notice("FINAL deferred: it came in the same reply as code that had not run yet")
            elif final and self.last_step_failed:
                self.last_step_failed = False  # one refusal per failed step
                self._notice("FINAL refused: the code before it failed")
                self.code_next = True
                notes = self.rlm.prompts.final_after_error
            elif final and self.rlm.verify_answers and not self.own_steps and not self.own_step_asked:
                # The host's first search is a start, not the model's own look: counts and totals need code.
                # An answer every check backs is taken as it is; refusing it only made the model drift.
                self.own_step_asked = True
                answer, _ = await self._resolve(final)
                verdict = await self._verdict(answer) if answer and _normalise_answer(answer).strip(". ") else None
                if verdict and verdict.grounded:
                    self.grounded = True
                    return answer, self._stop_reason("final")
                if verdict and verdict.may_answer:  # the refusal itself offers an answer: say why at once
                    self._notice(f"FINAL refused once, not grounded: {verdict.reason}")
                    notes = self.rlm.prompts.render("ungrounded_final", answer=clip(answer, 200, note="..."),
                                                    why=verdict.reason)
                else:
                    self._notice("FINAL refused once: the model has not run code of its own yet")
                    self.code_next = True
                    notes = self.rlm.prompts.own_step_first
            elif final and (self.seen_output or not self.rlm.require_look):
                answer, notes = await self._resolve(final)
                if answer is not None:
                    notes = await self._judge(answer)
                    if not notes:
                        return answer, self._stop_reason("final")
            elif final:
                self._notice("FINAL refused: no code output had been seen yet")
                notes = self.rlm.prompts.early_final
            else:
                notes = self.rlm.prompts.no_code
            transcript.add(reply, code=code, outputs=outputs, notes=notes, tail=transcript.render("next_step"))
        return await self._final_turn("max_iterations")

    async def _final_turn(self, reason: str) -> tuple[str | None, str]:
        """The one last turn a run gets when a budget runs out: answer from what has been seen."""
        why = f"The {reason} budget is used up."
        self._notice(f"{why} Asking the root model for a final answer.")
        self.code_next, self.final_turn = False, True
        try:
            return await self._final_answer(reason, why)
        except _TimeBudgetSpent:
            self._notice("The final turn ran out of time too; no answer.")
            return None, reason

    async def _final_answer(self, reason: str, why: str) -> tuple[str | None, str]:
        tail = self.transcript.render("final_turn", reason=why)
        reply = await self._ask_root(self.transcript.messages(tail=tail))
        final = find_final(reply)
        answer: str | None = None
        if final is None:
            blocks = find_code_blocks(reply)
            if any("FINAL" in block for block in blocks):  # FINAL called in code: run it to get the value
                _, answer, ran = await self._run_blocks(blocks)
                if answer is not None:
                    await self._judge(answer, code=ran, last_chance=True)
                    return answer, reason
            answer = text_outside_code(reply).strip() or None
        else:
            answer, _ = await self._resolve(final)
        if answer is not None:
            await self._judge(answer, last_chance=True)
        return answer, reason

    async def _judge(self, answer: str, *, code: str | None = None, last_chance: bool = False) -> str:
        """Check an answer against what the model was shown; return a note refusing it once, or ""."""
        if not self.rlm.verify_answers:
            return ""
        if not last_chance and not _normalise_answer(answer).strip(". "):
            self.code_next = False
            self._notice("FINAL refused: it held no answer, only dots")
            return self.rlm.prompts.empty_final
        if code is not None and _normalise_answer(answer) not in code:
            self.grounded = True  # computed by code that ran, not copied from the model's imagination
            return ""
        verdict = await self._verdict(answer, last_chance=last_chance)
        self.grounded = verdict.grounded
        if verdict.grounded is not False or last_chance or self.grounding_turn_used:
            if verdict.grounded is False:
                self._notice(f"answer accepted but not grounded: {verdict.reason}")
            return ""
        self.grounding_turn_used = True
        self.code_next = not verdict.may_answer
        self._notice(f"FINAL refused once, not grounded: {verdict.reason}")
        return self.rlm.prompts.render("ungrounded_final", answer=clip(answer, 200, note="..."), why=verdict.reason)

    async def _verdict(self, answer: str, *, last_chance: bool = False) -> Grounding:
        """Every check of an answer against what was printed and stored, with no refusal decided yet."""
        assert self.sandbox is not None
        values = await self.sandbox.variable_values()
        evidence = [*self.evidence, *values.values()]
        verdict: Grounding = check_grounding(answer, self.question, evidence)
        if verdict.grounded and not last_chance:
            verdict = await self._verify(answer, verdict, evidence)
        if verdict.grounded is False and not verdict.may_answer and (
                doubt := self._lookalike(self.search_report.full_lines)):
            # An invented value where the key is absent: point at the absence, and offer to say so.
            verdict = Grounding(False, verdict.missing, f"{verdict.reason}; and {doubt.reason}", may_answer=True)
        return verdict

    async def _verify(self, answer: str, verdict: Grounding, evidence: list[str]) -> Grounding:
        """Have the sub-model read the answer off the lines that contain it, without seeing the proposal: catches a
        value copied from a look-alike line, or a number that merely occurs somewhere in the output (a count)."""
        lines = supporting_lines(verdict.claims, evidence)
        if not lines:
            return Grounding(False, reason="no printed line shows it")
        report = self.search_report
        if why := count_doubt(answer, report.counts, report.all_count, report.forms):
            return Grounding(False, reason=why, may_answer=True)  # even when its own code printed that count
        if is_form_count(answer, report.forms):
            return verdict  # the count of lines where a word takes one form: the host counted it
        if any(is_bare_value(line, verdict.claims) for line in lines):
            return verdict  # the model's own code computed and printed exactly this value
        if reads_a_definition(self.question, verdict.claims, lines):
            return verdict  # read off the line that defines the name asked about
        if doubt := self._second_look(verdict.claims, lines):
            return doubt
        if read_off_key_lines(verdict.claims, self.search_report.full_lines):
            return verdict
        prompt = extraction_prompt(self.question, lines)
        lm = self.rlm.sub
        # Backends that take a grammar (llama.cpp) take max_tokens too; hosted reasoning models reject it.
        params = {"max_tokens": 128} if supports_grammar(lm) else {}
        reply = await self._complete("verify", lm, [{"role": "user", "content": prompt}], depth=self.depth + 1,
                                     **params)
        if agrees(reply, answer, verdict.claims):
            return verdict
        shown = " | ".join(line[:160] for line in lines[:2])
        read = clip(reply.strip(), 60, note="...")
        reason = f"read independently, the line(s) give {read!r}, not this answer: {shown}"
        if missing := missing_words(self.question, lines):
            reason += (f". The question's word(s) {', '.join(map(repr, missing))} are not in those lines: if the text "
                       "has nothing about them, say in FINAL(...) that it does not contain the answer")
        return Grounding(False, reason=reason)

    def _second_look(self, claims: tuple[str, ...], lines: list[str]) -> Grounding | None:
        """Checks against what the host's first search found: a look-alike key, a line without the name asked
        about, or one value of several."""
        report = self.search_report
        if doubt := self._lookalike(lines):
            return doubt
        if names := names_not_in(lines, report.found):
            return Grounding(False, reason=(
                f"the line(s) it comes from do not mention {', '.join(map(repr, names))}, which the question asks "
                "about: answer from a line that holds it"), may_answer=True)  # such a line is often shown already
        if report.complete and (left := uncovered_lines(claims, report.full_lines)):
            n = len(report.full_lines)
            others = " | ".join(clip(line, 200, note="...") for line in left)
            return Grounding(False, reason=(
                f"{n} lines contain every word of the question that the text has, and your answer takes values "
                f"from {n - len(left)} of them; the other(s): {others}. If the "
                "question asks for every value, answer with all of them; if it asks for one, give your answer again"),
                may_answer=True)
        return None

    def _lookalike(self, lines: Sequence[str]) -> Grounding | None:
        """A refusal when ``lines`` are about a look-alike of the question's key (see ``lookalike``)."""
        if not (pair := lookalike(self.question, self.search_report.absent, lines)):
            return None
        asked, found = pair
        return Grounding(False, reason=(
            f"the question asks about the {asked}, but {asked.split()[0]!r} occurs nowhere in the text, and the "
            f"line(s) that match the question are about the {found}. If that is a different thing, answer "
            f"FINAL(The text does not mention the {asked}.); if it is the same thing, give your answer again"),
            may_answer=True)

    def _stop_reason(self, reason: str) -> str:
        return "ungrounded" if reason == "final" and self.grounded is False else reason

    # -- steps ------------------------------------------------------------------------------------

    async def _ask_root(self, messages: list[Message]) -> str:
        # Where the backend can constrain decoding, a reply that cannot be a step is never generated, and the
        # reply after a refused FINAL is code: a small model otherwise repeats the refused answer.
        grammar, self.code_next = (CODE_GRAMMAR if self.code_next else STEP_GRAMMAR), False
        params: dict[str, Any] = {}
        if supports_grammar(self.rlm.root):
            params["grammar"] = grammar
            if self.resample_next:  # greedy decoding repeated itself; sample to get out of the rut
                params["temperature"] = 0.7
        self.resample_next = False
        return await self._complete("root", self.rlm.root, messages, depth=self.depth, **params)

    async def _complete(self, role: str, lm: LM, messages: list[Message], *, depth: int, **params: Any) -> str:
        """One LM request under the shared concurrency limit and the time left, accounted and traced (failures and
        cancellations too: a request that was sent stays in the trace)."""
        started = time.monotonic()
        prompt = messages[-1]["content"]

        def failed(error: str) -> None:
            self.emit(LMCalled(run_id=self.run_id, depth=depth, role=role, model=lm.model, iteration=self.iteration,
                               prompt=prompt, response="", error=error, latency_s=time.monotonic() - started))

        try:
            with anyio.fail_after(self._time_left()):
                async with self.limiter:
                    completion = await with_cache(lm, self.rlm.cache).complete(messages, **params)
        except TimeoutError:
            failed("the timeout budget was used up during this call")
            raise _TimeBudgetSpent() from None
        except anyio.get_cancelled_exc_class():
            failed("cancelled")
            raise
        except Exception as exc:
            failed(str(exc))
            raise
        self._account(completion.usage, completion.cost_usd)  # a cache hit: zero of both, so no budget counts it
        self.cache_hits += completion.cached
        self.cache_misses += completion.cache == "miss"
        self.saved_usd += completion.saved_usd
        self.emit(LMCalled.answered(completion, run_id=self.run_id, depth=depth, role=role, model=lm.model,
                                    iteration=self.iteration, prompt=prompt, latency_s=time.monotonic() - started))
        return completion.text

    async def _run_blocks(self, blocks: list[str]) -> tuple[str, str | None, str]:
        """Run each block in order; stop at the first FINAL. Returns the observation, the answer and the code run."""
        parts = []
        ran = []
        for i, code in enumerate(blocks, 1):
            result = await self._execute(code)
            self.own_steps += 1
            ran.append(code)
            if result.final is not None:
                return "", result.final, "\n".join(ran)
            label = f"[block {i} of {len(blocks)}]\n" if len(blocks) > 1 else ""
            parts.append(label + format_result(result))
        observation = self.transcript.shown_output("\n\n".join(parts))
        self.evidence.append(observation)
        return observation, None, "\n".join(ran)

    async def _execute(self, code: str) -> ExecResult:
        """Run one block in the REPL, trace it, and note whether it succeeded."""
        assert self.sandbox is not None
        timeout = self.rlm.sandbox_limits.step_timeout_s
        if self.spend.budget.timeout_s is not None:
            timeout = max(1.0, min(timeout, self.spend.budget.timeout_s - self.spend.elapsed_s))
        result = await self.sandbox.execute(code, timeout_s=timeout)
        failed = bool(result.error or result.timed_out or result.crashed)
        self.last_step_failed = failed
        self.seen_output = self.seen_output or not failed
        self.ran_code.add(_normalise(code))
        self.emit(CodeExecuted(
            run_id=self.run_id, depth=self.depth, iteration=self.iteration, code=code, output=result.output,
            error=result.error, final=result.final, duration_s=result.duration_s,
            timed_out=result.timed_out, crashed=result.crashed,
        ))
        return result

    async def _resolve(self, final: FinalAnswer) -> tuple[str | None, str]:
        """Turn a FINAL written as text into the answer, or explain why it cannot be one."""
        assert self.sandbox is not None
        if final.kind == "text":
            if final.value.isidentifier():
                value = await self.sandbox.get_variable(final.value)
                if value is not None:
                    return value, ""
            # "...G929-73": the dots of a shortened search line, copied along with the value.
            answer = re.sub(r"^(?:\.\.\.|…)(?=\w)", "", final.value.strip())
            if whole := whole_value(answer, self.search_report.full_lines):
                self._notice(f"answer {answer!r} completed to {whole!r}, the value in the line it was copied from")
                return whole, ""
            return answer, ""
        value = await self.sandbox.get_variable(final.value)
        if value is None and not final.value.isidentifier():
            return final.value, ""  # FINAL_VAR(42): small models mix the two forms up
        if value is None:
            message = (f"FINAL_VAR({final.value}) failed: there is no variable named {final.value!r} in the REPL. "
                       "Create it in a ```repl block first, or write FINAL(...) with the answer text.")
            self._notice(message)
            return None, message
        return value, ""

    # -- sub-calls --------------------------------------------------------------------------------

    async def on_sub_call(self, request: SubCallRequest) -> list[str]:
        """Answer ``llm_query``/``rlm_query`` from the REPL: check budgets, then run the prompts concurrently."""
        count = len(request.prompts)
        try:
            self.spend.start_sub_calls(count)
        except SubCallsRefused as refused:
            if refused.notice:
                self._notice(refused.notice)
            raise
        self.sub_calls += count
        recursive = request.recursive and self.depth + 1 < self.spend.budget.max_depth
        self.emit(SubCallsStarted(run_id=self.run_id, depth=self.depth, iteration=self.iteration,
                                  count=count, recursive=recursive))
        call = self._sub_rlm if recursive else self._sub_lm
        answers: list[str] = [""] * count

        async def one(i: int, prompt: str) -> None:
            answers[i] = await call(prompt)

        try:
            async with anyio.create_task_group() as tg:
                for i, prompt in enumerate(request.prompts):
                    tg.start_soon(one, i, prompt)
        except ExceptionGroup as group:
            first = group.exceptions[0]
            while isinstance(first, ExceptionGroup):
                first = first.exceptions[0]
            raise RuntimeError(f"sub-call failed: {first}") from None
        return answers

    async def _sub_lm(self, prompt: str) -> str:
        try:
            return await self._complete("sub", self.rlm.sub, [{"role": "user", "content": prompt}],
                                        depth=self.depth + 1)
        except _TimeBudgetSpent:
            raise RuntimeError("the timeout budget is used up; no more sub-calls, answer from what you have") from None

    async def _sub_rlm(self, prompt: str) -> str:
        child = _Run(
            self.rlm, self.rlm.prompts.sub_rlm_question, Context([prompt]), depth=self.depth + 1,
            spend=self.spend, limiter=self.limiter, emit=self.emit, trace=self.trace, parent_run_id=self.run_id,
        )
        result = await child.execute()
        self.usage, self.cost_usd = self.usage + child.usage, self.cost_usd + child.cost_usd
        self.cache_hits, self.cache_misses = self.cache_hits + child.cache_hits, self.cache_misses + child.cache_misses
        self.saved_usd += child.saved_usd
        return result.answer or ""

    # -- helpers ----------------------------------------------------------------------------------

    def _time_left(self) -> float | None:
        """Seconds a model call may still take: the run's time budget, plus a short grace for the final turn."""
        limit = self.spend.budget.timeout_s
        if limit is None:
            return None
        grace = min(60.0, 0.1 * limit) if self.final_turn else 0.0
        return max(0.0, limit + grace - self.spend.elapsed_s)

    def _account(self, usage: Usage, cost_usd: float) -> None:
        self.usage = self.usage + usage
        self.cost_usd += cost_usd
        self.spend.add(usage, cost_usd)

    def _remaining(self) -> dict[str, Any]:
        return self.spend.remaining(self.iteration)

    def _notice(self, message: str) -> None:
        self.emit(Notice(run_id=self.run_id, depth=self.depth, iteration=self.iteration, message=message))

    async def _first_search(self) -> tuple[str, str] | None:
        """Run ``search(question)`` before the root model's first turn; its real output opens the chat."""
        code = f"search({self.question!r})"
        result = await self._execute(code)
        if result.error or result.final is not None:
            return None
        output = self.transcript.shown_output(format_result(result))
        self.evidence.append(output)
        self.search_report = read_search(output)
        return code, output

    async def _host_answer(self) -> str | None:
        """A count, a total or a list the host computes over the lines its first search found, when the helper
        model says the question asks for one and the lines leave no doubt (see ``_answer_kind``)."""
        report = self.search_report
        if not (self.rlm.verify_answers and report.counts and supports_grammar(self.rlm.sub)):
            return None
        kind = await answer_kind(self._ask_helper, self.question)
        answer: str | None = None
        if kind == "count":
            answer = host_count(report)
        elif kind == "total":
            result = await self._execute(total_code(self.question))
            answer = None if result.error else host_total(result.output)
        elif kind == "list" and report.complete:
            lines = [_LINE_NUMBER.sub("", line) for line in report.full_lines]
            values = await list_values(self._ask_helper, self.question, lines)
            answer = ", ".join(values) if values else None
        if kind in ("count", "total", "list"):
            self._notice(f"the question asks for a {kind}: " + (
                f"answered by the host from the {report.all_count or 'matching'} lines that hold every word of the "
                "question the text has" if answer is not None else "the lines its first search found leave it open, "
                "so the root model answers"))
        return answer

    async def _ask_helper(self, prompt: str, grammar: str) -> str:
        return await self._complete("verify", self.rlm.sub, [{"role": "user", "content": prompt}],
                                    depth=self.depth + 1, grammar=grammar, max_tokens=48)

    def _finish(self, answer: str | None, reason: str, error: str | None = None) -> Result:
        duration = time.monotonic() - self.started
        self.emit(RunFinished(
            run_id=self.run_id, depth=self.depth, answer=answer, stopped_reason=reason, iterations=self.iteration,
            sub_calls=self.sub_calls, usage=self.usage.to_dict(), cost_usd=self.cost_usd, duration_s=duration,
            error=error, grounded=self.grounded if answer is not None else None,
        ))
        return Result(answer=answer, stopped_reason=reason, iterations=self.iteration, sub_calls=self.sub_calls,
                      usage=self.usage, cost_usd=self.cost_usd, duration_s=duration, run_id=self.run_id,
                      trace=self.trace, error=error, grounded=self.grounded if answer is not None else None,
                      model=self.rlm.root.model, cache_hits=self.cache_hits, cache_misses=self.cache_misses,
                      saved_usd=self.saved_usd)


class _TimeBudgetSpent(Exception):
    """A model call ran past the run's time budget and was stopped."""


_LINE_NUMBER = re.compile(r"^line \d+: ")


def _normalise_answer(answer: str) -> str:
    return answer.strip().strip("\"'`").strip()


def _normalise(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines())


def run_sync(make_coro: Callable[[], Any]) -> Any:
    """Run a coroutine to completion from sync code, also when an event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result()



"""Run benchmark cases for each method, append one JSON line per case, skip cases already finished.

Methods:

- ``base``: the model answers directly, shown only as much of the context as fits in its window
  (the start of the context; ``base_window_chars``, else the model's ``context_chars``, else 400,000);
- ``rlm``: the full RLM loop, ``RLM(root, sub)``;
- ``rlm-no-sub``: the REPL without sub-calls, ``RLM(root, sub, sub_calls=False)`` (the paper's ablation).

Every case writes a JSONL trace under ``out_dir/traces/`` (``recursa view`` renders it) and one line
in ``out_dir/results.jsonl`` keyed by (task, length, seed, method); a rerun skips keys already there.
``METHODS``, the rows and ``BenchRun`` live in ``results``, which the report shares.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from .._budget import Budget
from .._cache import LMCache, resolve_cache, with_cache
from .._context import Context
from .._exceptions import LMError, RecursaError
from .._files import load_context
from .._lm import LM, Usage, window_chars
from .._loop import RLM, Result, run_sync
from .._text import clip
from .._trace import Event, IterationStarted, LMCalled, RunFinished, RunStarted, Tally, TraceWriter
from .report import write_report
from .results import METHODS, RESULTS_FILE, BenchRun, load_results, method_key
from .tasks import TASKS, BenchCase, format_chars

__all__ = ["DEFAULT_BASE_WINDOW_CHARS", "arun_bench", "base_window", "run_bench"]

DEFAULT_BASE_WINDOW_CHARS = 400_000
"""The base method's window for models that do not say theirs (about 100K tokens of prose)."""
COMMANDS_FILE = "commands.txt"
_PROMPT_TOO_LONG = re.compile(r"too long|context length|context_length|maximum context|context window", re.I)
_BASE_SYSTEM = ("Answer the question about the text the user gives you. Reply with the answer only, "
                "in the form the question asks for.")

def base_window(root: LM, base_window_chars: int | None = None) -> int:
    """How many characters of context the ``base`` method shows the model."""
    return base_window_chars or window_chars(root) or DEFAULT_BASE_WINDOW_CHARS


def run_bench(
    tasks: Sequence[str],
    methods: Sequence[str],
    *,
    root: LM,
    sub: LM | None = None,
    out_dir: str | Path,
    lengths: Sequence[int] = (8_000,),
    seeds: Sequence[int] = (0,),
    **options: Any,
) -> BenchRun:
    """Blocking ``arun_bench`` (also works inside a running event loop)."""
    return run_sync(lambda: arun_bench(tasks, methods, root=root, sub=sub, out_dir=out_dir, lengths=lengths,
                                       seeds=seeds, **options))


async def arun_bench(
    tasks: Sequence[str],
    methods: Sequence[str],
    *,
    root: LM,
    sub: LM | None = None,
    out_dir: str | Path,
    lengths: Sequence[int] = (8_000,),
    seeds: Sequence[int] = (0,),
    budget: Budget | None = None,
    concurrency: int = 8,
    jobs: int = 1,
    base_window_chars: int | None = None,
    retry_errors: bool = False,
    plots: bool = True,
    progress: bool = True,
    console: Console | None = None,
    command: str | None = None,
    cache: Any = None,
    get_time: Callable[[], float] = time.monotonic,
) -> BenchRun:
    """Run every (task, length, seed, method) not yet in ``out_dir/results.jsonl``, then write the report.

    Args:
        tasks: names from ``TASKS`` ("sniah", "oolong", "oolong-pairs").
        methods: names from ``METHODS`` ("base", "rlm", "rlm-no-sub").
        root, sub: the models (``sub`` defaults to ``root``).
        out_dir: where ``results.jsonl``, ``summary.md``, the plots and ``traces/`` go.
        lengths: context lengths in characters.  seeds: one case per seed.
        budget: limits of each RLM run.  concurrency: LM requests in flight within a case.
        jobs: cases run at once.  base_window_chars: the ``base`` method's window (see ``base_window``).
        retry_errors: run again cases whose earlier row ended in an error.
        plots: draw the PNG plots (needs matplotlib, ``recursa[bench]``).
        progress: show a progress bar with an ETA on ``console`` (default: stderr).
        command: the command line, added to ``out_dir/commands.txt`` and listed in the summary.
        cache: as ``RLM(cache=...)``, for every method (``base`` too); ``False`` when timing runs: a hit takes no
            time. Each row's ``cache_hits`` says how many of its calls were answered from the cache.
    """
    unknown = [t for t in tasks if t not in TASKS] + [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown task or method {', '.join(map(repr, unknown))}; tasks: {', '.join(TASKS)}; "
                         f"methods: {', '.join(METHODS)}")
    out = Path(out_dir)
    (out / "traces").mkdir(parents=True, exist_ok=True)
    results_path = out / RESULTS_FILE
    done = load_results(results_path)
    if retry_errors:
        done = {k: r for k, r in done.items() if r.get("stopped_reason") != "error"}
    order = [(t, n, s, m) for n in sorted(set(lengths)) for s in seeds for t in tasks for m in methods]
    pending = [k for k in order if k not in done]
    groups: dict[tuple[str, int, int], list[str]] = {}
    for task, length, seed, method in pending:
        groups.setdefault((task, length, seed), []).append(method)

    console = console or Console(stderr=True)
    window = base_window(root, base_window_chars)
    notes: list[str] = []
    if "base" in methods:
        source = "as set by --base-window-chars" if base_window_chars else (
            "the model's window" if window_chars(root) else
            "a default for models that do not state their window; set --base-window-chars")
        notes.append(f"`base`: the model answers from the first {window:,} characters of each context "
                     f"({source}); the rest is cut off.")
        console.print(notes[-1].replace("`", ""), highlight=False)
    if done and pending != order:
        console.print(f"resuming: {len(order) - len(pending)} of {len(order)} cases already in {results_path}")

    _end_with_newline(results_path)  # a line cut short by a crash must not swallow the next row
    runner = _CaseRunner(root, sub or root, budget or Budget(), concurrency, window, out, console,
                         resolve_cache(cache))
    limiter = anyio.CapacityLimiter(max(1, jobs))
    with _progress(console, progress, len(pending), get_time) as bar, results_path.open("a", encoding="utf-8") as f:
        task_id = bar.add_task("bench", total=len(pending), last="")

        async def run_group(group: tuple[str, int, int], group_methods: list[str]) -> None:
            async with limiter:
                case = await anyio.to_thread.run_sync(lambda: TASKS[group[0]].make(group[1], group[2]))
                for method in group_methods:
                    bar.update(task_id, description=f"{case.task} {format_chars(case.length)} s{case.seed} {method}")
                    row = await runner.run(case, method)
                    _append(f, row)
                    done[(case.task, case.length, case.seed, method)] = row
                    bar.update(task_id, advance=1, last=_describe(row))
                    if progress:
                        bar.console.print(f"  {_describe(row)}", highlight=False)

        try:
            async with anyio.create_task_group() as tg:
                for group, group_methods in groups.items():
                    tg.start_soon(run_group, group, group_methods)
        except BaseExceptionGroup as group_error:
            first = group_error.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None

    rows = [done[k] for k in order]
    run = BenchRun(rows, len(pending), len(order) - len(pending), out, results_path)
    commands = _remember_command(out / COMMANDS_FILE, command)
    # The report covers every case in results.jsonl, so runs that add lengths or tasks accumulate.
    write_report(run, _sorted_rows(load_results(results_path).values()), commands=commands, plots=plots,
                 notes=notes)
    return run


def _sorted_rows(rows: Any) -> list[dict[str, Any]]:
    tasks = list(TASKS)

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        task = row["task"]
        return (tasks.index(task) if task in tasks else len(tasks), task, row["length"], row["seed"],
                *method_key(row["method"]))

    return sorted(rows, key=key)


def _remember_command(path: Path, command: str | None) -> list[str]:
    """Append ``command`` to the output directory's command log (once); return every command in it."""
    known = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.exists() else []
    if command and command not in known:
        known.append(command)
        with path.open("a", encoding="utf-8") as f:
            f.write(command + "\n")
    return known


def _end_with_newline(path: Path) -> None:
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, 2)
            last = f.read(1)
        if last != b"\n":
            with path.open("a", encoding="utf-8") as f:
                f.write("\n")


def _append(f: IO[str], row: dict[str, Any]) -> None:
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()


def _describe(row: dict[str, Any]) -> str:
    return (f"{row['task']} {format_chars(row['length'])} seed {row['seed']} {row['method']}: "
            f"score {row['score']:.2f}, {row['total_tokens']:,} tokens, {row['seconds']:.1f} s, "
            f"{row['stopped_reason']}")


class _EtaColumn(ProgressColumn):
    """Time left, from the average time per finished case so far (steadier than rich's windowed speed)."""

    def render(self, task: Any) -> Text:
        if not task.completed or task.total is None or task.elapsed is None:
            return Text("ETA --:--", style="progress.remaining")
        left = task.elapsed / task.completed * (task.total - task.completed)
        minutes, seconds = divmod(int(left), 60)
        hours, minutes = divmod(minutes, 60)
        shown = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"
        return Text(f"ETA {shown}", style="progress.remaining")


def _progress(console: Console, enabled: bool, total: int, get_time: Callable[[], float]) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        _EtaColumn(), TextColumn("{task.fields[last]}", style="dim"),
        console=console, disable=not enabled or total == 0, transient=False, get_time=get_time,
    )


class _CaseRunner:
    """Runs one case with one method and turns the outcome into a result row."""

    def __init__(self, root: LM, sub: LM, budget: Budget, concurrency: int, window: int, out: Path,
                 console: Console, cache: LMCache | None) -> None:
        self.root, self.sub, self.budget, self.concurrency = root, sub, budget, concurrency
        self.window = window
        self.out = out
        self.console = console
        self.cache = cache

    async def run(self, case: BenchCase, method: str) -> dict[str, Any]:
        trace = Path("traces") / f"{case.task}-{case.length}-s{case.seed}-{method}.jsonl"
        started = time.monotonic()
        extra: dict[str, Any] = {}
        try:
            if method == "base":
                result, extra = await self._base(case, self.out / trace)
            else:
                rlm = RLM(self.root, self.sub, budget=self.budget, concurrency=self.concurrency,
                          sub_calls=method == "rlm", cache=False if self.cache is None else self.cache)
                result = await rlm.arun(case.question, case.context, trace_path=self.out / trace)
        except RecursaError as exc:
            result = getattr(exc, "result", None) or _error_result(str(exc))
        except Exception as exc:  # a bug must not end a long benchmark: record it, say so, go on
            self.console.print(f"[red]recursa bench: {case.task} {case.length} seed {case.seed} {method} "
                               f"failed:[/] {type(exc).__name__}: {exc}", highlight=False)
            result = _error_result(f"{type(exc).__name__}: {exc}")
        seconds = time.monotonic() - started
        prediction = result.answer
        return {
            "task": case.task, "length": case.length, "seed": case.seed, "method": method,
            "kind": case.kind, "score": round(case.score(prediction), 4),
            "answer": clip(prediction, 2_000, note="… [{cut:,} more characters]"), "gold": case.gold,
            "input_tokens": result.usage.input_tokens, "output_tokens": result.usage.output_tokens,
            "total_tokens": result.usage.total_tokens, "cost_usd": round(result.cost_usd, 6),
            "seconds": round(seconds, 2), "stopped_reason": result.stopped_reason, "grounded": result.grounded,
            "iterations": result.iterations, "sub_calls": result.sub_calls, "cache_hits": result.cache_hits,
            "error": result.error,
            "model": self.root.model, "sub_model": self.sub.model if method == "rlm" else None,
            "context_chars": _as_text(case.context, None)[1], **extra, **case.info,
            "trace": trace.as_posix(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    async def _base(self, case: BenchCase, trace_path: Path) -> tuple[Result, dict[str, Any]]:
        """Ask the model directly with the start of the context; shrink the window if it says too long."""
        writer = TraceWriter(trace_path)
        tally = Tally()
        run_id = uuid.uuid4().hex[:12]
        started = time.monotonic()
        room = max(1_000, self.window - len(case.question) - 400)
        events: list[Event] = []

        def emit(event: Event) -> None:
            events.append(event)
            tally.update(event)
            writer.write(event)

        emit(RunStarted(run_id=run_id, question=case.question, context=load_context(case.context).describe(200),
                        budget={"window_chars": self.window}, root_model=self.root.model, sub_model=""))
        answer, error, attempt, reason = None, None, 0, "error"
        try:
            while True:
                attempt += 1
                shown, total = _as_text(case.context, room)
                cut = total - len(shown)
                note = (f"\n\n[The text above is the first {len(shown):,} of {total:,} characters; "
                        "the rest did not fit in the model's window.]" if cut else "")
                prompt = f"{shown}{note}\n\nQuestion: {case.question}"
                emit(IterationStarted(run_id=run_id, iteration=attempt, remaining={}))
                call_started = time.monotonic()
                try:
                    completion = await with_cache(self.root, self.cache).complete(
                        [{"role": "system", "content": _BASE_SYSTEM}, {"role": "user", "content": prompt}])
                except LMError as exc:
                    emit(LMCalled(run_id=run_id, role="root", model=self.root.model, iteration=attempt,
                                  prompt=prompt, response="", error=str(exc),
                                  latency_s=time.monotonic() - call_started))
                    if attempt < 4 and _PROMPT_TOO_LONG.search(str(exc)):
                        room = room * 3 // 4
                        continue
                    error = str(exc)
                    break
                answer, reason = completion.text.strip(), "final"
                emit(LMCalled.answered(completion, run_id=run_id, role="root", model=self.root.model,
                                       iteration=attempt, prompt=prompt, latency_s=time.monotonic() - call_started))
                break
        finally:
            duration = time.monotonic() - started
            emit(RunFinished(run_id=run_id, answer=answer, stopped_reason=reason, iterations=attempt, sub_calls=0,
                             usage=tally.usage.to_dict(), cost_usd=tally.cost_usd, duration_s=duration, error=error))
            writer.close()
        result = Result(answer=answer, stopped_reason=reason, iterations=attempt, sub_calls=0, usage=tally.usage,
                        cost_usd=tally.cost_usd, duration_s=duration, run_id=run_id, trace=events, error=error,
                        cache_hits=tally.cached)
        total = _as_text(case.context, None)[1]
        return result, {"context_chars_seen": min(room, total), "truncated": room < total}


def _as_text(context: str | Context, limit: int | None) -> tuple[str, int]:
    """The context as the base model reads it (documents under their names), cut to ``limit``; and its length."""
    if isinstance(context, Context):
        context = "\n\n".join(f"=== {name} ===\n{doc}" for name, doc in zip(context.names, context.documents,
                                                                             strict=True))
    return (context if limit is None else context[:limit]), len(context)


def _error_result(message: str) -> Result:
    return Result(answer=None, stopped_reason="error", iterations=0, sub_calls=0, usage=Usage(), cost_usd=0.0,
                  duration_s=0.0, run_id="", error=message)

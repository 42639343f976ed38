"""What a benchmark run produces: the methods it compares, its result rows in ``results.jsonl``, and ``BenchRun``.

The runner writes rows and the report reads them; both take these names from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["METHODS", "RESULTS_FILE", "BenchRun", "CaseKey", "load_results", "method_key"]

METHODS = ("base", "rlm", "rlm-no-sub")
"""``base``: the model alone on as much context as fits its window; ``rlm``: the RLM loop; ``rlm-no-sub``: the
REPL without sub-calls (the paper's ablation). Tables and plots show them in this order."""
RESULTS_FILE = "results.jsonl"

CaseKey = tuple[str, int, int, str]
"""(task, length, seed, method): what identifies a case in ``results.jsonl``."""


def method_key(method: str) -> tuple[int, str]:
    """Sort key: the methods in ``METHODS`` order, others after them by name."""
    return (METHODS.index(method) if method in METHODS else len(METHODS), method)


@dataclass
class BenchRun:
    """What a benchmark run did and where it wrote it."""

    rows: list[dict[str, Any]]
    """One result row per requested case (finished earlier or now), in run order. The summary covers
    every row in ``results.jsonl``, also those of earlier runs with other tasks or lengths."""
    ran: int
    """Cases run now."""
    skipped: int
    """Cases skipped because ``results.jsonl`` already had them."""
    out_dir: Path
    results_path: Path
    summary_path: Path | None = None
    plot_paths: list[Path] = field(default_factory=list)
    plot_error: str | None = None
    """Why plots were not drawn (e.g. matplotlib missing), if so."""


def load_results(path: Path) -> dict[CaseKey, dict[str, Any]]:
    """Rows of a ``results.jsonl`` by case key; a later row for the same key wins, broken lines are skipped."""
    rows: dict[CaseKey, dict[str, Any]] = {}
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            key = (str(row["task"]), int(row["length"]), int(row["seed"]), str(row["method"]))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash: that case simply runs again
        rows[key] = row
    return rows

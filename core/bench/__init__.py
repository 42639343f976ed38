"""Benchmark tasks in the style of the RLM paper, generated locally and seeded (no downloads).

``TASKS`` holds the task classes (``sniah``, ``oolong``, ``oolong-pairs``, and ``lookup``: seven question
shapes in development and held-out phrasings); ``run_bench`` runs them
for the methods ``base``, ``rlm`` and ``rlm-no-sub`` and writes results, a summary and plots.
``recursa bench`` and ``recursa view`` are the command-line faces (``recursa.bench.commands``).

The names below are imported on first use: ``recursa`` registers the ``bench`` command from
``recursa.bench.commands`` at start-up, and ``recursa ask`` or ``--help`` must not pay for the runner, the
report and ``rich``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lookup import LOOKUP_KINDS, LookupCase, make_lookup, score_lookup
    from .oolong import OolongCase, make_oolong, score_comparison, score_label, score_numeric
    from .pairs import PairsCase, make_pairs, score_pairs
    from .results import METHODS, BenchRun
    from .runner import arun_bench, run_bench
    from .sniah import SniahCase, make_sniah, score_exact
    from .tasks import TASKS, BenchCase, Task

_WHERE = {
    "LOOKUP_KINDS": "lookup", "LookupCase": "lookup", "make_lookup": "lookup", "score_lookup": "lookup",
    "OolongCase": "oolong", "make_oolong": "oolong", "score_comparison": "oolong", "score_label": "oolong",
    "score_numeric": "oolong",
    "PairsCase": "pairs", "make_pairs": "pairs", "score_pairs": "pairs",
    "METHODS": "results", "BenchRun": "results",
    "arun_bench": "runner", "run_bench": "runner",
    "SniahCase": "sniah", "make_sniah": "sniah", "score_exact": "sniah",
    "TASKS": "tasks", "BenchCase": "tasks", "Task": "tasks",
}
"""Each public name -> the submodule that defines it."""

__all__ = [
    "LOOKUP_KINDS",
    "METHODS",
    "TASKS",
    "BenchCase",
    "BenchRun",
    "LookupCase",
    "OolongCase",
    "PairsCase",
    "SniahCase",
    "Task",
    "arun_bench",
    "make_lookup",
    "make_oolong",
    "make_pairs",
    "make_sniah",
    "run_bench",
    "score_comparison",
    "score_exact",
    "score_label",
    "score_lookup",
    "score_numeric",
    "score_pairs",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # once: later reads do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

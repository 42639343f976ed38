"""Benchmark tasks in the style of the RLM paper, generated locally and seeded (no downloads).

``TASKS`` holds the task classes (``sniah``, ``oolong``, ``oolong-pairs``, and ``lookup``: seven question
shapes in development and held-out phrasings); ``run_bench`` runs them
for the methods ``base``, ``rlm`` and ``rlm-no-sub`` and writes results, a summary and plots.
``recursa bench`` and ``recursa view`` are the command-line faces (``recursa.bench.commands``).
"""

from .lookup import LOOKUP_KINDS, LookupCase, make_lookup, score_lookup
from .oolong import OolongCase, make_oolong, score_comparison, score_label, score_numeric
from .pairs import PairsCase, make_pairs, score_pairs
from .results import METHODS, BenchRun
from .runner import arun_bench, run_bench
from .sniah import SniahCase, make_sniah, score_exact
from .tasks import TASKS, BenchCase, Task

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

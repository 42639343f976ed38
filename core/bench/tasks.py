"""The benchmark's task classes behind one shape: ``TASKS[name].make(length, seed) -> BenchCase``."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._context import Context
from .lookup import make_lookup, score_lookup
from .oolong import make_oolong
from .pairs import make_pairs
from .sniah import DEPTHS, make_sniah, score_exact

__all__ = ["TASKS", "BenchCase", "Task", "format_chars", "parse_chars"]


@dataclass(frozen=True)
class BenchCase:
    """One generated question of one task at one context length and seed, and how to score answers."""

    task: str
    length: int
    """Requested context length in characters."""
    seed: int
    context: str | Context
    """One text, or named documents (source trees)."""
    question: str
    gold: str
    """The gold answer as shown in results (for pairs: how many pairs)."""
    kind: str
    """The task's question kind (needle kind for sniah)."""
    score: Callable[[str | None], float] = field(repr=False)
    """Scores a prediction from 0.0 to 1.0."""
    info: dict[str, Any] = field(default_factory=dict)
    """Task-specific facts recorded with each result (e.g. the needle depth)."""


@dataclass(frozen=True)
class Task:
    """A task class: its name, what it measures, and its generator."""

    name: str
    summary: str
    make: Callable[[int, int], BenchCase] = field(repr=False)


def _sniah(length: int, seed: int) -> BenchCase:
    case = make_sniah(length, seed, depth=DEPTHS[seed % len(DEPTHS)])
    return BenchCase("sniah", length, seed, case.context, case.question, case.answer, case.kind,
                     lambda prediction: score_exact(prediction, case.answer), {"depth": case.depth})


def _oolong(length: int, seed: int) -> BenchCase:
    case = make_oolong(length, seed)
    return BenchCase("oolong", length, seed, case.context, case.question, case.answer, case.kind, case.score,
                     {"answer_type": case.answer_type, "records": len(case.records)})


def _pairs(length: int, seed: int) -> BenchCase:
    case = make_pairs(length, seed)
    return BenchCase("oolong-pairs", length, seed, case.context, case.question, f"{len(case.answer)} pairs",
                     case.kind, case.score, {"gold_pairs": len(case.answer), "records": len(case.records)})


def _lookup(length: int, seed: int) -> BenchCase:
    case = make_lookup(length, seed)
    context = Context(case.context, names=case.names, as_list=True) if case.names else case.context
    return BenchCase("lookup", length, seed, context, case.question, " | ".join(case.gold), case.kind,
                     lambda prediction: score_lookup(case, prediction), {"split": case.split})


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("sniah", "needle in an essay-like haystack, needle depth swept by seed; exact match", _sniah),
        Task("oolong", "counting and comparison over line records with latent labels; 0.75**|diff| or exact",
             _oolong),
        Task("oolong-pairs", "all user pairs meeting a condition over labelled records; F1 over pairs", _pairs),
        Task("lookup", "seven question shapes in many phrasings: needles, absent keys, source-tree lookups, "
             "log counts, record sums; seeds 0-99 use the development phrasings; 100+, 200+, 300+ and 400+ "
             "each a later set (400+ also other log and record formats)", _lookup),
    )
}


def parse_chars(text: str) -> int:
    """``"8000"``, ``"8K"``, ``"1.5M"`` or ``"10m"`` as a number of characters (K = 1,000, M = 1,000,000)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if not match:
        raise ValueError(f"not a length: {text!r}; write it like 8000, 8K or 1M")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def format_chars(n: int) -> str:
    """8000 -> ``8K``, 1000000 -> ``1M``, 1500 -> ``1.5K``."""
    for unit, scale in (("M", 1_000_000), ("K", 1_000)):
        if n >= scale:
            value = n / scale
            return f"{value:g}{unit}" if value == round(value, 1) else f"{value:.1f}{unit}"
    return str(n)

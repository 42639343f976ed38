"""OOLONG-Pairs style (O(N²)): list every pair of users whose records meet a condition.

The context is the same line records as ``oolong`` (``Date: … || User: … || Instance: …``, each
instance with a latent label), with fewer users so each has several records. A question asks for
all unordered pairs of distinct user ids meeting one of these conditions (the seed picks one unless
``kind`` is given):

- ``both_any``: both users have at least one instance labelled A or B;
- ``cross``: one user has an instance labelled A and the other an instance labelled B;
- ``both_after``: both users have an instance labelled A dated on or after a given day;
- ``both_none``: neither user has any instance labelled A.

The gold answer is computed from the records; predictions are scored by F1 over unordered pairs.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations

from .oolong import LABELS, Record, _preamble, make_records

__all__ = ["MAX_USERS", "PAIRS_KINDS", "PairsCase", "gold_pairs", "make_pairs", "parse_pairs", "score_pairs"]

PAIRS_KINDS = ("both_any", "cross", "both_after", "both_none")
MAX_USERS = 300

Pair = tuple[str, str]


@dataclass(frozen=True)
class PairsCase:
    """One generated OOLONG-Pairs question, with the gold set of user pairs."""

    context: str
    question: str
    answer: frozenset[Pair]
    """Unordered pairs, each stored as ``(smaller_id, larger_id)``."""
    kind: str
    seed: int
    records: list[Record] = field(repr=False, default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    """The condition's labels (``a``, ``b``) and date (``since``), for checking the gold answer."""

    def score(self, prediction: str | None) -> float:
        return score_pairs(prediction, self.answer)


def gold_pairs(records: list[Record], kind: str, params: dict[str, str]) -> frozenset[Pair]:
    """Every unordered pair of distinct users that meets the condition ``kind`` with ``params``."""
    labels: dict[str, set[str]] = defaultdict(set)
    late: dict[str, set[str]] = defaultdict(set)
    since = dt.date.fromisoformat(params["since"]) if "since" in params else None
    for r in records:
        labels[r.user].add(r.label)
        if since is not None and r.date >= since:
            late[r.user].add(r.label)
    a, b = params.get("a", ""), params.get("b", "")
    users = sorted(labels)
    if kind == "both_any":
        ok = [u for u in users if labels[u] & {a, b}]
        return frozenset(combinations(ok, 2))
    if kind == "both_after":
        ok = [u for u in users if a in late[u]]
        return frozenset(combinations(ok, 2))
    if kind == "both_none":
        ok = [u for u in users if a not in labels[u]]
        return frozenset(combinations(ok, 2))
    if kind == "cross":
        has_a = {u for u in users if a in labels[u]}
        has_b = {u for u in users if b in labels[u]}
        return frozenset(
            (u, v) for u, v in combinations(users, 2) if (u in has_a and v in has_b) or (v in has_a and u in has_b)
        )
    raise ValueError(f"unknown OOLONG-Pairs question kind {kind!r}; use one of {', '.join(PAIRS_KINDS)}")


def make_pairs(chars: int = 32_000, seed: int = 0, *, kind: str | None = None) -> PairsCase:
    """An OOLONG-Pairs context of about ``chars`` characters and one question; same seed, same case.

    About one user per four lines, so each user has several records and conditions are selective; at
    most ``MAX_USERS`` users, so the gold answer stays under 45,000 pairs at any length (beyond about
    100K characters users have more records each, and "at least one" conditions hold for more of them).
    """
    rng = random.Random(seed)
    kind = kind or rng.choice(PAIRS_KINDS)
    if kind not in PAIRS_KINDS:
        raise ValueError(f"unknown OOLONG-Pairs question kind {kind!r}; use one of {', '.join(PAIRS_KINDS)}")
    records = make_records(chars, rng, users=min(MAX_USERS, max(6, chars // 85 // 4)))
    a, b = rng.sample(LABELS, 2)
    params: dict[str, str] = {"a": a}
    if kind == "both_any":
        params["b"] = b
        condition = f"both users have at least one instance with the label '{a}' or '{b}'"
    elif kind == "cross":
        params["b"] = b
        condition = (f"one of the two users has at least one instance with the label '{a}' and the other has at "
                     f"least one instance with the label '{b}'")
    elif kind == "both_after":
        since = dt.date(rng.choice((2023, 2024)), rng.randint(1, 12), 1)
        params["since"] = since.isoformat()
        condition = f"both users have at least one instance with the label '{a}' dated on or after {since:%b %d, %Y}"
    else:
        condition = f"neither user has any instance with the label '{a}'"
    ask = (f"List all pairs of user ids (two different users) where {condition}. Each pair is unordered: list "
           "it once, as (smaller_id, larger_id), one pair per line, and nothing else.")
    context = "\n".join(r.line() for r in records) + "\n"
    return PairsCase(context, f"{_preamble()}\n\n{ask}", gold_pairs(records, kind, params), kind, seed, records,
                     params)


_PAIR = re.compile(r"[(\[]\s*['\"]?(\d+)['\"]?\s*,\s*['\"]?(\d+)['\"]?\s*[)\]]")
_LINE_PAIR = re.compile(r"^\W*(\d+)\W+(\d+)\W*$")


def parse_pairs(prediction: str | None) -> set[Pair]:
    """The unordered pairs an answer lists: ``(a, b)`` or ``[a, b]`` anywhere, else lines ``a, b``.

    Each pair is normalised to ``(smaller, larger)``; pairs of a user with itself are dropped.
    """
    if not prediction:
        return set()
    found = _PAIR.findall(prediction)
    if not found:
        found = [m.groups() for line in prediction.splitlines() if (m := _LINE_PAIR.match(line))]
    pairs = {tuple(sorted((int(u), int(v)))) for u, v in found}
    return {(str(u), str(v)) for u, v in pairs if u != v}


def score_pairs(prediction: str | None, gold: frozenset[Pair] | set[Pair]) -> float:
    """F1 of the predicted pairs against the gold pairs (1.0 when both are empty)."""
    pred = parse_pairs(prediction)
    if not pred and not gold:
        return 1.0
    hits = len(pred & set(gold))
    if hits == 0:
        return 0.0
    precision, recall = hits / len(pred), hits / len(gold)
    return 2 * precision * recall / (precision + recall)

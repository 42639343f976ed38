"""Budgets: the limits of a run, the shared ledger of what it has spent, and the budget line the root model sees."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from ._lm import Usage

__all__ = ["BUDGET_LEFT", "Budget", "Spend", "SubCallsRefused", "budget_line"]

BUDGET_LEFT = "budget left: "
"""The words that open the line the root model is shown of its budget every turn (``budget_line``). The cache
finds the line by them and leaves it out of its keys (the seconds left differ on every run, so a rerun's root
calls would miss): both read this one constant, so rewording the line cannot silently stop cache hits."""
_UNITS = {"iterations": "turns", "sub_calls": "sub-calls", "cost_usd": "US dollars"}


def budget_line(left: Mapping[str, Any]) -> str:
    """``budget left: 29 turns, 500 sub-calls, 899.9 seconds`` for ``Spend.remaining()``; one line."""
    return BUDGET_LEFT + ", ".join(f"{v} {_UNITS.get(k, k)}" for k, v in left.items())


@dataclass(frozen=True)
class Budget:
    """Limits of one run. ``None`` means unlimited.

    Iterations count root turns of each (sub-)run; sub-calls, tokens, cost and time are shared by the
    whole tree of runs, so recursion cannot multiply them.
    """

    max_iterations: int = 30
    max_depth: int = 1
    """1 is the paper's setting: sub-calls are plain models. 2 lets ``rlm_query`` start one level of sub-RLMs."""
    max_sub_calls: int | None = 500
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    timeout_s: float | None = 900.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **overrides: Any) -> Budget:
        """A copy with the given fields changed; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


class SubCallsRefused(RuntimeError):
    """Model code asked for sub-calls the budget does not allow; the message is what the code sees."""

    def __init__(self, message: str, *, notice: str | None = None) -> None:
        super().__init__(message)
        self.notice = notice
        """What the trace says when the request itself used the sub-call budget up."""


class Spend:
    """What a tree of runs has spent, checked against its budget.

    Runs read its fields; only its methods change them (``add``, ``start_sub_calls``).
    """

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.started = time.monotonic()
        self.sub_calls = 0
        self.usage = Usage()
        self.cost_usd = 0.0
        self._sub_calls_refused = False
        """Set when model code asked for more sub-calls than were left: the budget counts as used up."""

    def add(self, usage: Usage, cost_usd: float) -> None:
        """Count a model call's tokens and cost."""
        self.usage = self.usage + usage
        self.cost_usd += cost_usd

    def start_sub_calls(self, count: int) -> None:
        """Count ``count`` sub-calls as spent, or raise ``SubCallsRefused`` and count none.

        Asking for more than are left uses the sub-call budget up: the run then gets its last turn.
        """
        left = self.sub_calls_left()
        if left is not None and count > left:
            self._sub_calls_refused = True
            raise SubCallsRefused(
                f"sub-call budget exhausted: {count} sub-calls asked, {left} left of {self.budget.max_sub_calls}; "
                "answer from what you have",
                notice=f"sub-call budget exhausted: {count} asked, {left} left",
            )
        if (reason := self.exhausted()) is not None:
            raise SubCallsRefused(f"the {reason} budget is used up; no more sub-calls, answer from what you have")
        self.sub_calls += count

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def exhausted(self) -> str | None:
        """The name of the first shared budget that has run out, or None."""
        b = self.budget
        if self._sub_calls_refused or (b.max_sub_calls is not None and self.sub_calls >= b.max_sub_calls):
            return "max_sub_calls"
        if b.max_tokens is not None and self.usage.total_tokens >= b.max_tokens:
            return "max_tokens"
        if b.max_cost_usd is not None and self.cost_usd >= b.max_cost_usd:
            return "max_cost_usd"
        if b.timeout_s is not None and self.elapsed_s >= b.timeout_s:
            return "timeout"
        return None

    def sub_calls_left(self) -> int | None:
        if self.budget.max_sub_calls is None:
            return None
        return max(0, self.budget.max_sub_calls - self.sub_calls)

    def remaining(self, iterations_used: int) -> dict[str, Any]:
        """What is left, as shown to the root model and to progress displays."""
        b = self.budget
        left: dict[str, Any] = {"iterations": b.max_iterations - iterations_used}
        if b.max_sub_calls is not None:
            left["sub_calls"] = self.sub_calls_left()
        if b.max_tokens is not None:
            left["tokens"] = max(0, b.max_tokens - self.usage.total_tokens)
        if b.max_cost_usd is not None:
            left["cost_usd"] = round(max(0.0, b.max_cost_usd - self.cost_usd), 4)
        if b.timeout_s is not None:
            left["seconds"] = round(max(0.0, b.timeout_s - self.elapsed_s), 1)
        return left

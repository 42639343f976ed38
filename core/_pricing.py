"""What a call costs: a per-model price table, so budgets in US dollars can be enforced.

Prices are public list prices in US dollars per million tokens, checked 2025-10 (OpenAI and
Anthropic pricing pages). They go stale; pass ``prices=`` to a client to override or extend them.
A model the table does not know costs 0.0, and ``price_for`` returns ``None`` so callers can warn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ._lm import Usage

__all__ = ["DEFAULT_PRICES", "Price", "cost_of", "price_for"]


@dataclass(frozen=True)
class Price:
    """A model's price in US dollars per million tokens."""

    input_per_mtok: float
    """Price of one million prompt (input) tokens."""
    output_per_mtok: float
    """Price of one million completion (output) tokens, reasoning tokens included."""

    def cost(self, usage: Usage) -> float:
        """Dollar cost of ``usage`` at this price."""
        return (usage.input_tokens * self.input_per_mtok + usage.output_tokens * self.output_per_mtok) / 1e6


# List prices as of 2025-10, USD per million tokens (cached-input discounts are ignored: costs are an
# upper bound). Keys are lower case; OpenRouter-style names ("openai/gpt-5-mini") resolve by their tail.
DEFAULT_PRICES: dict[str, Price] = {
    # OpenAI
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "o3": Price(2.00, 8.00),
    "o4-mini": Price(1.10, 4.40),
    # Anthropic (as served through OpenRouter and Anthropic's OpenAI-compatible endpoint)
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-sonnet-4.5": Price(3.00, 15.00),
    "claude-sonnet-4-5": Price(3.00, 15.00),
    "claude-haiku-4.5": Price(1.00, 5.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-3.5-haiku": Price(0.80, 4.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
}

# Snapshot suffixes that name the same model at the same price: -2025-08-07, -20250514, -0613, -latest.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)$")


def price_for(model: str, prices: Mapping[str, Price] | None = None) -> Price | None:
    """The price of ``model``, or ``None`` when neither ``prices`` nor the defaults know it.

    ``prices`` overrides ``DEFAULT_PRICES`` entry by entry. Lookup is case-insensitive and tries, in
    order: the exact name, the name without a dated snapshot suffix (``gpt-5-mini-2025-08-07`` ->
    ``gpt-5-mini``), then both again without a ``vendor/`` prefix (``openai/gpt-5-mini``). Only
    snapshot suffixes are stripped, so ``gpt-5-pro`` is never priced as ``gpt-5``.
    """
    table = {key.lower(): value for key, value in DEFAULT_PRICES.items()}
    if prices:
        table.update({key.lower(): value for key, value in prices.items()})
    name = model.strip().lower()
    candidates = [name]
    if "/" in name:
        candidates.append(name.rsplit("/", 1)[1])
    for candidate in candidates:
        for key in (candidate, _SNAPSHOT_SUFFIX.sub("", candidate)):
            if key in table:
                return table[key]
    return None


def cost_of(model: str, usage: Usage, prices: Mapping[str, Price] | None = None) -> float:
    """Dollar cost of ``usage`` on ``model``; 0.0 for a model without a known price (see ``price_for``)."""
    price = price_for(model, prices)
    return price.cost(usage) if price is not None else 0.0

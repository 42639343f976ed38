"""The one protocol every language-model client implements, its plain-data results, and the optional traits a
model may state (its window, grammar-constrained decoding)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["LM", "Completion", "HasWindow", "Message", "TakesGrammar", "Usage", "supports_grammar", "window_chars"]

Message = dict[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""


@dataclass(frozen=True)
class Usage:
    """Tokens spent by one or more calls."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @classmethod
    def estimate(cls, messages: list[Message], reply: str) -> Usage:
        """A guess (4 characters a token) for models that report no usage, so token budgets still hold."""
        prompt_chars = sum(len(m.get("content") or "") for m in messages)
        return cls(max(1, prompt_chars // 4), max(1, len(reply) // 4))

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total_tokens": self.total_tokens}


@dataclass(frozen=True)
class Completion:
    """What a model answered to one request."""

    text: str
    usage: Usage = Usage()
    cost_usd: float = 0.0
    """Cost of this call in US dollars, from the client's price table (0 when unknown or local)."""
    model: str = ""
    cache: str | None = None
    """"hit" when recursa's LM cache answered (then ``usage`` and ``cost_usd`` are zero: the call was free),
    "miss" when the cache was asked and the model answered (the answer is now stored), None when the call was
    not cacheable or no cache was in use."""
    saved_usd: float = 0.0
    """For a hit: what the call cost when it was first made."""

    @property
    def cached(self) -> bool:
        """Whether this answer came from the cache."""
        return self.cache == "hit"


@runtime_checkable
class LM(Protocol):
    """A chat model recursa can use as root or sub model.

    Implementations: ``OpenAIChat`` (any OpenAI-compatible endpoint), ``LocalLlama`` (embedded),
    ``ScriptedLM`` (tests), and adapters for LangChain and LlamaIndex models in ``recursa.integrations``.
    """

    model: str

    async def complete(self, messages: list[Message], **params: Any) -> Completion:
        """Answer a chat; raise an ``LMError`` subclass when it cannot."""
        ...


@runtime_checkable
class HasWindow(Protocol):
    """A model that states how many characters of prompt it reads at once (``LocalLlama``; the LangChain and
    LlamaIndex adapters when told). The loop gives a small window compact history and shorter outputs."""

    context_chars: int | None


@runtime_checkable
class TakesGrammar(Protocol):
    """A backend that takes a GBNF ``grammar=`` (and ``max_tokens=``) parameter constraining what it writes
    (``LocalLlama``). The loop then decodes root replies that can only be a code block or a FINAL."""

    supports_grammar: bool


def window_chars(lm: object) -> int | None:
    """The window ``lm`` states (``HasWindow``), or None: hosted models do not say, and their windows are large."""
    return lm.context_chars if isinstance(lm, HasWindow) else None


def supports_grammar(lm: object) -> bool:
    """Whether ``lm`` takes a ``grammar=`` parameter (``TakesGrammar``)."""
    return isinstance(lm, TakesGrammar) and bool(lm.supports_grammar)

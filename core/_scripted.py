"""A scripted model for tests, demos and examples: it answers from a list or a function, offline."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ._exceptions import LMError
from ._lm import Completion, Message, Usage

__all__ = ["ScriptedLM"]

Responder = Callable[[list[Message]], str]


class ScriptedLM:
    """An ``LM`` whose answers are given in advance.

    ``ScriptedLM(["first reply", "second reply"])`` answers in order and raises ``LMError`` when the
    list runs out; ``ScriptedLM(lambda messages: ...)`` answers every call with a function. Items that
    are exceptions are raised instead of answered. Every request is kept in ``calls``.
    Token usage is estimated as characters / 4, so budgets behave as with a real model.
    """

    def __init__(
        self,
        replies: Iterable[str | BaseException] | Responder,
        *,
        model: str = "scripted",
        cost_per_call: float = 0.0,
    ) -> None:
        self.model = model
        self.cost_per_call = cost_per_call
        self.calls: list[list[Message]] = []
        self._responder: Responder | None = replies if callable(replies) else None
        self._replies = [] if callable(replies) else list(replies)

    async def complete(self, messages: list[Message], **params: Any) -> Completion:
        self.calls.append(list(messages))
        if self._responder is not None:
            text = self._responder(messages)
        elif self._replies:
            item = self._replies.pop(0)
            if isinstance(item, BaseException):
                raise item
            text = item
        else:
            raise LMError(f"ScriptedLM {self.model!r} has no reply left for call {len(self.calls)}.", model=self.model)
        usage = Usage.estimate(messages, text)
        return Completion(text=text, usage=usage, cost_usd=self.cost_per_call, model=self.model)

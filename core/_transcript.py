"""What the root model is shown each turn: the whole chat (the paper's way) or a compact recap.

Small local models copy their own previous reply when it sits in the chat history, and their
windows are short; for them the compact form rebuilds one user message each turn that lists the code
already run and what it printed, so there is no earlier reply to repeat and old outputs shrink.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._lm import Message
from ._prompts import PromptTemplates

__all__ = ["Transcript"]


@dataclass(frozen=True)
class _Turn:
    reply: str
    code: list[str]
    """The blocks of ``reply`` that ran."""
    outputs: str
    """What they printed, as shown to the model (already truncated)."""
    notes: str
    """What the loop said about the reply (a refused FINAL, no code, a repeat)."""
    tail: str
    """The instruction shown after this turn (kept as it was, so the full chat never changes)."""


class Transcript:
    """Builds the root model's messages from the turns so far."""

    def __init__(self, prompts: PromptTemplates, system: str, opening: str, first_step: str, *,
                 compact: bool, max_output_chars: int) -> None:
        self.prompts = prompts
        self.system = system
        self.opening = opening
        self.first_step = first_step
        self.compact = compact
        self.max_output_chars = max_output_chars
        self.turns: list[_Turn] = []

    def add(self, reply: str, *, code: list[str] = (), outputs: str = "", notes: str = "", tail: str) -> None:
        # A reply of megabytes would otherwise be re-sent every turn; the trace keeps it whole.
        self.turns.append(_Turn(_shorten(reply, self.max_output_chars), list(code), outputs, notes, tail))

    def messages(self, tail: str | None = None) -> list[Message]:
        """Messages for the next request; ``tail`` replaces the last turn's instruction (the final turn)."""
        system = {"role": "system", "content": self.system}
        if not self.turns:
            return [system, {"role": "user", "content": f"{self.opening}\n\n{self.first_step}"}]
        if self.compact:
            return [system, {"role": "user", "content": self._recap(tail)}]
        messages = [system, {"role": "user", "content": f"{self.opening}\n\n{self.first_step}"}]
        for i, turn in enumerate(self.turns):
            last = i == len(self.turns) - 1
            feedback = []
            if turn.code:
                feedback.append(self.prompts.render("output", outputs=turn.outputs))
            if turn.notes:
                feedback.append(turn.notes)
            feedback.append(tail if last and tail is not None else turn.tail)
            messages += [{"role": "assistant", "content": turn.reply},
                         {"role": "user", "content": "\n\n".join(feedback)}]
        return messages

    def _recap(self, tail: str | None) -> str:
        parts = [self.opening]
        older_limit = max(200, self.max_output_chars // 4)
        for i, turn in enumerate(self.turns):
            last = i == len(self.turns) - 1
            if turn.code:
                outputs = turn.outputs if last else _shorten(turn.outputs, older_limit)
                parts.append(self.prompts.render("step", code="\n".join(c.rstrip() for c in turn.code),
                                                 outputs=outputs))
            if turn.notes and last:
                parts.append(turn.notes)
        parts.append(tail if tail is not None else self.turns[-1].tail)
        return "\n\n".join(parts)


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit:,} more characters not repeated here]"

"""What the root model is shown: the system prompt, the opening, each turn's feedback, and the chat they make.

The loop decides; this module words it. Two forms of the chat: the whole of it (the paper's way) or a
compact recap. Small local models copy their own previous reply when it sits in the chat history, and
their windows are short; for them the compact form rebuilds one user message each turn that lists the
code already run and what it printed, so there is no earlier reply to repeat and old outputs shrink.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from string import Template
from typing import Any

from ._budget import budget_line
from ._context import Context
from ._lm import Message
from ._prompts import PromptTemplates
from ._text import clip
from .sandbox import ExecResult

__all__ = ["Transcript", "format_result", "search_hint"]


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
    """Builds the root model's messages for one run: the prompts rendered for it, and the turns so far.

    ``remaining`` says what is left of the budget; every instruction the model gets shows it.
    """

    def __init__(
        self,
        prompts: PromptTemplates,
        question: str,
        context: Context,
        *,
        remaining: Callable[[], dict[str, Any]],
        sub_calls: bool,
        recursive: bool,
        sub_context_chars: int,
        compact: bool,
        max_output_chars: int,
    ) -> None:
        """
        Args:
            sub_calls: the REPL has ``llm_query`` (the system prompt documents it).
            recursive: ``rlm_query`` starts a sub-RLM at this depth (documented too).
            sub_context_chars: how much text the prompt says a sub-call can read.
            compact: rebuild one recap message each turn instead of the whole chat.
            max_output_chars: how much of a step's output the model is shown.
        """
        self.prompts = prompts
        self.question = question
        self.remaining = remaining
        self.compact = compact
        self.max_output_chars = max_output_chars
        self.system = _system_prompt(prompts, context, sub_calls=sub_calls, recursive=recursive,
                                     sub_context_chars=sub_context_chars, compact=compact,
                                     max_output_chars=max_output_chars)
        info = context.describe()
        self.preview: str = info["preview"]
        """The start of the context, the one part of it the model is shown without running code."""
        self.opening = self.render("first_user", context_summary=_summary(info, as_list=context.as_list),
                                   preview=self.preview)
        self.first_step = ""
        self._example = prompts.example_list if context.as_list else prompts.example_str
        self.turns: list[_Turn] = []

    def begin(self, search: tuple[str, str] | None = None) -> None:
        """Complete the first message: with the host's first ``search`` (its code and output) when one ran, else
        with an example whose search is for the question's most distinctive word."""
        if search is not None:
            code, output = search
            self.opening += "\n\n" + self.prompts.render("first_search", code=code, output=output)
            self.first_step = self.render("next_step")
        else:
            example = Template(self._example).substitute(keyword=search_hint(self.question))
            self.first_step = self.render("first_step", example=example)

    def render(self, name: str, **values: Any) -> str:
        """A prompt template filled in for this run: its question and the budget left now."""
        values.setdefault("question", self.question)
        return self.prompts.render(name, remaining=budget_line(self.remaining()), **values)

    def shown_output(self, text: str) -> str:
        """Code output as the model sees it: cut at ``max_output_chars``, with a note saying how to print less."""
        limit = self.max_output_chars
        return clip(text, limit, note=f"\n[... output truncated: showed {limit:,} of {len(text):,} characters. "
                                      "Print less (counts, short windows) and keep results in variables.]")

    def add(self, reply: str, *, code: list[str] = (), outputs: str = "", notes: str = "", tail: str) -> None:
        # A reply of megabytes would otherwise be re-sent every turn; the trace keeps it whole.
        self.turns.append(_Turn(_not_repeated(reply, self.max_output_chars), list(code), outputs, notes, tail))

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
                outputs = turn.outputs if last else _not_repeated(turn.outputs, older_limit)
                parts.append(self.prompts.render("step", code="\n".join(c.rstrip() for c in turn.code),
                                                 outputs=outputs))
            if turn.notes and last:
                parts.append(turn.notes)
        parts.append(tail if tail is not None else self.turns[-1].tail)
        return "\n\n".join(parts)


def format_result(result: ExecResult) -> str:
    """One code step's output, error and sandbox notice, as the model reads them."""
    parts = [result.output.rstrip("\n")] if result.output else []
    if result.error:
        parts.append(f"Error: {result.error.rstrip()}")
    if result.notice:
        parts.append(result.notice)
    return "\n".join(parts) if parts else "(no output: use print() to see values)"


_STOPWORDS = frozenset(
    "the a an of for in on at to is are was were be what which who whom whose when where why how many much "
    "does do did has have had this that these those with from by and or not it its as mentioned provided text "
    "context document documents give list find tell me all each every there their than then".split()
)


def search_hint(question: str) -> str:
    """The question's most distinctive word, as a regex, for the first-step example in the prompt.

    Small models copy the example's search literally, so it should search for something real: a word
    with digits, dashes or capitals beats a long word, which beats a short one.
    """
    words = [w.strip(".,;:!?\"'()[]{}") for w in question.split()]
    words = [w for w in words if len(w) > 2 and w.lower() not in _STOPWORDS]
    if not words:
        return "TODO"

    def score(word: str) -> tuple[int, int]:
        special = any(c.isdigit() for c in word) or "-" in word or "_" in word or word[1:] != word[1:].lower()
        return (1 if special else 0, len(word))

    return re.escape(max(words, key=score))


def _system_prompt(prompts: PromptTemplates, context: Context, *, sub_calls: bool, recursive: bool,
                   sub_context_chars: int, compact: bool, max_output_chars: int) -> str:
    sub_doc = ""
    if sub_calls:
        rlm_doc = "\n" + prompts.rlm_query_doc if recursive else ""
        sub_doc = prompts.render("sub_call_doc", sub_chars=f"{sub_context_chars:,}", rlm_query_doc=rlm_doc) + "\n"
    kind = " (a list of documents; their names are in `context_names`)" if context.as_list else " (a str)"
    # Small models reach for FINAL_VAR with names that do not exist; big ones use it well.
    final_var_doc = "" if compact else prompts.final_var_doc.rstrip("\n")
    return prompts.render("system", context_kind=kind, sub_call_doc=sub_doc, final_var_doc=final_var_doc,
                          max_output_chars=f"{max_output_chars:,}")


def _summary(info: dict[str, Any], *, as_list: bool) -> str:
    """The context's shape for the first message: its size, and the names and sizes of its documents."""
    if not as_list:
        return f"one string of {info['total_chars']:,} characters."
    lengths = info["lengths"]
    shown = ", ".join(f"{name} ({length:,} chars)" for name, length in zip(info["names"][:20], lengths[:20],
                                                                           strict=False))
    more = f", and {len(lengths) - 20} more" if len(lengths) > 20 else ""
    return f"a list of {len(lengths)} documents, {info['total_chars']:,} characters in all: {shown}{more}."


def _not_repeated(text: str, limit: int) -> str:
    """A long reply or an old output, cut where the chat repeats it (the trace keeps it whole)."""
    return clip(text, limit, note="\n[... {cut:,} more characters not repeated here]")

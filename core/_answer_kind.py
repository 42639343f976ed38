"""What kind of answer a question wants, and the answers the host computes for the kinds a small model cannot.

A 1.5B root model reads a count or a total off a search's output badly: shown "Lines containing all of 'shipping',
'ERROR': 311", it answers ``FINAL(2)``, and asked again it answers 2 again. The same model is good at two easier
things: telling what kind of answer a question asks for (a count, a total, one value, a list), and picking, from a
few labelled candidates, the one that answers a question. So for counts, totals and lists the host computes the
candidates from the text itself and the helper model only picks:

- a count: how many lines hold every word of the question the text has (per form of a word, where a word sits in
  the lines in a few distinct ways, e.g. ``[billing]`` and ``from billing``);
- a total: the sum of the last number on each of those lines, when that number follows the same label in all of
  them (``amount: 12.50``);
- a list: the value each of those lines gives, read off one line at a time and found in that line verbatim.

A pick is taken only when the helper makes it twice, with every option under another letter the second time (a
small model favours a letter), and only for candidates computed over the lines that hold every word. Anything else falls
back to the ordinary loop, where the root model writes code and its answer is checked.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from .sandbox._repl_tools import SearchReport

__all__ = ["Ask", "Candidate", "answer_kind", "choose", "count_candidates", "list_values", "total_candidate",
           "total_code"]

Ask = Callable[[str, str], Awaitable[str]]
"""Send one user prompt under a GBNF grammar to the helper model; return its reply."""

_KINDS = {"A": "count", "B": "total", "C": "value", "D": "list"}
_KIND_PROMPT = """Here is a question about a text:
{question}

What kind of answer does it ask for?
A) a count: how many lines, records, entries or times
B) a total: the sum of amounts or numbers
C) a single value, name or file
D) a list of several values
Reply with the letter only."""
_LETTERS = "ABCDEFGHIJKLMNOP"
_MAX_LIST_LINES = 8


@dataclass(frozen=True)
class Candidate:
    """One answer the host computed, as the helper model is shown it."""

    value: str
    label: str
    acceptable: bool = True
    """Taken as the answer when picked; False for distractors shown so that the right one has to be chosen
    (a count of the lines holding only one of the words, or holding every word in any of its forms)."""


async def answer_kind(ask: Ask, question: str) -> str | None:
    """``"count"``, ``"total"``, ``"value"`` or ``"list"``: the kind of answer ``question`` asks for."""
    reply = await ask(_KIND_PROMPT.format(question=question), _choice_grammar(len(_KINDS)))
    return _KINDS.get(reply.strip()[:1])


def count_candidates(report: SearchReport) -> list[Candidate]:
    """Counts from the host's first search: of the lines that hold every word the text has (one candidate per
    form when a word takes a few forms there), and of the lines holding each word alone (distractors)."""
    found = [word for word, n in report.counts.items() if n]
    if not found:
        return []
    candidates: list[Candidate] = []
    if len(found) == 1:
        candidates.append(Candidate(str(report.counts[found[0]]), _lines_with(report.counts[found[0]], found)))
        return candidates
    if report.all_count is None:
        return []
    for word, forms in report.forms.items():
        others = [other for other in found if other != word]
        candidates += [Candidate(str(n), _lines_with(n, [form, *others])) for form, n in forms]
    candidates.append(Candidate(str(report.all_count), _lines_with(report.all_count, found)
                                + (" (in any form)" if report.forms else ""), acceptable=not report.forms))
    candidates += [Candidate(str(report.counts[word]), _lines_with(report.counts[word], [word]), acceptable=False)
                   for word in found]
    return candidates


def total_code(question: str) -> str:
    """Code the host runs in the REPL: the sum of the last number of each line holding every word, and how many
    of those lines have the same word before that number."""
    return (
        "def _host_total():\n"
        "    import decimal\n"
        f"    lines = search({question!r}, 0)\n"
        "    rows = []\n"
        "    for line in lines:\n"
        "        found = list(re.finditer(r'-?\\d[\\d,]*(?:\\.\\d+)?', line))\n"
        "        label = re.findall(r'[^\\W\\d_]+', line[:found[-1].start()])[-1:] if found else []\n"
        "        rows.append((label[0], found[-1].group().replace(',', '')) if label else None)\n"
        "    labels = Counter(row[0] for row in rows if row).most_common(1)\n"
        "    total = sum(decimal.Decimal(row[1]) for row in rows if row)\n"
        "    print(json.dumps({'lines': len(rows), 'label': labels[0] if labels else None, 'total': str(total)}))\n"
        "_host_total()\n"
        "del _host_total\n"
    )


def total_candidate(output: str, report: SearchReport) -> Candidate | None:
    """The total ``total_code`` found, when every line has a number with the same word before it."""
    found = [word for word, n in report.counts.items() if n]
    try:
        summary = json.loads(output.strip().splitlines()[-1])
        lines, (label, labelled), total = summary["lines"], summary["label"], summary["total"]
    except (ValueError, IndexError, KeyError, TypeError):
        return None
    if not found or not lines or labelled < lines:
        return None
    return Candidate(total, f"{total}, the sum of the numbers after '{label}' on the {lines:,} lines that contain "
                            f"{_words(found)}")


async def choose(ask: Ask, question: str, heading: str, candidates: Sequence[Candidate]) -> Candidate | None:
    """The candidate the helper picks twice, with every option under another letter the second time, if it is an
    acceptable one: a pick made by position, not by meaning, does not survive the move."""
    if not candidates:
        return None
    options: list[Candidate | None] = [*candidates, None]
    picks = []
    turn = len(options) // 2  # a rotation moves every option to another letter
    for order in (options, options[turn:] + options[:turn]):
        shown = "\n".join(f"{_LETTERS[i]}) {option.label if option else 'none of these'}"
                          for i, option in enumerate(order))
        prompt = (f"Question: {question}\n\n{heading}\n{shown}\n\nWhich one answers the question? "
                  "Reply with the letter only.")
        reply = (await ask(prompt, _choice_grammar(len(order)))).strip()[:1]
        if reply not in _LETTERS[:len(order)]:
            return None
        picks.append(order[_LETTERS.index(reply)])
    first, second = picks
    if first is None or first is not second or not first.acceptable:
        return None
    return first


async def list_values(ask: Ask, question: str, lines: Sequence[str]) -> list[str] | None:
    """The value each line gives for ``question``, read off one line at a time; None unless every line gives one
    that it contains verbatim (a value the helper made up, or a line it could not read, ends the attempt)."""
    if not 2 <= len(lines) <= _MAX_LIST_LINES:
        return None
    values: list[str] = []
    for line in lines:
        prompt = (f"Line of a text:\n{line}\n\nQuestion: {question}\nThis line gives one of the answers. Reply with "
                  "that one value only, copied exactly from the line.")
        value = (await ask(prompt, _LINE_GRAMMAR)).strip().strip("\"'`").rstrip(".").strip()
        if not value or value.casefold() not in line.casefold() or value.casefold() in question.casefold():
            return None
        if value not in values:
            values.append(value)
    return values if len(values) >= 2 else None


_LINE_GRAMMAR = 'root ::= [^\\n]{1,80}'


def _choice_grammar(n: int) -> str:
    return "root ::= " + " | ".join(f'"{letter}"' for letter in _LETTERS[:n])


def _words(words: Sequence[str]) -> str:
    quoted = [repr(word) for word in words]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def _lines_with(n: int, words: Sequence[str]) -> str:
    return f"{n:,} lines contain {_words(words)}"


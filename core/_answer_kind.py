"""What kind of answer a question wants, and the answers the host computes for the kinds a small model cannot.

A 1.5B root model reads a count or a total off a search's output badly: shown "Lines containing all of 'shipping',
'ERROR': 311", it answers ``FINAL(2)``, and asked again it answers 2 again. Asked to pick the right count from a few
labelled ones, it picks by letter, not by meaning (the pick follows the option that is moved under "A"). What it
does well is tell what kind of answer a question asks for: a count, a total, one value, a list. So for those kinds
the host computes the answer from the lines its first search found, the lines that hold every word of the
question the text has, and takes it only where the lines leave no doubt:

- a count: how many such lines there are; where a word sits in them in a few distinct ways (``[billing]`` and
  ``from billing``), how many hold it in the one way that is a field of every line of the text (the service that
  wrote a log line, not one its message mentions); with no such field, the count is left to the root model;
- a total: the sum of the last number on each such line, when the same word stands before it on all of them
  (``amount: 12.50``);
- a list: the value each such line gives, read off one line at a time and found in that line verbatim.

Anything else falls back to the ordinary loop, where the root model writes code and its answer is checked.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence

from .sandbox._repl_tools import SearchReport

__all__ = ["Ask", "answer_kind", "host_count", "host_total", "list_values", "total_code"]

Ask = Callable[[str, str], Awaitable[str]]
"""Send one user prompt under a GBNF grammar to the helper model; return its reply."""

_KINDS = [("count", "a count: how many lines, records, entries or times"),
          ("total", "a total: the sum of amounts or numbers"),
          ("value", "a single value, name or file"),
          ("list", "a list of several values")]
_KIND_GRAMMAR = 'root ::= "A" | "B" | "C" | "D"'
_LINE_GRAMMAR = "root ::= [^\\n]{1,80}"
_MAX_LIST_LINES = 8


async def answer_kind(ask: Ask, question: str) -> str | None:
    """``"count"``, ``"total"``, ``"value"`` or ``"list"``: the kind of answer ``question`` asks for, when the helper
    names it twice, with the kinds under other letters the second time (a pick made by letter does not survive)."""
    picks = set()
    for order in (_KINDS, _KINDS[2:] + _KINDS[:2]):
        options = "\n".join(f"{letter}) {text}" for letter, (_, text) in zip("ABCD", order, strict=True))
        prompt = (f"Here is a question about a text:\n{question}\n\nWhat kind of answer does it ask for?\n{options}\n"
                  "Reply with the letter only.")
        reply = (await ask(prompt, _KIND_GRAMMAR)).strip()[:1]
        if not reply or reply not in "ABCD":
            return None
        picks.add(order["ABCD".index(reply)][0])
    return picks.pop() if len(picks) == 1 else None


def host_count(report: SearchReport) -> str | None:
    """How many lines hold every word of the question that the text has; where one word takes several forms in
    them, how many hold it in the one form that is a field of every line (the record's own ``[billing]``)."""
    found = report.found
    if len(found) == 1:
        return str(report.counts[found[0]])
    if len(found) < 2 or report.all_count is None:
        return None
    if not report.forms:
        return str(report.all_count)
    if len(report.forms) == 1 and (word := next(iter(report.forms))) in report.fields:
        return str(dict(report.forms[word])[report.fields[word]])
    return None


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


def host_total(output: str) -> str | None:
    """The total ``total_code`` printed, when every line has a number with the same word before it."""
    try:
        summary = json.loads(output.strip().splitlines()[-1])
        lines, (_, labelled), total = summary["lines"], summary["label"], summary["total"]
    except (ValueError, IndexError, KeyError, TypeError):
        return None
    return total if lines and labelled == lines else None


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


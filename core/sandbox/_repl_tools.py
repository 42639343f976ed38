"""Helpers the REPL gives model code besides ``context``: ``search`` and the modules code forgets to import.

Stdlib only: the worker reads this file before its sandbox closes and runs it in the REPL process, and
the host imports it too (for tests and to describe the tools). ``search`` is the first step the host
runs for every question, so the root model's first decision is made on real output.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable

__all__ = ["PRELOADED_MODULES", "QUESTION_STOPWORDS", "Lines", "SearchReport", "make_search", "number",
           "preloaded_namespace", "query_terms", "read_search"]

PRELOADED_MODULES = ("re", "json", "math", "collections", "itertools", "functools", "statistics", "string",
                     "textwrap", "datetime")
"""Imported before model code runs (plus ``Counter`` and ``defaultdict``): small models forget ``import re``."""

QUESTION_STOPWORDS = frozenset("""
a an the of for in on at to is are was were be been being am what which who whom whose when where why how
many much does do did done has have had this that these those with from by and or not no it its as into
than then there their them they he she his her we you your i me my our us all any each every some
mentioned provided text context document documents give list find tell show please can could would should
will shall may might must about also just only so such very more most less least other another same
given say says said named called whether if else one ones
""".split())
"""Words of a question that say nothing about where its answer is."""

EACH_WORD_HEADER = "Lines containing each word:"
ABSENT_HEADER = "Not found anywhere in context:"
ALL_WORDS_HEADER = "Lines containing all of"
OTHER_LINES_HEADER = "Other lines, with some of the words:"
FORMS_HEADER = "  by how "
FIELD_NOTE = " (a field of every line)"
"""How ``search`` labels its findings; ``read_search`` parses them back for the host's answer checks."""

_WINDOW = 240
_WORD = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.'-]*[A-Za-z0-9_])?")


def query_terms(query: str | list[str] | tuple[str, ...]) -> list[str]:
    """The distinctive words of a query, in order, without stopwords, duplicates or surrounding punctuation."""
    words = list(query) if isinstance(query, list | tuple) else _WORD.findall(query)
    terms: list[str] = []
    for word in words:
        word = str(word).strip().strip(".,;:!?'\"()[]{}").removesuffix("'s")
        if not word or word.lower() in QUESTION_STOPWORDS or word.lower() in (t.lower() for t in terms):
            continue
        if len(word) > 1 or word.isdigit():
            terms.append(word)
    return terms


def _term_pattern(term: str) -> re.Pattern[str]:
    """A whole-word, case-insensitive match that also takes a plain plural ("order" finds "orders")."""
    stem = term[:-1] if len(term) > 3 and term.lower().endswith("s") and not term.lower().endswith("ss") else term
    plural = "(?:s|es)?" if stem[-1:].isalpha() else ""
    return re.compile(rf"(?<![\w]){re.escape(stem)}{plural}(?![\w])", re.IGNORECASE)


class Lines(list):
    """The lines ``search`` returns: a plain list whose repr stays short when it ends a code block."""

    def __repr__(self) -> str:
        return f"<{len(self):,} lines: len(lines) counts them, print(lines[:5]) shows the first five>"


def make_search(documents: list[str], names: list[str], *, as_list: bool,
                out: Callable[[str], None] = print) -> Callable[..., list[str]]:
    """``search(query, max_lines=8)`` over these documents, printing through ``out``."""
    line_starts: list[list[int] | None] = [None] * len(documents)

    def starts(i: int) -> list[int]:
        if line_starts[i] is None:
            text = documents[i]
            found = [0]
            pos = text.find("\n")
            while pos != -1:
                found.append(pos + 1)
                pos = text.find("\n", pos + 1)
            line_starts[i] = found
        return line_starts[i]  # type: ignore[return-value]

    def span(d: int, line: int) -> tuple[int, int]:
        """Where line ``line`` of document ``d`` begins and ends (without its newline)."""
        line_of = starts(d)
        end = line_of[line + 1] - 1 if line + 1 < len(line_of) else len(documents[d])
        return line_of[line], end

    def search(query: str | list[str], max_lines: int = 8) -> Lines:
        """Print how many lines of ``context`` contain each word of ``query`` and the lines that match it
        best (rarest words weigh most); return every line that contains all the words that occur."""
        def show(items: list[tuple[tuple[int, int], dict[int, int]]]) -> None:
            for (d, line), hit in items:
                begin, end = span(d, line)
                rarest = max(hit, key=lambda t: weights[t])
                out(f"  {names[d] + ':' if as_list else 'line '}{line + 1}: "
                    f"{_window(documents[d], begin, end, hit[rarest])}")

        terms = _split_unmatched(query_terms(query), documents)
        if not terms:
            out("search(): no searchable words in the query; pass the distinctive words, e.g. search('error payments')")
            return Lines()
        # lines[(doc, line number)] -> {term index: first match offset in the document}
        lines: dict[tuple[int, int], dict[int, int]] = {}
        per_term = [0] * len(terms)
        total_lines = 0
        for d, text in enumerate(documents):
            line_of = starts(d)
            total_lines += len(line_of)
            for t, term in enumerate(terms):
                seen_line = -1
                for match in _term_pattern(term).finditer(text):
                    line = bisect.bisect_right(line_of, match.start()) - 1
                    if line != seen_line:
                        seen_line = line
                        per_term[t] += 1
                        lines.setdefault((d, line), {}).setdefault(t, match.start())
        # A name from code (PY_SOURCE, ZipExtFile, max_iterations) says more than any word around it.
        weights = [math.log(1 + total_lines / (1 + n)) * (2 if IDENTIFIER.fullmatch(term) else 1) if n else 0.0
                   for n, term in zip(per_term, terms, strict=True)]
        present = [t for t, n in enumerate(per_term) if n]
        everywhere = [key for key, hit in lines.items() if present and all(t in hit for t in present)]

        shown = ", ".join(f"{term!r} {n:,}" for term, n in zip(terms, per_term, strict=True))
        out(f"search({' '.join(terms)!r}) over {total_lines:,} lines. {EACH_WORD_HEADER} {shown}")
        if not present:
            out("No line contains any of these words.")
            return Lines()
        if absent := [terms[t] for t, n in enumerate(per_term) if not n]:
            out(f"{ABSENT_HEADER} {', '.join(map(repr, absent))}")
        if len(present) > 1:
            words = ", ".join(repr(terms[t]) for t in present)
            out(f"{ALL_WORDS_HEADER} {words}: {len(everywhere):,}")
            keys = sorted(everywhere)
            for t in present:
                if forms := _forms(documents, keys, span, terms[t]):
                    out(f"{FORMS_HEADER}{terms[t]!r} appears in them: " + ", ".join(
                        f"{f!r} {n:,}" + (FIELD_NOTE if _is_field(documents, f, terms[t], total_lines) else "")
                        for f, n in forms))
        definitions = [definition_pattern(term) for term in terms]

        def score(item: tuple[tuple[int, int], dict[int, int]]) -> float:
            """The weight of the words a line holds, doubled for the line that defines a name of the query."""
            (d, line), hit = item
            begin, end = span(d, line)
            weight = sum(weights[t] for t in hit)
            return weight * 2 if any(definitions[t].search(documents[d], begin, end) for t in hit) else weight

        ranked = sorted(lines.items(), key=lambda item: (-score(item), item[0]))
        if len(present) > 1 and everywhere:
            # Lines with every word first, under their own heading, so a look-alike that lacks one word is
            # never read as one of them.
            full = set(everywhere)
            shown_lines = [item for item in ranked if item[0] in full][:max_lines]
            rest = [item for item in ranked if item[0] not in full][:max(0, max_lines - len(shown_lines))]
            show(shown_lines)
            if rest:
                out(OTHER_LINES_HEADER)
                show(rest)
        else:
            if ranked:
                out("Best matching lines:")
            show(ranked[:max_lines])
        result = Lines()
        for d, line in sorted(everywhere):
            begin, end = span(d, line)
            result.append(documents[d][begin:end])
        return result

    return search


IDENTIFIER = re.compile(
    r"[A-Za-z_][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+_?|_+[A-Za-z0-9]\w*|[a-z]+[A-Z]\w*|[A-Z][a-z0-9]+[A-Z]\w*")
"""A word that is a name from code: snake_case, SCREAMING_CASE with an underscore, camelCase or CamelCase."""


def definition_pattern(name: str) -> re.Pattern[str]:
    """Where code defines ``name``: ``class name``, ``def name``, or ``name = ...`` / ``name: type = ...``."""
    escaped = re.escape(name)
    return re.compile(rf"\b(?:class|def)\s+{escaped}\b|(?<![\w.]){escaped}\s*(?::[^=\n]{{0,60}})?=(?!=)")


def _split_unmatched(terms: list[str], documents: list[str]) -> list[str]:
    """Terms, with a compound that occurs nowhere ("ERROR-level", "user_id") replaced by its parts: people join
    words the text keeps apart."""
    out: list[str] = []
    for term in terms:
        parts = [p for p in re.split(r"[-_./]", term) if p and p.lower() not in QUESTION_STOPWORDS]
        if len(parts) > 1 and not any(_term_pattern(term).search(text) for text in documents):
            out.extend(p for p in parts if p.lower() not in (t.lower() for t in [*out, *terms]))
        else:
            out.append(term)
    return out


def _forms(documents: list[str], keys: list[tuple[int, int]], span: Callable[[int, int], tuple[int, int]],
           term: str) -> list[tuple[str, int]]:
    """How a word sits in the lines that contain every word, when it sits in a few distinct ways.

    In records a word can fill different fields: ``[inventory]`` (the service that logged) and ``from
    inventory`` (the one it called). A count of lines that merely contain the word mixes them; showing
    the forms with their counts (a line counted once for each form it holds) lets the code count the one
    the question means. Prose, where a word's neighbours vary freely, shows nothing."""
    if len(keys) < 4:
        return []
    pattern = _term_pattern(term)
    counts: dict[str, int] = {}
    for d, line in keys:
        text = documents[d]
        begin, end_of_line = span(d, line)
        held = set()
        for match in pattern.finditer(text, begin, end_of_line):
            start, end = match.span()
            before, after = text[start - 1:start], text[end:end + 1]
            if before and not before.isspace() and not before.isalnum():
                prefix = before
            else:
                token = re.search(r"(\S+)[ \t]+$", text[max(begin, start - 24):start])
                prefix = token[1] + " " if token and not any(c.isdigit() for c in token[1]) else ""
            suffix = after if after and not after.isspace() and not after.isalnum() else ""
            held.add(prefix + text[start:end] + suffix)
        for form in held:
            counts[form] = counts.get(form, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    common = [(form, n) for form, n in ranked[:4] if n >= max(2, len(keys) // 20)]
    if len(common) < 2 or sum(n for _, n in common) < 0.8 * len(keys):
        return []
    return common


def _is_field(documents: list[str], form: str, term: str, total_lines: int) -> bool:
    """Whether the slot a form puts the word in (``[billing]``: any word in brackets) is filled in nearly every
    line of the text: a field each record has, such as the service that wrote a log line, rather than a word
    the free text of some lines mentions (``from billing``)."""
    found = _term_pattern(term).search(form)
    if not found or found.group() == form or total_lines < 20:
        return False
    boundary = r"(?<!\w)" if form[:1].isalnum() else ""
    slot = re.compile(rf"{boundary}{re.escape(form[:found.start()])}[^\W\d_][\w.-]*{re.escape(form[found.end():])}")
    filled = sum(1 for text in documents for line in text.splitlines() if slot.search(line))
    return filled >= 0.9 * total_lines


def _window(text: str, begin: int, end: int, at: int) -> str:
    """The line ``text[begin:end]``, or about ``_WINDOW`` characters of it around offset ``at``."""
    if end - begin <= _WINDOW:
        return text[begin:end].strip()
    start = max(begin, min(at - _WINDOW // 3, end - _WINDOW))
    stop = min(end, start + _WINDOW)
    return ("..." if start > begin else "") + text[start:stop].strip() + ("..." if stop < end else "")


class SearchReport:
    """What one ``search`` printed, read back by the host for its answer checks: how many lines contain each
    word, the words the text never contains, how many lines contain every word found (and the ones shown:
    all of them when ``complete``), and the forms a word takes in those lines (and which is a field)."""

    def __init__(self, counts: dict[str, int] | None = None, all_count: int | None = None,
                 full_lines: tuple[str, ...] = (), forms: dict[str, list[tuple[str, int]]] | None = None):
        self.counts = counts or {}
        self.all_count = all_count
        self.full_lines = full_lines
        self.forms = forms or {}
        self.fields: dict[str, str] = {}
        """For a word with forms: the one form that is a field every line of the text has (``[billing]``)."""

    @property
    def absent(self) -> tuple[str, ...]:
        return tuple(word for word, n in self.counts.items() if n == 0)

    @property
    def found(self) -> tuple[str, ...]:
        """The question's words the text has, in the question's order."""
        return tuple(word for word, n in self.counts.items() if n)

    @property
    def complete(self) -> bool:
        return self.all_count is not None and self.all_count == len(self.full_lines)


_QUOTED_COUNT = re.compile(r"""(?:'([^']*)'|"([^"]*)") ([\d,]+)""")
_FIELD_FORM = re.compile(r"""(?:'([^']*)'|"([^"]*)") [\d,]+""" + re.escape(FIELD_NOTE))


def _quoted_counts(text: str) -> list[tuple[str, int]]:
    return [(a or b, int(n.replace(",", ""))) for a, b, n in _QUOTED_COUNT.findall(text)]


def read_search(output: str) -> SearchReport:
    """Parse the output of ``search`` (the host's first search) back into its findings."""
    report = SearchReport()
    full: list[str] = []
    listing = False
    for line in output.splitlines():
        if line.startswith("search(") and EACH_WORD_HEADER in line:
            report.counts = dict(_quoted_counts(line.split(EACH_WORD_HEADER, 1)[1]))
        elif line.startswith(ALL_WORDS_HEADER):
            found = re.search(r": ([\d,]+)$", line)
            report.all_count, listing = (int(found[1].replace(",", "")) if found else None), True
        elif line.startswith(FORMS_HEADER):
            word, _, forms = line[len(FORMS_HEADER):].partition(" appears in them: ")
            report.forms[word.strip("'\"")] = _quoted_counts(forms)
            if len(fields := _FIELD_FORM.findall(forms)) == 1:
                report.fields[word.strip("'\"")] = fields[0][0] or fields[0][1]
        elif line.startswith(OTHER_LINES_HEADER) or not line.startswith("  "):
            listing = False
        elif listing:
            full.append(line.strip())
    report.full_lines = tuple(full)
    return report


_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def number(text: object, default: float | None = None) -> float:
    """The last number in ``text`` as a float: ``number("amount: 1,234.50")`` is ``1234.5``.

    For sums over lines whose format the code only half knows; no number is a clear error (or ``default``)."""
    found = _NUMBER.findall(str(text))
    if not found:
        if default is not None:
            return default
        raise ValueError(f"number(): no number in {str(text)[:80]!r}")
    return float(found[-1].replace(",", ""))


def preloaded_namespace() -> dict[str, object]:
    """The modules (and two classes) every REPL starts with."""
    import collections

    namespace: dict[str, object] = {name: __import__(name) for name in PRELOADED_MODULES}
    namespace.update(Counter=collections.Counter, defaultdict=collections.defaultdict, number=number)
    return namespace

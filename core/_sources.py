"""Which documents of a context a run used: found in what its code printed and what it sent to sub-models.

Adapters that answer with sources (the LlamaIndex query engine's ``source_nodes``) ask a ``SourceFinder`` built
over the context's documents about ``observed_texts(result.trace)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from ._trace import CodeExecuted, Event, LMCalled

__all__ = ["SourceFinder", "observed_texts"]

_SHARED: tuple[int, ...] = ()
"""Index entry of a window too common to say anything about which document it came from."""
_SPAN = 1 << 40
"""Packs (document, offset) into one int: document * _SPAN + offset."""
_MIN_WHOLE = 8
_TOKEN = re.compile(r"[^\s'\"`()\[\]{}<>,;|=.:!?*#]+(?:[.:!?*#]+[^\s'\"`()\[\]{}<>,;|=.:!?*#]+)*")
"""A word that may be a document name: no spaces, quotes, brackets or ``=``; no punctuation at either end."""
_MAX_NAMED = 20


class SourceFinder:
    """Finds the documents a run used in what it printed and sent to sub-models.

    A document counts as used when, in one code output or one sub-call prompt,

    - ``min_chars`` consecutive characters of its text appear verbatim (or its whole text, when shorter,
      of at least 8 characters), and that stretch is not just part of a longer stretch of another document
      (a phrase many reports share is credited to the report it was printed from); or
    - its name (``context_names``) appears as a word, if it has at least 4 characters and is not a plain
      number, in an output that names at most 20 documents (a longer list is a listing, not a use).

    Each document's text is cut into windows of ``min_chars // 2`` characters at aligned offsets, so any shared
    stretch of ``min_chars`` characters contains a whole window. Scanning costs one dict lookup per
    character of the observed text plus an exact comparison per stretch found, never a pass per document;
    windows that more than ``max_shared`` documents share are boilerplate and not indexed. The scan skips over
    each stretch it finds, so a prompt holding whole documents costs about one lookup per document. The score is
    the share of the document's text that appeared (0.0 when only its name did).
    """

    def __init__(
        self, texts: Sequence[str], names: Sequence[str], *, min_chars: int = 40, max_shared: int = 32
    ) -> None:
        self.texts = texts
        self.min_chars = min_chars
        self.width = width = max(4, min_chars // 2)
        index: dict[int, Any] = {}
        short: dict[int, list[int]] = {}
        for doc, text in enumerate(texts):
            if len(text) < width:
                if len(text.strip()) >= _MIN_WHOLE:
                    short.setdefault(hash(text.strip()[:_MIN_WHOLE]), []).append(doc)
                continue
            for k in range(0, len(text) - width + 1, width):
                key, packed = hash(text[k:k + width]), doc * _SPAN + k
                entry = index.get(key)
                if entry is None:
                    index[key] = packed
                elif type(entry) is int:
                    index[key] = [entry, packed]
                elif entry is not _SHARED:
                    entry.append(packed)
                    if len(entry) > max_shared:
                        index[key] = _SHARED
        self.index, self.short = index, short
        self.names: dict[str, list[int]] = {}
        self.odd_names: list[tuple[str, int]] = []
        for doc, name in enumerate(names):
            if len(name) < 4 or name.isdigit():
                continue
            if _TOKEN.fullmatch(name):
                self.names.setdefault(name, []).append(doc)
            else:
                self.odd_names.append((name, doc))
        self.name_set = frozenset(self.names)

    def find(self, observed: Iterable[str]) -> dict[int, float]:
        """Document index -> score, for every document used in ``observed`` (code outputs and sub-call prompts)."""
        seen: dict[int, list[tuple[int, int]]] = {}  # document -> stretches of its text that appeared
        named: set[int] = set()
        for obs in observed:
            for start, end, doc, at in _undominated(self._stretches(obs)):
                seen.setdefault(doc, []).append((at, at + end - start))
            named |= self._named(obs)
        scores = {doc: min(1.0, _covered(spans) / max(1, len(self.texts[doc].strip()))) for doc, spans in seen.items()}
        for doc in named:
            scores.setdefault(doc, 0.0)
        return scores

    def _stretches(self, obs: str) -> list[tuple[int, int, int, int]]:
        """Every maximal stretch ``(start, end, document, offset)`` of ``obs`` long enough to count for its document."""
        width, texts, get = self.width, self.texts, self.index.get
        found: list[tuple[int, int, int, int]] = []
        reach: dict[tuple[int, int], int] = {}  # (document, obs offset - text offset) -> end of the stretch found
        skip_to = 0  # positions before it lie inside a stretch found already
        for i in range(len(obs) - width + 1):
            if i < skip_to:
                continue
            entry = get(hash(obs[i:i + width]))
            if entry is None:
                continue
            for packed in (entry,) if type(entry) is int else entry:
                doc, k = divmod(packed, _SPAN)
                if reach.get((doc, i - k), -1) >= i + width:
                    continue  # inside a stretch already found
                text = texts[doc]
                if obs[i:i + width] != text[k:k + width]:
                    continue  # a hash collision
                back = _common_suffix(obs, i, text, k)
                ahead = _common_prefix(obs, i + width, text, k + width)
                start, end = i - back, i + width + ahead
                reach[(doc, i - k)] = end
                if end - start >= min(self.min_chars, len(text)):
                    found.append((start, end, doc, k - back))
                    skip_to = max(skip_to, end - width + 1)
        if self.short:
            short_get = self.short.get
            for i in range(len(obs) - _MIN_WHOLE + 1):
                for doc in short_get(hash(obs[i:i + _MIN_WHOLE]), ()):
                    whole = texts[doc].strip()
                    if obs.startswith(whole, i):
                        found.append((i, i + len(whole), doc, 0))
        return found

    def _named(self, obs: str) -> set[int]:
        docs = {doc for name in set(_TOKEN.findall(obs)) & self.name_set for doc in self.names[name]}
        docs.update(doc for name, doc in self.odd_names if name in obs)
        return docs if len(docs) <= _MAX_NAMED else set()


def _common_prefix(a: str, i: int, b: str, j: int) -> int:
    """Length of the common prefix of a[i:] and b[j:], compared in blocks."""
    n, step = 0, 256
    while True:
        m = min(step, len(a) - i - n, len(b) - j - n)
        if m <= 0:
            return n
        if a[i + n:i + n + m] == b[j + n:j + n + m]:
            n, step = n + m, min(step * 2, 1 << 16)
            continue
        while m > 1:  # the first difference is within the next m characters: halve
            half = m // 2
            if a[i + n:i + n + half] == b[j + n:j + n + half]:
                n, m = n + half, m - half
            else:
                m = half
        return n


def _common_suffix(a: str, i: int, b: str, j: int) -> int:
    """Length of the common suffix of a[:i] and b[:j]."""
    n, step = 0, 256
    while True:
        m = min(step, i - n, j - n)
        if m <= 0:
            return n
        if a[i - n - m:i - n] == b[j - n - m:j - n]:
            n, step = n + m, min(step * 2, 1 << 16)
            continue
        while m > 1:
            half = m // 2
            if a[i - n - half:i - n] == b[j - n - half:j - n]:
                n, m = n + half, m - half
            else:
                m = half
        return n


def _undominated(stretches: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """The stretches not strictly inside a longer stretch (of another document) of the same text."""
    kept: list[tuple[int, int, int, int]] = []
    furthest, last, last_kept = -1, (-1, -1), False
    for stretch in sorted(stretches, key=lambda s: (s[0], -s[1])):
        if stretch[:2] != last:  # a new range: kept unless an earlier one reaches as far
            last, last_kept = stretch[:2], stretch[1] > furthest
            furthest = max(furthest, stretch[1])
        if last_kept:
            kept.append(stretch)
    return kept


def _covered(spans: list[tuple[int, int]]) -> int:
    """How many characters the union of ``spans`` covers."""
    total, reach = 0, 0
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def observed_texts(trace: Iterable[Event]) -> list[str]:
    """What a run saw of its context: every code output and every sub-call prompt, at every depth."""
    texts: dict[str, None] = {}
    for event in trace:
        if isinstance(event, CodeExecuted) and event.output:
            texts[event.output] = None
        elif isinstance(event, LMCalled) and event.role == "sub" and event.prompt:
            texts[event.prompt] = None
    return list(texts)

"""Is a FINAL answer backed by what the code printed? A check on the model's claim, not on its wording.

Small models answer from imagination: a number from the budget line, a placeholder such as ``12345``,
or the question's own words. Each of those fails one test: the values the answer asserts never
appeared in any output the model was shown, nor in any of its REPL variables. The check is
deliberately simple and literal so that it holds for any question shape:

- the whole answer appears in the evidence → grounded;
- otherwise its *claim tokens* (words and numbers that are not in the question and are not filler)
  must appear there: every number, identifier and capitalised name (numbers compared as numbers, to
  the answer's precision), and at least half of the plain lowercase words;
- an answer with no claim tokens is grounded only when it says the thing is absent ("not found",
  "none") or is a bare yes/no; an answer that merely repeats the question is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .sandbox._repl_tools import QUESTION_STOPWORDS

__all__ = ["Grounding", "check_grounding"]

_TOKEN = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|[^\W\d_][\w'-]*[\w]|[^\W\d_]|[\w][\w.\-/]*[\w]")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?$")
_FILLER = frozenset("""
answer answers value values result results total sum count number numbers line lines file files defined define
definition class constant set assigned found located there times approximately about exactly equal equals total
following shown printed output code appears appear the is are was in it yes no true false ok named called so
entries entry occurrences occurrence item items
""".split()) | QUESTION_STOPWORDS
_NEGATIVE = re.compile(
    r"\b(not (?:found|mentioned|present|given|stated|specified|listed|included|available|in)|no (?:such|mention|"
    r"match\w*|information|record|data|line)|none|nowhere|does(?: not|n't) (?:mention|contain|exist|appear|say|"
    r"include|have)|(?:can|could)(?:not|n't) (?:be )?f(?:ind|ound)|unknown|absent|missing)\b",
    re.IGNORECASE,
)
_YES_NO = re.compile(r"(?i)\s*(yes|no|true|false)\b[.!]?\s*$")


@dataclass(frozen=True)
class Grounding:
    """The verdict on one answer."""

    grounded: bool | None
    """True: backed by printed output or a variable; False: asserts something never shown; None: nothing to check."""
    missing: tuple[str, ...] = ()
    """The claim tokens that appear nowhere in the evidence."""
    reason: str = ""


def check_grounding(answer: str, question: str, evidence: list[str]) -> Grounding:
    """Check ``answer`` against ``evidence`` (printed outputs, the context preview, REPL variable values)."""
    text = _normalise(answer)
    if not text:
        return Grounding(False, reason="the answer is empty")
    haystack = "\n".join(evidence)
    folded = _collapse(haystack).casefold()
    question_tokens = {t.casefold() for t in _TOKEN.findall(question)}
    claims = [t for t in dict.fromkeys(_TOKEN.findall(text))
              if t.casefold() not in question_tokens and t.casefold() not in _FILLER]
    if not claims:
        if _NEGATIVE.search(text) or _YES_NO.match(text):
            return Grounding(None, reason="nothing to check: the answer says it is absent, or yes/no")
        return Grounding(False, reason="the answer only repeats words of the question")
    if _collapse(text).casefold() in folded:
        return Grounding(True, reason="the answer appears in the output")
    evidence_numbers = _numbers(haystack)
    # Values (numbers, identifiers, names) must all appear; plain lowercase words may be the model's own
    # phrasing ("as stated"), so of those only half need to.
    hard = [t for t in claims if not (t.isalpha() and t.islower())]
    missing = tuple(t for t in claims if not _appears(t, folded, evidence_numbers))
    if hard:
        missing = tuple(t for t in missing if t in hard)
    elif len(missing) * 2 <= len(claims):
        missing = ()
    if missing:
        return Grounding(False, missing, f"never printed: {', '.join(missing[:5])}")
    return Grounding(True, reason="every value in the answer appears in the output")


def _normalise(answer: str) -> str:
    return answer.strip().strip("\"'`*").strip().rstrip(".").strip()


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _numbers(text: str) -> list[float]:
    found = []
    for raw in re.findall(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?", text):
        try:
            found.append(float(raw.replace(",", "")))
        except ValueError:
            continue
    return found


def _appears(token: str, folded_evidence: str, numbers: list[float]) -> bool:
    if _NUMBER.match(token):
        value = float(token.replace(",", ""))
        decimals = len(token.split(".", 1)[1]) if "." in token and "e" not in token.lower() else 0
        return any(round(n, decimals) == value for n in numbers)
    pattern = rf"(?<![\w]){re.escape(token.casefold())}(?![\w])"
    return re.search(pattern, folded_evidence) is not None

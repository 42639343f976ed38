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
from collections.abc import Sequence
from dataclasses import dataclass

from .sandbox._repl_tools import IDENTIFIER, QUESTION_STOPWORDS, definition_pattern, query_terms

__all__ = ["Grounding", "agrees", "check_grounding", "count_doubt", "extraction_prompt", "is_bare_value",
           "is_form_count", "lookalike", "missing_words", "names_not_in", "read_off_key_lines", "reads_a_definition",
           "supporting_lines", "uncovered_lines", "whole_value"]

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
_FILE_NAME = re.compile(r"[\w.-]*[\w-](?:/[\w.-]+)*\.[A-Za-z][\w]{0,5}")
_YES_NO = re.compile(r"(?i)\s*(yes|no|true|false)\b[.!]?\s*$")


@dataclass(frozen=True)
class Grounding:
    """The verdict on one answer."""

    grounded: bool | None
    """True: backed by printed output or a variable; False: asserts something never shown; None: nothing to check."""
    missing: tuple[str, ...] = ()
    """The claim tokens that appear nowhere in the evidence."""
    reason: str = ""
    claims: tuple[str, ...] = ()
    """The answer's values that were looked for (empty for a whole-answer match or nothing to check)."""
    may_answer: bool = False
    """The refusal itself offers an answer (e.g. "the text does not mention it"), so the next reply may be FINAL."""


def check_grounding(answer: str, question: str, evidence: list[str]) -> Grounding:
    """Check ``answer`` against ``evidence`` (printed outputs, the context preview, REPL variable values)."""
    text = _normalise(answer)
    if not text:
        return Grounding(False, reason="the answer is empty")
    haystack = "\n".join(evidence)
    folded = _collapse(haystack).casefold()
    # Case matters here: "decreasing" answers "What is DECREASING?", but "DECREASING" only repeats it.
    question_tokens = set(_TOKEN.findall(question))
    claims = [t for t in dict.fromkeys(_TOKEN.findall(text))
              if t not in question_tokens and t.casefold() not in _FILLER]
    hard = [t for t in claims if not (t.isalpha() and t.islower())]
    if (_NEGATIVE.search(text) and not hard) or _YES_NO.match(text):
        return Grounding(None, reason="nothing to check: the answer says it is absent, or yes/no")
    if not claims:
        # A constant may hold its own name (TERMINATE = "TERMINATE"): printed as a string literal, it is a value.
        if re.search(rf"""(['"]){re.escape(text)}\1""", haystack):
            return Grounding(True, reason="the answer is printed as a string value", claims=(text,))
        return Grounding(False, reason="the answer only repeats words of the question")
    if _collapse(text).casefold() in folded:
        return Grounding(True, reason="the answer appears in the output", claims=(text,))
    if _FILE_NAME.fullmatch(text):  # a file name is one value: "Tree.py" is not backed by "tree" and ".py"
        return Grounding(False, (text,), reason=f"never printed: {text}", claims=(text,))
    evidence_numbers = _numbers(haystack)
    # Values (numbers, identifiers, names) must all appear; plain lowercase words may be the model's own
    # phrasing ("as stated"), so of those only half need to.
    missing = tuple(t for t in claims if not _appears(t, folded, evidence_numbers))
    if hard:
        missing = tuple(t for t in missing if t in hard)
    elif len(missing) * 2 <= len(claims):
        missing = ()
    if missing:
        reason = f"never printed: {', '.join(missing[:5])}"
        if part := _printed_part(text, haystack):
            reason += f" (the part that was printed: {part!r})"
        return Grounding(False, missing, reason, tuple(claims))
    return Grounding(True, reason="every value in the answer appears in the output", claims=tuple(claims))


def supporting_lines(claims: tuple[str, ...], evidence: list[str], limit: int = 5) -> list[str]:
    """The evidence lines that contain the answer's values, most values first: what a verifier should read."""
    scored = []
    for text in evidence:
        for line in text.splitlines():
            if hits := _claims_in(line, claims):
                scored.append((-hits, len(scored), line.strip()[:300]))
    return [line for _, _, line in sorted(scored)[:limit]]


def lookalike(question: str, absent: tuple[str, ...], lines: Sequence[str]) -> tuple[str, str] | None:
    """The question's key phrase the text never contains, and the phrase the answer's line has in its place.

    Asked for the *sunny* ferry's manager, a text that only names the *rusty* ferry's manager does not hold the
    answer, though every other word matches. The test is literal: a question word that occurs nowhere in the
    context (``absent``, from the host's search) stands right before a word the line does contain, and in the
    line that word follows a different word the question never uses."""
    words = [w.removesuffix("'s") for w in re.findall(r"[^\W\d_][\w'-]*", question)]
    asked = {w.casefold() for w in words}
    missing = {a.casefold() for a in absent}
    text = " ".join(lines)
    for i, word in enumerate(words):
        if word.casefold() not in missing:
            continue
        if i + 1 < len(words) and (noun := words[i + 1]).casefold() not in QUESTION_STOPWORDS:
            for found in re.finditer(rf"([^\W\d_][\w'-]*)[ \t]+{re.escape(noun)}(?!\w)", text, re.IGNORECASE):
                other = found[1]
                if other.casefold() not in QUESTION_STOPWORDS and other.casefold() not in asked:
                    return f"{word} {noun}", f"{other} {found[0].split()[-1]}"
        # Names: asked for Keiko *Tanaka*, the line has Keiko *Novak*.
        if i and word[:1].isupper() and (first := words[i - 1])[:1].isupper():
            for found in re.finditer(rf"(?<!\w){re.escape(first)}[ \t]+([A-Z][\w'-]*)", text):
                if found[1].casefold() not in asked:
                    return f"{first} {word}", found[0]
    return None


def count_doubt(answer: str, counts: dict[str, int], all_count: int | None,
                forms: dict[str, list[tuple[str, int]]]) -> str:
    """Why a count copied from the host's search may count the wrong lines, or "".

    A number the search printed is a count of *something*: lines with one word, lines with every word, lines
    where a word has one form. When the answer is the count of lines with just one of several words, or of lines
    where a word appears in forms that mean different things (``[inventory]`` logged it, ``from inventory``
    was called by it), it counts more than the question asks."""
    n = _single_count(answer)
    if n is None or all_count is None:
        return ""
    present = [word for word, count in counts.items() if count]
    split = "; ".join(f"by how {word!r} appears: " + ", ".join(f"{form!r} {k:,}" for form, k in shapes)
                      for word, shapes in forms.items())
    if n == all_count and split:
        return (f"{n:,} counts the lines that contain {_words(present)} in any form, and those forms mean different "
                f"things ({split}). Answer with the count of lines whose form matches the question")
    alone = [word for word in present if counts[word] == n]
    if len(present) > 1 and n != all_count and alone:
        return (f"{n:,} is the number of lines that contain {alone[0]!r}, with or without the question's other words; "
                f"lines that contain all of {_words(present)}: {all_count:,}" + (f" ({split})" if split else "")
                + ". Answer with the count that matches the whole question")
    return ""


def is_form_count(answer: str, forms: dict[str, list[tuple[str, int]]]) -> bool:
    """Whether the answer is the count of lines where a word takes one of its forms (as the search showed them)."""
    n = _single_count(answer)
    return n is not None and any(k == n for shapes in forms.values() for _, k in shapes)


def _single_count(answer: str) -> int | None:
    """The one whole number an answer states, or None when it states none or several."""
    numbers = _NUMBER_IN_TEXT.findall(answer)
    return int(float(numbers[0].replace(",", ""))) if len(numbers) == 1 else None


def _words(words: list[str]) -> str:
    return ", ".join(map(repr, words))


_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])\d[\d,]*(?:\.0+)?(?![\w.])")


def uncovered_lines(claims: tuple[str, ...], full_lines: tuple[str, ...]) -> list[str]:
    """Of the lines that contain every question word (all of them shown), those the answer takes no value from,
    when it takes values from some: an answer that lists one of several values for one key."""
    if not claims or not 2 <= len(full_lines) <= 8:
        return []
    left = [line for line in full_lines if not _claims_in(line, claims)]
    return left if 0 < len(left) < len(full_lines) else []


def read_off_key_lines(claims: tuple[str, ...], full_lines: tuple[str, ...]) -> bool:
    """Whether an answer lists values that each sit in a line holding every question word the text has, spread
    over more than one such line: a list read off the key's own lines, which a small model re-reading them one
    value at a time would wrongly dispute."""
    if len(claims) < 2:
        return False
    parsed = [(line.casefold(), _numbers(line)) for line in full_lines]
    homes = set()
    for claim in claims:
        home = next((i for i, (folded, numbers) in enumerate(parsed) if _appears(claim, folded, numbers)), None)
        if home is None:
            return False
        homes.add(home)
    return len(homes) > 1


def reads_a_definition(question: str, claims: tuple[str, ...], lines: Sequence[str]) -> bool:
    """Whether every value of the answer sits in a line that defines a name the question asks about: in what the
    name is set to (``PY_SOURCE = 1``, not the comment after it), or in the file name of a line that defines a
    class or function (``zipfile.py:870: class ZipExtFile``). That is the answer to "what is NAME?" or "where is
    NAME defined?" read off the definition, which a small model re-reading it disputes when the question's other
    words ("constant", "assigned") are missing from the line."""
    names = [name for name in dict.fromkeys(re.findall(r"[A-Za-z_]\w{2,}", question))
             if name.casefold() not in _FILLER]
    if not claims or not names:
        return False
    for line in lines:
        file_name, _, code = line.partition(": ") if re.match(r"[\w./-]+:\d+: ", line) else ("", "", line)
        for name in names:
            if not (found := definition_pattern(name).search(code)):
                continue
            defines_code = found.group().startswith(("class", "def"))  # where it is, not what it is set to
            told = file_name.split(":")[0] if defines_code else code[found.end():].split("  #")[0]
            if all(_claims_in(told, (claim,)) for claim in claims):
                return True
    return False


def names_not_in(lines: Sequence[str], found: Sequence[str]) -> list[str]:
    """The names from code that the question asks about and the text has (``PackageMetadata``, ``PY_SOURCE``)
    which none of ``lines`` holds: an answer read off such lines is about something else."""
    names = [word for word in found if IDENTIFIER.fullmatch(word)]
    text = " ".join(lines)
    return [name for name in names if not re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE)]


def whole_value(answer: str, lines: Sequence[str]) -> str | None:
    """The one value in ``lines`` that the answer is a clipped copy of, or None.

    A 1.5B model copies ``P272-98`` as ``272-98`` (the letter and the digits are separate tokens to it) and then
    cannot mend it when told; the line it copied from settles what it meant. Only a value that holds the answer
    whole, with at most two more letters or digits at one end, and only when just one value in the lines does."""
    if not re.fullmatch(r"[\w.\-/]+", answer) or len(answer) < 4:
        return None
    values = set(re.findall(r"[\w][\w.\-/]*[\w]", " ".join(lines)))
    if answer in values:
        return None
    clipped = {value for value in values if 0 < len(value) - len(answer) <= 2 and (
        value.endswith(answer) and value[:-len(answer)].isalnum() or
        value.startswith(answer) and value[len(answer):].isalnum())}
    return clipped.pop() if len(clipped) == 1 else None


def extraction_prompt(question: str, lines: list[str]) -> str:
    """Ask a model to read the answer off the lines that contain the proposed one, without showing it.

    A small model asked "is this answer right?" says yes to anything; asked to extract the answer itself
    it reads a look-alike line or a count of lines as "NONE" or as another value, which ``agrees`` catches.
    """
    shown = "\n".join(f"- {line}" for line in lines)
    prompt = (f"Lines:\n{shown}\n\nQuestion: {question}\nIf the lines above state the answer to exactly this "
              "question, reply with the answer only. If they do not (they are about something else, or only show "
              "counts of lines or words), reply NONE.")
    # A mechanical fact the model would otherwise overlook: which words of the question the lines lack
    # ("northern" when the line is about the *narrow* tram depot).
    if missing := missing_words(question, lines):
        prompt += f"\nNote: the question's word(s) {', '.join(map(repr, missing))} do not occur in these lines."
    return prompt


def missing_words(question: str, lines: list[str]) -> list[str]:
    """The question's distinctive words that none of ``lines`` contains."""
    text = " ".join(lines).casefold()
    return [t for t in query_terms(question) if not re.search(rf"(?<!\w){re.escape(t.casefold())}", text)]


def agrees(extracted: str, answer: str, claims: tuple[str, ...]) -> bool:
    """Whether an independently extracted answer matches the proposed one (its values, to their precision)."""
    text = _normalise(extracted)
    if not text or text.upper().startswith("NONE"):
        return False
    folded, numbers = _collapse(text).casefold(), _numbers(text)
    proposed = _collapse(_normalise(answer)).casefold()
    if proposed in folded or _same_file(proposed, folded):
        return True
    return bool(claims) and all(_appears(claim, folded, numbers) for claim in claims)


def _same_file(a: str, b: str) -> bool:
    """``zipfile`` and ``zipfile.py``, ``heap.py`` and ``multiprocessing/heap.py``: one file named two ways."""
    def stem(name: str) -> str:
        return re.sub(r"\.[a-z0-9]{1,5}$", "", name.strip())

    if not (_PATHLIKE.fullmatch(a) and _PATHLIKE.fullmatch(b)):
        return False
    short, long = sorted((stem(a), stem(b)), key=len)
    return bool(short) and (long == short or long.endswith("/" + short))


_PATHLIKE = re.compile(r"[\w.\-]+(?:/[\w.\-]+)*")


def is_bare_value(line: str, claims: tuple[str, ...]) -> bool:
    """A line that is nothing but the answer's value: what the model's own code printed after computing it."""
    text = _normalise(line)
    return bool(claims) and _claims_in(text, claims) == len(claims) and len(_TOKEN.findall(text)) <= len(claims)


def _claims_in(line: str, claims: tuple[str, ...]) -> int:
    """How many of the answer's values ``line`` holds (the line parsed once, not once per value)."""
    folded, numbers = line.casefold(), _numbers(line)
    return sum(_appears(claim, folded, numbers) for claim in claims)


def _printed_part(answer: str, haystack: str) -> str:
    """The longest run of the answer's tokens that was printed as it stands: the real path inside a made-up
    absolute one, the value inside an invented sentence."""
    spans = [m.span() for m in _TOKEN.finditer(answer)][:40]
    best = ""
    for i, (start, _) in enumerate(spans):
        for _, end in reversed(spans[i:]):
            if end - start <= len(best):
                break
            piece = answer[start:end]
            if re.search(rf"(?<![\w/.]){re.escape(piece)}(?![\w/])", haystack):
                best = piece
                break
    return best if len(_TOKEN.findall(best)) > 1 or len(best) >= 4 else ""


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

"""``lookup``: the questions people ask of a big text, in many shapes and phrasings, with checkable answers.

S-NIAH asks one question in one phrasing. This task asks seven kinds, each in several wordings, so
that a loop tuned to one phrasing shows it:

- ``needle``: a fact keyed by ordinary words ("the door code of the blue warehouse is 4471"), with a
  distractor that shares a word of the key;
- ``needle-multi``: two or three values for one key, scattered; the answer must list them all;
- ``absent``: the asked-for key is not in the text (a look-alike is); the right answer says so;
- ``source-value``: the value of a module-level constant in real source files (the running
  interpreter's standard library, which every machine has);
- ``source-file``: which file defines a class, in the same kind of corpus;
- ``log-count``: how many log lines match a level and a service;
- ``record-sum``: the total of one customer's order amounts.

Seeds below ``HELD_OUT_SEED`` use the development phrasings; seeds from it on use phrasings kept
aside while the loop was tuned (``info["split"]`` says which), so reports can show both.
"""

from __future__ import annotations

import ast
import random
import re
import sysconfig
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .sniah import haystack

__all__ = ["FRESH_SEED", "HELD_OUT_SEED", "UNSEEN_SEED", "LOOKUP_KINDS", "LookupCase", "make_lookup", "score_lookup"]

LOOKUP_KINDS = ("needle", "needle-multi", "absent", "source-value", "source-file", "log-count", "record-sum")
HELD_OUT_SEED = 100
"""Seeds from here on ask with phrasings that were not used while tuning (``split == "held-out"``)."""
FRESH_SEED = 200
"""Seeds from here on use a third set of phrasings and new needle key words (``split == "fresh"``), added after
the held-out set had been looked at, so that there is again a set nobody tuned against."""
UNSEEN_SEED = 300
"""Seeds from here on use a fourth set of phrasings and key words (``split == "unseen"``), written after the
fresh set's failures had been read, and run once, on the final code."""


@dataclass(frozen=True)
class LookupCase:
    """One generated question, its context (a str, or documents with names) and how to score answers."""

    kind: str
    question: str
    gold: list[str]
    """Accepted answers; for ``needle-multi`` every value must appear; for ``absent``, the look-alike's value
    (which must *not* appear)."""
    context: str | list[str]
    names: list[str] = field(default_factory=list)
    split: str = "dev"


# -- phrasings: (needle sentence, question); the last two of each list are held out --------------------

_NEEDLES = [
    ("The {attr} for the {key} is {value}.", "What is the {attr} for the {key}?"),
    ("Everyone at the {key} knows that its {attr} is {value}.", "What is the {attr} of the {key}?"),
    ("For the {key}, the {attr} was set to {value} last year.", "Which {attr} does the {key} have?"),
    ("Note for visitors: {value} is the {attr} of the {key}.", "Tell me the {attr} used at the {key}."),
    ("Records show the {key}'s {attr}: {value}.", "I need the {attr} of the {key}. What is it?"),
    ("In the {key}, {value} serves as the {attr}.", "Do you know the {key}'s {attr}?"),
    ("The {attr} ({key}): {value}", "Look up the {attr} belonging to the {key}."),
    ("Staff of the {key} use {value} as their {attr}.", "What {attr} do the staff of the {key} use?"),
    ("{value} - that is the {attr} listed for the {key}.", "Please find the {attr} listed for the {key}."),
]
_MULTI = [
    ("One {attr} of the {key} is {value}.", "List all the {attr}s of the {key}."),
    ("The {key} also uses {value} as a {attr}.", "Which {attr}s does the {key} have? Give every one."),
    ("Another {attr} at the {key}: {value}.", "What are all the {attr}s recorded for the {key}?"),
    ("Among the {attr}s of the {key} is {value}.", "Name each {attr} that belongs to the {key}."),
    ("A {attr} assigned to the {key} is {value}.", "Collect every {attr} mentioned for the {key}."),
    ("The {key} keeps {value} on file as its {attr}.", "Give me the complete set of {attr}s for the {key}."),
    ("Logged for the {key}: {attr} {value}.", "The {key} has more than one {attr}. What are they?"),
    ("Staff of the {key} use {value} as one {attr}.", "Every {attr} used by the staff of the {key}, please."),
    ("{value} is on the list of {attr}s for the {key}.", "Show the list of {attr}s for the {key}."),
]
_VALUE_QUESTIONS = [
    "What is the value of {name}?",
    "What is {name} set to in this code?",
    "In this code base, what value does the constant {name} have?",
    "Find the constant {name}. What is it assigned?",
    "Which value is assigned to {name} in the source?",
    "Somewhere in these files {name} is defined. To what?",
    "Report the literal that {name} equals.",
    "What does {name} hold?",
    "Tell me the value the code gives {name}.",
]
_FILE_QUESTIONS = [
    "Which file defines the class {name}?",
    "In which file is the class {name} defined?",
    "Where is class {name} declared? Give the file name.",
    "Name the source file that contains the definition of class {name}.",
    "What is the path of the file where {name} is defined as a class?",
    "{name} is a class. Which module file holds it?",
    "Locate the class definition for {name}: what file is it in?",
    "Where does class {name} live? Name the file.",
    "Which .py file declares {name}?",
]
_COUNT_QUESTIONS = [
    "How many {level} lines are there for the {service} service?",
    "Count the log lines with level {level} from the {service} service.",
    "How many times did the {service} service log an {level}?",
    "What is the number of {level} entries written by {service}?",
    "How many log entries does the {service} service have at level {level}?",
    "Give the count of {service} log records whose level is {level}.",
    "{service}: how many {level}-level messages did it emit?",
    "Number of {level} records from {service}?",
    "Across the log, how often does {service} report {level}?",
]
_SUM_QUESTIONS = [
    "What is the total amount of the orders placed by {customer}?",
    "Sum the amounts of all orders from {customer}.",
    "Add up every order amount for customer {customer}. What is the total?",
    "How much did {customer} spend in total across all orders?",
    "What do all of {customer}'s orders come to, in total?",
    "Total spend by {customer}, please: add up their order amounts.",
    "For the customer {customer}, what is the combined amount of their orders?",
    "How much has {customer} ordered, summed over every order?",
    "Give {customer}'s order total.",
]
_DEV_PHRASINGS, _HELD_OUT_END, _FRESH_END = 3, 5, 7
"""Each list above: the first three phrasings are for development, the next two held out, two fresh, two unseen."""

_ADJECTIVES = ["blue", "northern", "silent", "copper", "eastern", "small", "golden", "rusty", "hidden", "upper",
               "green", "wooden", "crooked", "sunny", "western", "narrow"]
_NOUNS = ["warehouse", "bakery", "orchard", "ferry", "garage", "chapel", "workshop", "observatory", "greenhouse",
          "stable", "boathouse", "pharmacy", "printing shop", "tram depot"]
# Fresh cases key their needles with words the development and held-out cases never use.
_FRESH_ADJECTIVES = ["purple", "southern", "quiet", "marble", "lower", "tiny", "ancient", "windy", "velvet", "outer",
                     "crimson", "frozen", "busy", "hollow"]
_FRESH_NOUNS = ["keeper's cottage", "library", "mill", "harbour office", "bakehouse", "laundry", "arcade",
                "signal box", "gallery", "cannery", "post office", "ice rink"]
# Unseen cases: a fourth set of key words, written after the fresh ones had been looked at.
_UNSEEN_ADJECTIVES = ["amber", "misty", "broad", "silver", "twin", "old", "far", "stone", "pale", "iron", "high",
                      "red"]
_UNSEEN_NOUNS = ["brewery", "dockyard", "tannery", "market hall", "school", "sawmill", "depot", "lodge", "quarry",
                 "customs house"]
_ATTRS = {
    "door code": lambda rng: str(rng.randint(1000, 99999)),
    "password": lambda rng: rng.choice(_WORDS) + rng.choice(["", "-"]) + rng.choice(_WORDS),
    "manager": lambda rng: f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
    "phone extension": lambda rng: str(rng.randint(100, 9999)),
    "opening year": lambda rng: str(rng.randint(1850, 2020)),
    "licence number": lambda rng: f"{rng.choice('ABCDEFGHKLMNPRSTUVWXYZ')}{rng.randint(100, 999)}-{rng.randint(10, 99)}",  # noqa: E501
}
_WORDS = ["tangerine", "marigold", "pebble", "thunder", "biscuit", "lighthouse", "walnut", "seashell", "comet",
          "cinnamon", "pinecone", "harvest", "lantern", "violet"]
_FIRST = ["Ines", "Tomas", "Priya", "Jonas", "Amara", "Felix", "Keiko", "Dmitri", "Leila", "Oskar", "Nadia", "Rafael"]
_LAST = ["Okafor", "Lindqvist", "Moreau", "Tanaka", "Castillo", "Brennan", "Novak", "Haddad", "Ferreira", "Quinn"]
_SERVICES = ["payments", "search", "auth", "billing", "inventory", "shipping", "profile", "checkout"]
_LEVELS = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]
_ITEMS = ["lamp", "kettle", "notebook", "chair", "umbrella", "backpack", "teapot", "blanket", "mirror", "clock"]


class _Style:
    """Which phrasings and key words a case of this split draws from."""

    def __init__(self, rng: random.Random, split: str) -> None:
        self.rng, self.split = rng, split
        self.adjectives, self.nouns = {"fresh": (_FRESH_ADJECTIVES, _FRESH_NOUNS),
                                       "unseen": (_UNSEEN_ADJECTIVES, _UNSEEN_NOUNS)}.get(split, (_ADJECTIVES, _NOUNS))

    def pick(self, options: list):
        first, stop = {"dev": (0, _DEV_PHRASINGS), "held-out": (_DEV_PHRASINGS, _HELD_OUT_END),
                       "fresh": (_HELD_OUT_END, _FRESH_END), "unseen": (_FRESH_END, None)}[self.split]
        return self.rng.choice(options[first:stop])


def make_lookup(chars: int = 1_000_000, seed: int = 0, *, kind: str | None = None) -> LookupCase:
    """A case of about ``chars`` characters; the seed picks the kind (unless given) and the phrasing."""
    rng = random.Random(seed)
    kind = kind or LOOKUP_KINDS[seed % len(LOOKUP_KINDS)]
    split = ("unseen" if seed >= UNSEEN_SEED else "fresh" if seed >= FRESH_SEED else
             "held-out" if seed >= HELD_OUT_SEED else "dev")
    style = _Style(rng, split)
    makers = {"needle": _needle, "needle-multi": _needle_multi, "absent": _absent, "source-value": _source_value,
              "source-file": _source_file, "log-count": _log_count, "record-sum": _record_sum}
    if kind not in makers:
        raise ValueError(f"unknown lookup kind {kind!r}; use one of {', '.join(LOOKUP_KINDS)}")
    case = makers[kind](chars, rng, style)
    return LookupCase(case.kind, case.question, case.gold, case.context, case.names, split)


# -- needles in prose -------------------------------------------------------------------------------------

def _keys(rng: random.Random, style: _Style) -> tuple[str, str]:
    """A key of two ordinary words and a look-alike sharing its noun."""
    noun = rng.choice(style.nouns)
    first, second = rng.sample(style.adjectives, 2)
    return f"{first} {noun}", f"{second} {noun}"


def _with_sentences(chars: int, sentences: list[str], rng: random.Random) -> str:
    """Essay-like text of ``chars`` characters with each sentence put after a sentence boundary between 10% and
    90% of it."""
    text = haystack(max(0, chars - sum(len(sentence) + 1 for sentence in sentences)), rng)
    for sentence in sentences:
        at = text.rfind(". ", 0, int(len(text) * rng.uniform(0.1, 0.9)))
        cut = at + 2 if at >= 0 else 0
        text = text[:cut] + sentence + " " + text[cut:]
    return text


def _needle(chars: int, rng: random.Random, style: _Style) -> LookupCase:
    key, other = _keys(rng, style)
    attr, make_value = rng.choice(list(_ATTRS.items()))
    value, other_value = make_value(rng), make_value(rng)
    needle, question = style.pick(_NEEDLES)
    sentences = [needle.format(attr=attr, key=key, value=value), needle.format(attr=attr, key=other, value=other_value)]
    text = _with_sentences(chars, sentences, rng)
    return LookupCase("needle", question.format(attr=attr, key=key), [value], text)


def _needle_multi(chars: int, rng: random.Random, style: _Style) -> LookupCase:
    key, other = _keys(rng, style)
    attr, make_value = rng.choice([(a, m) for a, m in _ATTRS.items() if a != "opening year"])
    values: list[str] = []
    while len(values) < rng.choice((2, 3)):
        if (value := make_value(rng)) not in values:
            values.append(value)
    needle, question = style.pick(_MULTI)
    sentences = [needle.format(attr=attr, key=key, value=v) for v in values]
    sentences.append(needle.format(attr=attr, key=other, value=make_value(rng)))
    text = _with_sentences(chars, sentences, rng)
    return LookupCase("needle-multi", question.format(attr=attr, key=key), values, text)


def _absent(chars: int, rng: random.Random, style: _Style) -> LookupCase:
    key, other = _keys(rng, style)
    attr, make_value = rng.choice(list(_ATTRS.items()))
    other_value = make_value(rng)
    needle, question = style.pick(_NEEDLES)
    text = _with_sentences(chars, [needle.format(attr=attr, key=other, value=other_value)], rng)
    return LookupCase("absent", question.format(attr=attr, key=key), [other_value], text)


# -- real source code: the standard library --------------------------------------------------------------

@cache
def _stdlib_files() -> tuple[tuple[str, str], ...]:
    """(relative path, text) of the standard library's pure-Python files, sorted, tests left out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(part in {"test", "tests", "idlelib", "site-packages", "lib2to3", "__pycache__"} or
               part.startswith("test_") for part in rel.split("/")):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if 500 <= len(text) <= 200_000:
            files.append((rel, text))
    return tuple(files)


def _corpus(chars: int, rng: random.Random) -> list[tuple[str, str]]:
    """Standard-library files picked by the seed until they hold about ``chars`` characters."""
    files = list(_stdlib_files())
    rng.shuffle(files)
    chosen, size = [], 0
    for rel, text in files:
        if size + len(text) > chars:
            continue
        chosen.append((rel, text))
        size += len(text)
        if size >= chars * 0.9:
            break
    return sorted(chosen) or [min(files, key=lambda file: len(file[1]))]


def _constants(rel: str, text: str) -> list[tuple[str, str]]:
    """Module-level ``NAME = literal`` assignments: (name, value as text) for short str, int and float values."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    found = []
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant)):
            name, value = node.targets[0].id, node.value.value
            if not (name.isupper() and len(name) >= 5):
                continue
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, str) and 2 <= len(value) <= 40 and value.isprintable() and value.strip() == value:
                found.append((name, value))
            elif isinstance(value, int | float) and not isinstance(value, bool):
                found.append((name, ast.get_source_segment(text, node.value) or repr(value)))
    return found


def _source_value(chars: int, rng: random.Random, style: _Style) -> LookupCase:
    corpus = _corpus(chars, rng)
    assigned: dict[str, int] = {}
    for _, text in corpus:
        for name in re.findall(r"^\s*([A-Z][A-Z0-9_]{4,})\s*=", text, re.MULTILINE):
            assigned[name] = assigned.get(name, 0) + 1
    candidates = [(name, value) for rel, text in corpus for name, value in _constants(rel, text)
                  if assigned.get(name) == 1]
    if not candidates:
        return _source_value(chars * 2, rng, style)
    name, value = rng.choice(sorted(candidates))
    gold = [value]
    if re.fullmatch(r"0[xXoObB][0-9a-fA-F_]+|\d[\d_]*", value):
        gold = list(dict.fromkeys([value, str(int(value.replace("_", ""), 0))]))
    return LookupCase("source-value", style.pick(_VALUE_QUESTIONS).format(name=name), gold,
                      [t for _, t in corpus], [r for r, _ in corpus])


def _source_file(chars: int, rng: random.Random, style: _Style) -> LookupCase:
    corpus = _corpus(chars, rng)
    defined: dict[str, list[str]] = {}
    for rel, text in corpus:
        for name in re.findall(r"^class\s+([A-Z]\w{3,})\b", text, re.MULTILINE):
            defined.setdefault(name, []).append(rel)
    candidates = sorted((name, rels[0]) for name, rels in defined.items() if len(rels) == 1)
    if not candidates:
        return _source_file(chars * 2, rng, style)
    name, rel = rng.choice(candidates)
    basenames = [r.rsplit("/", 1)[-1] for r, _ in corpus]
    gold = list(dict.fromkeys([rel] + ([rel.rsplit("/", 1)[-1]] if basenames.count(rel.rsplit("/", 1)[-1]) == 1
                                       else [])))
    return LookupCase("source-file", style.pick(_FILE_QUESTIONS).format(name=name), gold,
                      [t for _, t in corpus], [r for r, _ in corpus])


# -- records ---------------------------------------------------------------------------------------------

def _log_count(chars: int, rng: random.Random, style: _Style) -> LookupCase:
    lines, size, counts = [], 0, {}
    second = rng.randint(0, 10_000_000)
    while True:
        second += rng.randint(1, 40)
        service, level = rng.choice(_SERVICES), rng.choice(_LEVELS)
        hh, mm, ss = second // 3600 % 24, second // 60 % 60, second % 60
        detail = {
            "ERROR": f"request {rng.randint(1000, 99999)} failed: {rng.choice(['timeout', 'refused', 'bad gateway'])}"
                     f" after {rng.randint(10, 5000)} ms",
            "WARN": f"slow response from {rng.choice(_SERVICES)} ({rng.randint(500, 9000)} ms)",
            "DEBUG": f"cache {rng.choice(['hit', 'miss'])} for key {rng.randint(1, 99999)}",
        }.get(level, f"handled request {rng.randint(1000, 99999)} in {rng.randint(1, 900)} ms")
        day = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        line = f"{day} {hh:02d}:{mm:02d}:{ss:02d} {level} [{service}] {detail}"
        if size + len(line) + 1 > chars:
            break
        lines.append(line)
        counts[(service, level)] = counts.get((service, level), 0) + 1
        size += len(line) + 1
    service, level = rng.choice(_SERVICES), rng.choice(["ERROR", "WARN"])
    question = style.pick(_COUNT_QUESTIONS).format(service=service, level=level)
    return LookupCase("log-count", question, [str(counts.get((service, level), 0))], "\n".join(lines))


def _record_sum(chars: int, rng: random.Random, style: _Style) -> LookupCase:
    customers = sorted({f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" for _ in range(80)})
    target = rng.choice(customers)
    lines, size, total_cents, order = [], 0, 0, rng.randint(10_000, 50_000)
    while True:
        order += 1
        # The asked-for customer orders rarely, so the total needs code over every line, not a glance.
        customer = target if rng.random() < 0.004 else rng.choice(customers)
        cents = rng.randint(100, 50_000)
        amount = f"{cents // 100}.{cents % 100:02d}"
        line = f"order {order} | customer: {customer} | item: {rng.choice(_ITEMS)} | amount: {amount}"
        if size + len(line) + 1 > chars:
            break
        if customer == target:
            total_cents += cents
        lines.append(line)
        size += len(line) + 1
    total = f"{total_cents // 100}.{total_cents % 100:02d}"
    return LookupCase("record-sum", style.pick(_SUM_QUESTIONS).format(customer=target), [total], "\n".join(lines))


# -- scoring --------------------------------------------------------------------------------------------

_NEGATIVE = re.compile(
    r"\b(not (?:found|mentioned|present|given|stated|specified|listed|in|included|available|appear\w*|contain\w*)|"
    r"no (?:such|mention|information|record|data|match\w*|\w+ (?:is|was) (?:found|mentioned|given))|none|nowhere|"
    r"does(?: not|n't) (?:mention|contain|say|include|exist|appear|have)|unknown|cannot (?:be )?f(?:ind|ound)|"
    r"could(?: not|n't) (?:be )?f(?:ind|ound)|isn't|is not)\b",
    re.IGNORECASE,
)


def score_lookup(case: LookupCase, prediction: str | None) -> float:
    """1.0 for a right answer, partial credit for ``needle-multi``, 0.0 otherwise."""
    if not prediction:
        return 0.0
    answer = prediction.strip()
    if case.kind == "absent":
        return 1.0 if _NEGATIVE.search(answer) and not _has_token(answer, case.gold[0]) else 0.0
    if case.kind == "needle-multi":
        return sum(_has_token(answer, value) for value in case.gold) / len(case.gold)
    if case.kind == "record-sum":
        numbers = [float(n.replace(",", "")) for n in re.findall(r"-?\d[\d,]*(?:\.\d+)?", answer)]
        return 1.0 if 0 < len(numbers) <= 3 and any(abs(n - float(case.gold[0])) < 0.005 for n in numbers) else 0.0
    if case.kind == "log-count":
        numbers = re.findall(r"(?<![\w.])\d[\d,]*(?![\w.])", answer)
        return 1.0 if [n.replace(",", "") for n in numbers][:1] == case.gold else 0.0
    # A constant's value may be its own name in lower case (DECREASING = 'decreasing'): case decides there.
    exact_case = case.kind == "source-value"
    return 1.0 if any(_has_token(answer, value, exact_case=exact_case) for value in case.gold) else 0.0


def _has_token(text: str, value: str, *, exact_case: bool = False) -> bool:
    """``value`` occurs in ``text`` as a whole token (quotes ignored; case too unless ``exact_case``)."""
    if not exact_case:
        text, value = text.lower(), value.lower()
    return re.search(rf"(?<![\w.-]){re.escape(value)}(?![\w-])", text) is not None

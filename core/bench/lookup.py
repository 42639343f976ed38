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
aside while the loop was tuned (``info["split"]`` says which), so reports can show both. Seeds from
``FINAL_SEED`` on form a last hold-out that differs in more than wording: its own needle key words and
attributes, and its own log and record formats.
"""

from __future__ import annotations

import ast
import random
import re
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from .sniah import haystack

__all__ = ["FINAL_SEED", "FRESH_SEED", "HELD_OUT_SEED", "UNSEEN_SEED", "LOOKUP_KINDS", "LookupCase", "make_lookup",
           "score_lookup"]

LOOKUP_KINDS = ("needle", "needle-multi", "absent", "source-value", "source-file", "log-count", "record-sum")
HELD_OUT_SEED = 100
"""Seeds from here on ask with phrasings that were not used while tuning (``split == "held-out"``)."""
FRESH_SEED = 200
"""Seeds from here on use a third set of phrasings and new needle key words (``split == "fresh"``), added after
the held-out set had been looked at, so that there is again a set nobody tuned against."""
UNSEEN_SEED = 300
"""Seeds from here on use a fourth set of phrasings and key words (``split == "unseen"``), written after the
fresh set's failures had been read, and run once, on the final code."""
FINAL_SEED = 400
"""Seeds from here on are a last hold-out (``split == "final"``): a fifth set of phrasings, needle key words and
attributes nobody else uses, and log and record lines in other formats, so that a loop fitted to the earlier data's
shape shows it. It was written to be read by no one tuning the loop, and run once."""


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


# -- phrasings: (needle sentence, question); each split takes its own slice of every list (see below) ------

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
    ("Memo from the {key}: starting this month, our {attr} is {value}.", "quick one: {attr} of the {key}?"),
    ("If you ever need the {key}'s {attr}, it's {value}.",
     "Hi, sorry to bother you, but I can't remember the {attr} at the {key}. Would you be able to find it in here "
     "for me?"),
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
    ("Since the spring, {value} has been one of the {key}'s {attr}s.", "all {attr}s for the {key}"),
    ("Per the handbook, the {key} has {value} registered as one of its {attr}s.",
     "Could you go through the text and pull out every single {attr} the {key} has? I don't want to miss any."),
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
    "{name} = ?",
    "I'm debugging something and need to know what {name} is defined as in these files. Could you check?",
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
    "file for class {name}?",
    "Could you tell me where in this code base the class {name} is implemented? Just the file path is fine.",
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
    "{service} {level} count?",
    "I'm writing up last week's incident - could you tally up the {level} logs from {service} for me?",
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
    "{customer} total spend?",
    "Our accountant wants to know how much {customer} paid us altogether. Can you add it up from these records?",
]
_DEV_PHRASINGS, _HELD_OUT_END, _FRESH_END, _UNSEEN_END, _FINAL_END = 3, 5, 7, 9, 11
"""Each list above: the first three phrasings are for development, the next two held out, two fresh, two unseen,
and the last two final."""

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
# Final cases: a fifth set, sharing no word with the four above.
_FINAL_ADJECTIVES = ["yellow", "central", "sandy", "brick", "little", "grey", "hilltop", "glass", "lakeside", "white",
                     "mossy", "coastal"]
_FINAL_NOUNS = ["fire station", "creamery", "pottery", "smithy", "hostel", "museum", "swimming pool", "cinema",
                "town archive", "pier", "bell tower", "tea room"]
_ATTRS = {
    "door code": lambda rng: str(rng.randint(1000, 99999)),
    "password": lambda rng: rng.choice(_WORDS) + rng.choice(["", "-"]) + rng.choice(_WORDS),
    "manager": lambda rng: f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
    "phone extension": lambda rng: str(rng.randint(100, 9999)),
    "opening year": lambda rng: str(rng.randint(1850, 2020)),
    "licence number": lambda rng: f"{rng.choice('ABCDEFGHKLMNPRSTUVWXYZ')}{rng.randint(100, 999)}-{rng.randint(10, 99)}",  # noqa: E501
}
_SINGLE_VALUED = {"opening year", "inspection date"}
"""Attributes a place has one of, so ``needle-multi`` does not ask for several."""
# The final split's attributes: besides a code and a person, values of kinds the others never ask for.
_FINAL_ATTRS = {
    "alarm code": lambda rng: str(rng.randint(100_000, 999_999)),
    "caretaker": lambda rng: f"{rng.choice(_FINAL_FIRST)} {rng.choice(_FINAL_LAST)}",
    "supplier": lambda rng: f"{rng.choice(_FIRMS)} {rng.choice(['Trading', 'Supplies', 'Logistics', 'Hardware'])}",
    "wifi network": lambda rng: f"{rng.choice(_FIRMS)}{rng.choice(['-Guest', '-Staff', 'Net', '_5G', '-Public'])}",
    "locker number": lambda rng: f"{rng.choice('ABCDEFGH')}-{rng.randint(1, 99)}",
    "inspection date": lambda rng: f"{rng.randint(2015, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
}
_WORDS = ["tangerine", "marigold", "pebble", "thunder", "biscuit", "lighthouse", "walnut", "seashell", "comet",
          "cinnamon", "pinecone", "harvest", "lantern", "violet"]
_FIRST = ["Ines", "Tomas", "Priya", "Jonas", "Amara", "Felix", "Keiko", "Dmitri", "Leila", "Oskar", "Nadia", "Rafael"]
_LAST = ["Okafor", "Lindqvist", "Moreau", "Tanaka", "Castillo", "Brennan", "Novak", "Haddad", "Ferreira", "Quinn"]
_SERVICES = ["payments", "search", "auth", "billing", "inventory", "shipping", "profile", "checkout"]
_LEVELS = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]
_ITEMS = ["lamp", "kettle", "notebook", "chair", "umbrella", "backpack", "teapot", "blanket", "mirror", "clock"]
_FIRMS = ["Brightwater", "Kessler", "Ashford", "Marlow", "Thornbury", "Calder", "Heron", "Fairlight", "Osprey",
          "Kinross"]
_FINAL_FIRST = ["Astrid", "Bruno", "Chioma", "Emre", "Greta", "Hugo", "Ingrid", "Kwame", "Lucia", "Mateo", "Noor",
                "Sven"]
_FINAL_LAST = ["Abara", "Bergstrom", "Delacroix", "Eriksen", "Fontaine", "Gallagher", "Kowalski", "Mbeki", "Petrov",
               "Yamamoto"]
_FINAL_SERVICES = ["orders", "catalog", "notifier", "gateway", "reports", "accounts", "media", "scheduler"]
_EPOCH = datetime(2024, 1, 1)
_FINAL_ITEMS = ["desk lamp", "phone case", "water bottle", "yoga mat", "headphones", "bike light", "scarf", "candle",
                "plant pot", "board game"]


class _Style:
    """Which phrasings and key words a case of this split draws from."""

    def __init__(self, rng: random.Random, split: str) -> None:
        self.rng, self.split = rng, split
        self.adjectives, self.nouns = {"fresh": (_FRESH_ADJECTIVES, _FRESH_NOUNS),
                                       "unseen": (_UNSEEN_ADJECTIVES, _UNSEEN_NOUNS),
                                       "final": (_FINAL_ADJECTIVES, _FINAL_NOUNS)}.get(split, (_ADJECTIVES, _NOUNS))
        self.attrs = _FINAL_ATTRS if split == "final" else _ATTRS

    def pick(self, options: list):
        first, stop = {"dev": (0, _DEV_PHRASINGS), "held-out": (_DEV_PHRASINGS, _HELD_OUT_END),
                       "fresh": (_HELD_OUT_END, _FRESH_END), "unseen": (_FRESH_END, _UNSEEN_END),
                       "final": (_UNSEEN_END, _FINAL_END)}[self.split]
        return self.rng.choice(options[first:stop])


def make_lookup(chars: int = 1_000_000, seed: int = 0, *, kind: str | None = None) -> LookupCase:
    """A case of about ``chars`` characters; the seed picks the kind (unless given) and the phrasing."""
    rng = random.Random(seed)
    kind = kind or LOOKUP_KINDS[seed % len(LOOKUP_KINDS)]
    split = ("final" if seed >= FINAL_SEED else "unseen" if seed >= UNSEEN_SEED else "fresh" if seed >= FRESH_SEED
             else "held-out" if seed >= HELD_OUT_SEED else "dev")
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


def _look_alike_value(make_value: Callable[[random.Random], str], rng: random.Random, style: _Style,
                      taken: list[str]) -> str:
    """The look-alike key's value; in the final split never one of ``taken`` (the earlier splits keep their draws,
    and with them the very cases they always had)."""
    value = make_value(rng)
    while style.split == "final" and value in taken:
        value = make_value(rng)
    return value


def _needle(chars: int, rng: random.Random, style: _Style) -> LookupCase:
    key, other = _keys(rng, style)
    attr, make_value = rng.choice(list(style.attrs.items()))
    value = make_value(rng)
    other_value = _look_alike_value(make_value, rng, style, [value])
    needle, question = style.pick(_NEEDLES)
    sentences = [needle.format(attr=attr, key=key, value=value), needle.format(attr=attr, key=other, value=other_value)]
    text = _with_sentences(chars, sentences, rng)
    return LookupCase("needle", question.format(attr=attr, key=key), [value], text)


def _needle_multi(chars: int, rng: random.Random, style: _Style) -> LookupCase:
    key, other = _keys(rng, style)
    attr, make_value = rng.choice([(a, m) for a, m in style.attrs.items() if a not in _SINGLE_VALUED])
    values: list[str] = []
    while len(values) < rng.choice((2, 3)):
        if (value := make_value(rng)) not in values:
            values.append(value)
    needle, question = style.pick(_MULTI)
    sentences = [needle.format(attr=attr, key=key, value=v) for v in values]
    sentences.append(needle.format(attr=attr, key=other, value=_look_alike_value(make_value, rng, style, values)))
    text = _with_sentences(chars, sentences, rng)
    return LookupCase("needle-multi", question.format(attr=attr, key=key), values, text)


def _absent(chars: int, rng: random.Random, style: _Style) -> LookupCase:
    key, other = _keys(rng, style)
    attr, make_value = rng.choice(list(style.attrs.items()))
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
    if style.split == "final":
        return _final_log_count(chars, rng, style)
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


def _final_log_count(chars: int, rng: random.Random, style: _Style) -> LookupCase:
    """The final split's log: ``key=value`` lines in the shape of Go's slog, the service after the message; a WARN
    line's message names another service, so counting lines that merely hold the level and the name over-counts."""
    lines, size, counts = [], 0, {}
    millis = rng.randint(0, 300 * 86_400_000)
    while True:
        millis += rng.randint(20, 30_000)
        service, level = rng.choice(_FINAL_SERVICES), rng.choice(_LEVELS)
        if level == "ERROR":
            err = rng.choice(["connection reset by peer", "context deadline exceeded", "disk quota exceeded"])
            msg, extra = "write failed", f'err="{err}" request_id={rng.getrandbits(32):08x}'
        elif level == "WARN":
            msg, extra = f"slow call to {rng.choice(_FINAL_SERVICES)}", f"latency_ms={rng.randint(800, 12_000)}"
        elif level == "DEBUG":
            msg, extra = "cache lookup", f"hit={rng.choice(['true', 'false'])} key=k{rng.randint(1, 99_999)}"
        else:
            msg, extra = "request served", f"status=200 duration_ms={rng.randint(1, 900)}"
        stamp = (_EPOCH + timedelta(milliseconds=millis)).isoformat(timespec="milliseconds")
        line = f'time={stamp}Z level={level} msg="{msg}" service={service} {extra}'
        if size + len(line) + 1 > chars:
            break
        lines.append(line)
        counts[(service, level)] = counts.get((service, level), 0) + 1
        size += len(line) + 1
    service, level = rng.choice(_FINAL_SERVICES), rng.choice(["ERROR", "WARN"])
    question = style.pick(_COUNT_QUESTIONS).format(service=service, level=level)
    return LookupCase("log-count", question, [str(counts.get((service, level), 0))], "\n".join(lines))


def _record_sum(chars: int, rng: random.Random, style: _Style) -> LookupCase:
    if style.split == "final":
        return _final_record_sum(chars, rng, style)
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


def _final_record_sum(chars: int, rng: random.Random, style: _Style) -> LookupCase:
    """The final split's records: invoice rows of a CSV export with a header and a quantity column (a number that
    is not the amount), and customers named from lists the other splits never use."""
    customers = sorted({f"{rng.choice(_FINAL_FIRST)} {rng.choice(_FINAL_LAST)}" for _ in range(80)})
    target = rng.choice(customers)
    lines = ["invoice,date,customer,item,qty,total"]
    size, total_cents, invoice = len(lines[0]) + 1, 0, rng.randint(100_000, 900_000)
    while True:
        invoice += rng.randint(1, 3)
        customer = target if rng.random() < 0.004 else rng.choice(customers)
        cents = rng.randint(100, 50_000)
        line = (f"INV-{invoice},2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},{customer},"
                f"{rng.choice(_FINAL_ITEMS)},{rng.randint(1, 6)},{cents // 100}.{cents % 100:02d}")
        if size + len(line) + 1 > chars:
            break
        if customer == target:
            total_cents += cents
        lines.append(line)
        size += len(line) + 1
    total = f"{total_cents // 100}.{total_cents % 100:02d}"
    return LookupCase("record-sum", style.pick(_SUM_QUESTIONS).format(customer=target), [total], "\n".join(lines))

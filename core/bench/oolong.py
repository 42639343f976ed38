"""OOLONG style (O(N)): aggregate over every line, where each line's label must be inferred.

The context is one record per line::

    Date: Oct 14, 2022 || User: 48213 || Instance: What city is the capital of Peru?

Each instance is a short question whose *kind* is its latent label, as in OOLONG's ``trec_coarse``
split: ``abbreviation``, ``entity``, ``description``, ``human``, ``location`` or ``numeric``. The label
is never written in the context; a model has to read (or ask a sub-model about) each instance.
Instances come from per-label templates, so the generator knows every label and computes the gold
answer from the generated records.

Questions (the seed picks one unless ``kind`` is given):

- ``count``: how many instances have label L (numeric);
- ``count_year``: how many instances dated in year Y have label L (numeric);
- ``users_with``: how many distinct users have at least one instance with label L (numeric);
- ``most_common`` / ``least_common``: which label is the most / least frequent (a label);
- ``compare``: is label A more common than, less common than, or as common as label B (a phrase).

Numeric answers score ``0.75 ** abs(prediction - gold)``; labels and phrases score by exact match.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections import Counter
from dataclasses import dataclass, field

__all__ = [
    "COMPARISONS",
    "LABELS",
    "LABEL_DESCRIPTIONS",
    "OOLONG_KINDS",
    "OolongCase",
    "Record",
    "instance_text",
    "make_oolong",
    "make_records",
    "parse_number",
    "score_comparison",
    "score_label",
    "score_numeric",
]

LABELS = ("abbreviation", "entity", "description", "human", "location", "numeric")
LABEL_DESCRIPTIONS = {
    "abbreviation": "asks what an abbreviation or acronym stands for",
    "entity": "asks for a thing: an animal, a food, a language, a product, a plant, an instrument",
    "description": "asks for a definition, an explanation, a reason or a manner",
    "human": "asks for a person or a group of people",
    "location": "asks for a place: a city, a country, a river, a building's site",
    "numeric": "asks for a number: a count, a date or year, a size, a price, a distance",
}
OOLONG_KINDS = ("count", "count_year", "users_with", "most_common", "least_common", "compare")
COMPARISONS = ("more common than", "less common than", "same frequency as")

_SLOTS: dict[str, list[str]] = {
    "abbr": ["NASA", "UNESCO", "DNA", "HTML", "GPS", "NATO", "OPEC", "RADAR", "LASER", "SCUBA", "CPU", "FIFA",
             "UNICEF", "RSVP", "ATM", "LED", "IMF", "MRI", "PDF", "USB"],
    "field": ["medicine", "aviation", "computing", "sports", "finance", "shipping", "chemistry"],
    "country": ["Peru", "Norway", "Kenya", "Japan", "Chile", "Egypt", "Canada", "Portugal", "Vietnam", "Mexico",
                "Finland", "Ghana", "Greece", "Nepal", "Argentina"],
    "city": ["Lisbon", "Osaka", "Nairobi", "Lima", "Oslo", "Hanoi", "Toronto", "Athens", "Cairo", "Santiago",
             "Helsinki", "Accra", "Kathmandu", "Porto", "Monterrey"],
    "season": ["spring", "early summer", "late autumn", "winter"],
    "holiday": ["New Year's Day", "Thanksgiving", "the spring festival", "midsummer", "a harvest festival"],
    "product": ["coffee", "bicycle", "tea", "running shoe", "chocolate", "car"],
    "trait": ["herding sheep", "guarding homes", "pulling sleds", "hunting rabbits", "swimming"],
    "thing": ["rain", "thunder", "rust", "a rainbow", "fog", "an echo", "a tide", "frost"],
    "task": ["bake bread", "tie a bowline knot", "grow tomatoes", "repair a bicycle tire", "brew tea",
             "train a puppy", "write a haiku"],
    "word": ["serendipity", "ephemeral", "ubiquitous", "melancholy", "pragmatic", "nostalgia", "candor"],
    "concept": ["inflation", "photosynthesis", "democracy", "entropy", "irony", "gravity", "a sonnet"],
    "invention": ["telephone", "printing press", "light bulb", "steam engine", "telescope", "bicycle",
                  "radio", "microscope"],
    "feat": ["climb Mount Everest", "fly across the Atlantic alone", "walk on the moon", "sail around the world",
             "reach the South Pole", "swim the English Channel"],
    "discovery": ["penicillin", "radium", "the electron", "oxygen", "insulin", "the neutron"],
    "title": ["The Silent Harbor", "A Winter in Lima", "The Glass Orchard", "Northern Lights",
              "The Last Cartographer", "Salt and Stone"],
    "org": ["the football club", "the trade union", "the orchestra", "the expedition", "the rebel army"],
    "landmark": ["the Eiffel Tower", "Machu Picchu", "the Taj Mahal", "the Colosseum", "Angkor Wat",
                 "the Golden Gate Bridge", "Petra", "the Alhambra"],
    "event": ["the 1988 Summer Olympics", "the first world fair", "the signing of the treaty",
              "the great flood", "the royal wedding", "the first moon landing"],
    "count": ["cards are there in a deck", "squares are there on a chessboard", "hours are there in a week",
              "bones are there in the human body", "players are on a soccer team", "keys does a piano have",
              "moons does Jupiter have", "strings does a violin have"],
    "item": ["a cup of coffee", "a loaf of bread", "a bus ticket", "a liter of milk", "a movie ticket"],
    "era": ["sixties", "seventies", "eighties", "nineties"],
}

_TEMPLATES: dict[str, list[str]] = {
    "abbreviation": [
        "What does {abbr} stand for?",
        "What is the full form of {abbr}?",
        "{abbr} is short for what?",
        "What is the expansion of the acronym {abbr}?",
        "What do the letters {abbr} mean in {field}?",
    ],
    "entity": [
        "What is the national animal of {country}?",
        "What breed of dog is known for {trait}?",
        "Which {product} brand is most popular in {country}?",
        "What language is spoken in {city}?",
        "Name a flower that blooms in {season}.",
        "What food is traditionally eaten on {holiday}?",
        "What instrument did the lead singer of the {era} band from {city} play?",
    ],
    "description": [
        "Why does {thing} happen?",
        "How do you {task}?",
        "What is the meaning of the word {word}?",
        "What causes {thing}?",
        "What is {concept}?",
        "How does {concept} work?",
        "Why is {concept} important in {field}?",
    ],
    "human": [
        "Who invented the {invention}?",
        "Who was the first person to {feat}?",
        "Which scientist discovered {discovery}?",
        "Who wrote the novel {title}?",
        "Who led {org} during {event}?",
        "What was the name of the architect of {landmark}?",
    ],
    "location": [
        "Where is {landmark} located?",
        "What city is the capital of {country}?",
        "In which country can you find {landmark}?",
        "Which river flows through {city}?",
        "Where did {event} take place?",
        "What is the largest port in {country}?",
    ],
    "numeric": [
        "How many {count}?",
        "What year was the {invention} invented?",
        "How tall is {landmark}?",
        "How much does {item} cost in {city}?",
        "What is the population of {city}?",
        "How far is {city} from {country}'s border?",
        "When did {event} happen?",
    ],
}

_START = dt.date(2022, 1, 1)
_DAYS = (dt.date(2024, 12, 31) - _START).days


@dataclass(frozen=True)
class Record:
    """One line of an OOLONG-style context, with the label the line does not show."""

    date: dt.date
    user: str
    """A five-digit user id."""
    text: str
    label: str
    """The latent label, one of ``LABELS``."""

    def line(self) -> str:
        return f"Date: {self.date:%b %d, %Y} || User: {self.user} || Instance: {self.text}"


@dataclass(frozen=True)
class OolongCase:
    """One generated OOLONG-style question over line records, with its gold answer."""

    context: str
    question: str
    answer: str
    """The gold answer as text: a number, a label, or one of ``COMPARISONS``."""
    kind: str
    """Which question: one of ``OOLONG_KINDS``."""
    answer_type: str
    """"numeric", "label" or "comparison": how the answer is scored."""
    seed: int
    records: list[Record] = field(repr=False, default_factory=list)

    def score(self, prediction: str | None) -> float:
        if self.answer_type == "numeric":
            return score_numeric(prediction, int(self.answer))
        if self.answer_type == "comparison":
            return score_comparison(prediction, self.answer)
        return score_label(prediction, self.answer)


def instance_text(label: str, rng: random.Random) -> str:
    """A random instance (a short question) whose latent label is ``label``."""
    template = rng.choice(_TEMPLATES[label])
    names = re.findall(r"\{(\w+)\}", template)
    return template.format(**{name: rng.choice(_SLOTS[name]) for name in names})


def make_records(chars: int, rng: random.Random, *, users: int | None = None) -> list[Record]:
    """Records whose lines add up to about ``chars`` characters (never more).

    Label frequencies differ per case (random weights), so "most common" has a clear answer more often.
    ``users`` is the size of the user pool (default: about one user per ten lines).
    """
    weights = [rng.uniform(0.3, 2.0) for _ in LABELS]
    avg_line = 95
    n_users = users or max(5, chars // avg_line // 10)
    pool = sorted(rng.sample(range(10_000, 100_000), n_users))
    records: list[Record] = []
    size = 0
    while True:
        label = rng.choices(LABELS, weights)[0]
        record = Record(_START + dt.timedelta(days=rng.randint(0, _DAYS)), str(rng.choice(pool)),
                        instance_text(label, rng), label)
        size += len(record.line()) + 1
        if size > chars and records:
            return records
        records.append(record)


def _label_list() -> str:
    return "; ".join(f"{label} ({desc})" for label, desc in LABEL_DESCRIPTIONS.items())


def _preamble() -> str:
    return ("The context has one record per line: a date, a user id and an instance. Each instance is a "
            "question that belongs to exactly one of these labels: " + _label_list() + ". The labels are not "
            "written in the context; infer each instance's label from its meaning.")


def make_oolong(chars: int = 100_000, seed: int = 0, *, kind: str | None = None) -> OolongCase:
    """An OOLONG-style context of about ``chars`` characters and one question; same seed, same case."""
    rng = random.Random(seed)
    kind = kind or rng.choice(OOLONG_KINDS)
    if kind not in OOLONG_KINDS:
        raise ValueError(f"unknown OOLONG question kind {kind!r}; use one of {', '.join(OOLONG_KINDS)}")
    records = make_records(chars, rng)
    counts = Counter(r.label for r in records)
    context = "\n".join(r.line() for r in records) + "\n"
    ranked = sorted(LABELS, key=lambda label: (-counts[label], label))
    if kind in ("most_common", "least_common"):
        edge = ranked if kind == "most_common" else ranked[::-1]
        if counts[edge[0]] == counts[edge[1]]:  # a tie has no single right answer: ask a count instead
            kind = "count"
    label = rng.choice(LABELS)
    if kind == "count":
        answer, answer_type = str(counts[label]), "numeric"
        ask = f"How many instances have the label '{label}'? Give the answer as a single number."
    elif kind == "count_year":
        year = rng.choice((2022, 2023, 2024))
        answer = str(sum(1 for r in records if r.label == label and r.date.year == year))
        answer_type = "numeric"
        ask = (f"How many instances dated in the year {year} have the label '{label}'? "
               "Give the answer as a single number.")
    elif kind == "users_with":
        answer = str(len({r.user for r in records if r.label == label}))
        answer_type = "numeric"
        ask = (f"How many distinct users have at least one instance with the label '{label}'? "
               "Give the answer as a single number.")
    elif kind in ("most_common", "least_common"):
        answer = ranked[0] if kind == "most_common" else ranked[-1]
        answer_type = "label"
        which = "most" if kind == "most_common" else "least"
        ask = f"Which label is the {which} common among all instances? Answer with the label only."
    else:
        first, second = rng.sample(LABELS, 2)
        a, b = counts[first], counts[second]
        answer = COMPARISONS[0] if a > b else COMPARISONS[1] if a < b else COMPARISONS[2]
        answer_type = "comparison"
        ask = (f"Is the label '{first}' more common than, less common than, or the same frequency as the label "
               f"'{second}'? Answer with exactly one of: 'more common than', 'less common than', "
               "'same frequency as'.")
    return OolongCase(context, f"{_preamble()}\n\n{ask}", answer, kind, answer_type, seed, records)


# -- scoring ----------------------------------------------------------------------------------------

_NUMBER = re.compile(r"(?<![\w.,])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])")


def parse_number(prediction: str | None) -> float | None:
    """The number an answer gives: the first number in it (``1,234`` is one thousand two hundred ...).

    ``None`` when the answer holds no number.
    """
    if prediction is None:
        return None
    match = _NUMBER.search(prediction)
    return float(match.group().replace(",", "")) if match else None


def score_numeric(prediction: str | None, gold: int | float) -> float:
    """``0.75 ** abs(pred - gold)``: 1.0 when exact, 0.75 one off, 0.5625 two off; 0.0 without a number."""
    value = parse_number(prediction)
    if value is None:
        return 0.0
    return 0.75 ** abs(value - gold)


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip(".\"'`*").strip().lower())


def score_label(prediction: str | None, gold: str, labels: tuple[str, ...] = LABELS) -> float:
    """1.0 when the answer names the gold label and no other label; else 0.0 (case-insensitive)."""
    if prediction is None:
        return 0.0
    pred = _normalise(prediction)
    if pred == gold.lower():
        return 1.0
    named = {label for label in labels if re.search(rf"\b{re.escape(label.lower())}\b", pred)}
    return 1.0 if named == {gold.lower()} else 0.0


def score_comparison(prediction: str | None, gold: str) -> float:
    """1.0 when the answer holds the gold phrase and none of the other ``COMPARISONS``; else 0.0."""
    if prediction is None:
        return 0.0
    pred = _normalise(prediction)
    named = {phrase for phrase in COMPARISONS if phrase in pred}
    return 1.0 if named == {gold} else 0.0

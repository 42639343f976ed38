"""S-NIAH (RULER style): one needle sentence hidden in a long essay-like haystack.

The needle reads ``One of the special magic {numbers|uuids|words} for {key} is: {value}.``; the question
asks for the value of the key and is scored by exact match.
"""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass

__all__ = ["DEPTHS", "NEEDLE_KINDS", "SniahCase", "haystack", "make_sniah", "score_exact"]

NEEDLE_KINDS = ("numbers", "uuids", "words")
DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
"""The needle depths ``recursa bench`` sweeps: seed ``s`` puts the needle at ``DEPTHS[s % 5]``.

Not 0: the RLM's first message previews the start of the context, which would give the needle away."""

_SUBJECTS = ["the committee", "a young engineer", "the old harbour town", "our research group", "the river",
             "every startup founder", "the city council", "a careful reader", "the museum", "the winter market",
             "the orchestra", "a quiet village", "the library", "the mountain railway", "the weather station"]
_VERBS = ["considered", "wrote about", "remembered", "questioned", "rebuilt", "described", "ignored",
          "celebrated", "measured", "argued over", "returned to", "studied", "painted", "explained", "doubted"]
_OBJECTS = ["the price of bread", "a forgotten map", "the long summer", "its first principles", "the harvest",
            "the cost of ambition", "an unfinished bridge", "the evening news", "a letter from abroad",
            "the value of patience", "the noise of the factory", "a borrowed notebook", "the tides",
            "the meaning of work", "an old photograph"]
_TAILS = ["before anyone noticed", "with surprising care", "for the third time that year", "without a plan",
          "as the light faded", "in spite of the rain", "while the town slept", "with a certain pride",
          "more slowly than expected", "after much debate", "in plain language", "once again"]
_WORDS = ["amber", "lantern", "orchid", "granite", "falcon", "meadow", "harbor", "velvet", "cobalt", "thistle",
          "saffron", "glacier", "willow", "ember", "juniper", "quartz", "sparrow", "canyon", "marble", "nectar"]


@dataclass(frozen=True)
class SniahCase:
    """One generated needle-in-a-haystack question with its gold answer."""

    context: str
    question: str
    answer: str
    key: str
    kind: str
    depth: float
    """Where the needle sits, as a fraction of the haystack (0 = start, 1 = end)."""
    seed: int


def haystack(chars: int, rng: random.Random) -> str:
    """Essay-like filler of at least ``chars`` characters, in paragraphs."""
    sentences = [
        f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."
        for _ in range(4000)
    ]
    parts: list[str] = []
    size = 0
    while size < chars:
        paragraph = " ".join(rng.choices(sentences, k=rng.randint(4, 9))) + "\n\n"
        parts.append(paragraph)
        size += len(paragraph)
    return "".join(parts)[:chars]


def make_sniah(chars: int = 1_000_000, seed: int = 0, *, kind: str | None = None,
               depth: float | None = None) -> SniahCase:
    """A haystack of ``chars`` characters with one needle; the same seed gives the same case."""
    rng = random.Random(seed)
    kind = kind or rng.choice(NEEDLE_KINDS)
    if kind not in NEEDLE_KINDS:
        raise ValueError(f"unknown needle kind {kind!r}; use one of {', '.join(NEEDLE_KINDS)}")
    depth = rng.random() if depth is None else depth
    key = f"{rng.choice(_WORDS)}-{rng.choice(_WORDS)}-{rng.randint(10, 99)}"
    if kind == "numbers":
        value = str(rng.randint(1_000_000, 9_999_999))
    elif kind == "uuids":
        value = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    else:
        value = f"{rng.choice(_WORDS)}{rng.choice(_WORDS)}"
    needle = f"One of the special magic {kind} for {key} is: {value}. "
    text = haystack(max(0, chars - len(needle)), rng)
    boundary = text.rfind(". ", 0, int(len(text) * depth)) if depth > 0 else -1
    cut = boundary + 2 if boundary >= 0 else 0  # just after a sentence, or at the very start
    context = text[:cut] + needle + text[cut:]
    question = f"What is the special magic {kind[:-1]} for {key} mentioned in the provided text?"
    return SniahCase(context, question, value, key, kind, depth, seed)


def score_exact(prediction: str | None, gold: str) -> float:
    """1.0 when the answer is the gold value, alone or as a whole token in a sentence; else 0.0.

    Case-insensitive; surrounding quotes and punctuation are ignored, so ``"1234567."`` and
    ``The number is 1234567`` both match ``1234567``, but ``12345678`` does not.
    """
    if prediction is None:
        return 0.0
    pred = prediction.strip().strip(".\"'`*").strip().lower()
    gold_l = gold.strip().lower()
    if not gold_l:
        return 1.0 if not pred else 0.0
    if pred == gold_l:
        return 1.0
    return 1.0 if re.search(rf"(?<![\w-]){re.escape(gold_l)}(?![\w-])", pred) else 0.0

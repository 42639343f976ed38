"""Counts, totals and lists the host computes over the lines its first search found, picked by a small helper model.

The helper is scripted (the network edge); the REPL, sandbox, search and loop are the real ones.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from recursa import RLM, Budget, ScriptedLM
from recursa._answer_kind import host_count
from recursa._lm import Completion, Message
from recursa._trace import CodeExecuted, Notice
from recursa.sandbox._repl_tools import SearchReport

pytestmark = pytest.mark.anyio

# WARN lines name another service in their text: "from billing" is not the billing service's own line.
SERVICES = ["billing", "search", "auth"]
LOG = "\n".join(
    f"2024-03-{i % 28 + 1:02d} 09:{i % 60:02d}:00 {('WARN', 'INFO', 'ERROR')[i % 3]} [{SERVICES[i // 3 % 3]}] "
    + (f"slow response from {SERVICES[i // 9 % 3]}" if i % 3 == 0 else f"handled request {i}")
    for i in range(1_500)
)
OWN_BILLING_WARNS = sum(1 for line in LOG.splitlines() if " WARN [billing]" in line)
ORDERS = "\n".join(
    f"order {i} | customer: {'Ada Moreau' if i % 97 == 0 else 'Bo Chen'} | item: lamp | amount: {i % 500}.{i % 100:02d}"
    for i in range(1, 5_000)
)
ADA_TOTAL = sum(Decimal(line.rsplit(" ", 1)[1]) for line in ORDERS.splitlines() if "Ada Moreau" in line)


class Helper(ScriptedLM):
    """A scripted helper that, like the local model, takes a grammar: it answers the kind question with the letter
    of ``kind`` ("count", "total", "value", "list"), or with ``kind`` itself if that is a letter, and reads a line
    with ``read``."""

    supports_grammar = True

    def __init__(self, kind: str, read: Any = None) -> None:
        super().__init__(self._answer)
        self.kind, self.read = kind, read

    def _answer(self, messages: list[Message]) -> str:
        prompt = messages[-1]["content"]
        if "What kind of answer does it ask for?" not in prompt:
            return self.read(prompt)
        return next((letter for letter, text in re.findall(r"^([A-D])\) a (?:single )?(\w+)", prompt, re.MULTILINE)
                     if text == self.kind), self.kind)  # a kind it does not know: answered as a bare letter

    async def complete(self, messages: list[Message], **params: Any) -> Completion:
        assert "grammar" in params  # every helper call is constrained to its answer's shape
        return await super().complete(messages, **params)


def small(root: Any, helper: Any) -> RLM:
    return RLM(root, helper, budget=Budget(max_iterations=4), history="compact")


def notices(result: Any) -> list[str]:
    return [e.message for e in result.trace if isinstance(e, Notice)]


async def test_a_count_is_the_hosts_count_of_the_lines_that_hold_every_word() -> None:
    plain = "\n".join(line.split(" slow response")[0] for line in LOG.splitlines())  # no service named in a message
    root = ScriptedLM([])  # never asked: the host's count answers
    result = await small(root, Helper("count")).arun("How many WARN messages did the billing service write?", plain)
    assert result.answer == str(OWN_BILLING_WARNS) and result.stopped_reason == "final" and result.grounded is True
    assert root.calls == [] and any("answered by the host" in n for n in notices(result))


async def test_a_count_where_a_word_takes_several_forms_counts_the_form_that_is_a_field_of_every_line() -> None:
    # 'billing' is the service in "[billing]" (a slot every line fills) and another service's peer in "from billing".
    root = ScriptedLM([])
    result = await small(root, Helper("count")).arun("How many WARN messages did the billing service write?", LOG)
    assert result.answer == str(OWN_BILLING_WARNS) and root.calls == []


async def test_a_count_where_no_form_is_a_field_is_left_to_the_root_model() -> None:
    # Both forms sit in free text (no slot fills every line): the host cannot tell which the question means.
    text = "\n".join(line.replace(" [", " service ").replace("] ", " ") for line in LOG.splitlines())
    text = "\n".join(line if i % 4 else line.replace("service ", "peer ") for i, line in enumerate(text.splitlines()))
    own = sum(1 for line in text.splitlines() if " WARN service billing " in line)
    root = ScriptedLM(["```repl\nprint(len([l for l in context.splitlines() if ' WARN service billing ' in l]))\n```",
                       f"FINAL({own})"])
    result = await small(root, Helper("count")).arun("How many WARN messages did the billing service write?", text)
    assert any("leave it open, so the root model answers" in n for n in notices(result))
    assert len(root.calls) == 2 and result.answer == str(own)


def test_the_host_counts_only_when_the_lines_leave_no_doubt() -> None:
    assert host_count(SearchReport(counts={"WARN": 500, "billing": 700, "lines": 0}, all_count=340)) == "340"
    assert host_count(SearchReport(counts={"ERROR": 42, "times": 0})) == "42"
    forms = {"billing": [("[billing]", 150), ("from billing", 190)]}
    assert host_count(SearchReport(counts={"WARN": 500, "billing": 700}, all_count=340, forms=forms)) is None
    with_field = SearchReport(counts={"WARN": 500, "billing": 700}, all_count=340, forms=forms)
    with_field.fields = {"billing": "[billing]"}
    assert host_count(with_field) == "150"
    assert host_count(SearchReport(counts={"ERROR": 0})) is None


async def test_a_total_is_the_exact_sum_of_the_labelled_number_on_each_matching_line() -> None:
    root = ScriptedLM([])
    result = await small(root, Helper("total")).arun("What did Ada Moreau spend across all her orders?", ORDERS)
    assert result.answer == str(ADA_TOTAL) and result.grounded is True and root.calls == []
    assert any("_host_total()" in e.code for e in result.trace if isinstance(e, CodeExecuted))


async def test_no_total_is_offered_when_the_last_numbers_follow_different_words() -> None:
    mixed = "\n".join(f"Ada Moreau {'paid' if i % 2 else 'owes'} {i}.50" for i in range(40))
    root = ScriptedLM(["```repl\nprint(sum(number(l) for l in search('Ada Moreau')))\n```", "FINAL(800.0)"])
    result = await small(root, Helper("total")).arun("What do the amounts for Ada Moreau come to?", mixed)
    assert len(root.calls) == 2 and result.answer == "800.0"  # no total from the host: the root model's code
    assert not any("answered by the host" in n for n in notices(result))


PASSWORDS = ("Filler about the weather today. " * 40 + "\n"
             + "\n".join(f"Staff of the twin dockyard use {word} as one password. " + "More filler. " * 10
                         for word in ("thunderbolt", "violetmoon", "walnutcomet"))
             + "\nStaff of the old dockyard use 4444 as one password.\n" + "Closing filler. " * 40)


async def test_a_list_is_the_value_each_matching_line_gives_read_one_line_at_a_time() -> None:
    def read(prompt: str) -> str:
        return re.search(r"use (\w+) as one password", prompt)[1]

    root = ScriptedLM([])
    result = await small(root, Helper("list", read=read)).arun(
        "Every password used by the staff of the twin dockyard, please.", PASSWORDS)
    assert result.answer == "thunderbolt, violetmoon, walnutcomet" and root.calls == []  # not the old dockyard's


async def test_a_list_value_the_line_does_not_contain_is_not_taken() -> None:
    root = ScriptedLM(["```repl\nprint(search('twin dockyard password'))\n```",
                       "FINAL(thunderbolt, violetmoon, walnutcomet)"])
    result = await small(root, Helper("list", read=lambda prompt: "12345")).arun(
        "Every password used by the staff of the twin dockyard, please.", PASSWORDS)
    assert result.answer == "thunderbolt, violetmoon, walnutcomet" and len(root.calls) == 2


async def test_a_helper_without_a_grammar_is_not_asked_to_pick() -> None:
    helper = ScriptedLM(lambda messages: "A")  # a hosted model: no grammar, so no host answers
    root = ScriptedLM(["```repl\nprint(len([l for l in context.splitlines() if ' WARN [billing]' in l]))\n```",
                       f"FINAL({OWN_BILLING_WARNS})"])
    result = await small(root, helper).arun("How many WARN messages did the billing service write?", LOG)
    assert helper.calls == [] and len(root.calls) == 2 and result.answer == str(OWN_BILLING_WARNS)


def test_search_marks_the_form_that_fills_a_slot_of_every_line_and_reads_it_back() -> None:
    from recursa.sandbox._repl_tools import make_search, read_search

    printed: list[str] = []
    make_search([LOG], ["context"], as_list=False, out=printed.append)("billing WARN")
    forms_line = next(line for line in printed if line.startswith("  by how 'billing'"))
    assert f"'[billing]' {OWN_BILLING_WARNS:,} (a field of every line)" in forms_line
    assert "'from billing' " in forms_line and forms_line.count("a field") == 1
    assert read_search("\n".join(printed)).fields == {"billing": "[billing]"}


async def test_a_kind_named_by_letter_alone_is_not_taken() -> None:
    # "A" is a count in the first order of the kinds and a single value in the second: no host answer.
    plain = "\n".join(line.split(" slow response")[0] for line in LOG.splitlines())
    root = ScriptedLM(["```repl\nprint(len([l for l in context.splitlines() if ' WARN [billing]' in l]))\n```",
                       f"FINAL({OWN_BILLING_WARNS})"])
    result = await small(root, Helper("A")).arun("How many WARN messages did the billing service write?", plain)
    assert len(root.calls) == 2 and not any("answered by the host" in n for n in notices(result))


def test_a_line_holding_a_word_in_two_forms_counts_for_both() -> None:
    from recursa.sandbox._repl_tools import make_search, read_search

    # The message names the service before its own field: "slow call to media" ... service=media.
    log = "\n".join(f'time=T{i} level={"WARN" if i % 2 else "INFO"} msg="'
                    + (f"slow call to {SERVICES[i % 3]}" if i % 2 else "ok") + f'" service={SERVICES[i // 7 % 3]}'
                    for i in range(600))
    own = sum(1 for line in log.splitlines() if "level=WARN" in line and line.endswith("service=billing"))
    printed: list[str] = []
    make_search([log], ["context"], as_list=False, out=printed.append)("billing WARN")
    assert f"'=billing' {own} (a field of every line)" in "\n".join(printed)
    assert host_count(read_search("\n".join(printed))) == str(own)

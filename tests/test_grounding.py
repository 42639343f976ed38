"""The answer check: values an answer asserts must appear in what the code printed or stored."""

from __future__ import annotations

import pytest
from recursa._grounding import agrees, check_grounding, extraction_prompt, is_bare_value, supporting_lines

QUESTION = "Which phone extension does the crooked tram depot have?"
EVIDENCE = [
    "search('phone extension crooked tram depot') over 4,675 lines.\n"
    "  line 3045: For the crooked tram depot, the phone extension was set to 763 last year.\n"
    "  line 2713: For the narrow tram depot, the phone extension was set to 4342 last year.",
    "total = 82388.99000000001",
]


@pytest.mark.parametrize("answer", ["763", "The phone extension is 763.", "`763`", "763 as stated in the text"])
def test_answers_whose_values_were_printed_are_grounded(answer: str) -> None:
    assert check_grounding(answer, QUESTION, EVIDENCE).grounded is True


@pytest.mark.parametrize(
    ("answer", "missing"),
    [("12345", ("12345",)), ("29", ("29",)), ("bluebird", ("bluebird",)), ("Extension 7001 of Ines Okafor", None)],
)
def test_values_never_printed_are_not_grounded(answer: str, missing: tuple[str, ...] | None) -> None:
    verdict = check_grounding(answer, QUESTION, EVIDENCE)
    assert verdict.grounded is False
    if missing:
        assert verdict.missing == missing


def test_an_answer_that_only_repeats_the_question_is_not_grounded() -> None:
    verdict = check_grounding("the crooked tram depot", QUESTION, EVIDENCE)
    assert verdict.grounded is False and "repeats" in verdict.reason


def test_case_tells_a_value_from_its_name() -> None:
    evidence = ["tkinter/tix.py:54: DECREASING = 'decreasing'"]
    assert check_grounding("decreasing", "What is the value of DECREASING?", evidence).grounded is True
    assert check_grounding("DECREASING", "What is the value of DECREASING?", evidence).grounded is False


def test_a_constant_holding_its_own_name_is_a_printed_value() -> None:
    assigned, used = "pool.py:39: TERMINATE = \"TERMINATE\"", "pool.py:656: self._state = TERMINATE"
    question = "Which value is assigned to TERMINATE?"
    assert check_grounding("TERMINATE", question, [assigned, used]).grounded is True
    assert check_grounding("TERMINATE", question, [used]).grounded is False


def test_a_refusal_names_the_part_of_the_answer_that_was_printed() -> None:
    evidence = ["multiprocessing/heap.py:322: class BufferWrapper(object):"]
    verdict = check_grounding("/usr/lib/python3.8/site-packages/multiprocessing/heap.py",
                              "Which file defines the class BufferWrapper?", evidence)
    assert verdict.grounded is False and "the part that was printed: 'multiprocessing/heap.py'" in verdict.reason


def test_numbers_match_to_the_answers_precision() -> None:
    assert check_grounding("82388.99", "What is the total?", EVIDENCE).grounded is True
    assert check_grounding("4,342", QUESTION, EVIDENCE).grounded is True
    assert check_grounding("82389.5", "What is the total?", EVIDENCE).grounded is False


@pytest.mark.parametrize("answer", ["The text does not mention it.", "Not found in the context", "No", "none"])
def test_absence_and_yes_no_answers_have_nothing_to_check(answer: str) -> None:
    assert check_grounding(answer, QUESTION, EVIDENCE).grounded is None


def test_supporting_lines_and_the_extraction_prompt_point_at_the_missing_word() -> None:
    lines = supporting_lines(("4342",), EVIDENCE)
    assert lines == ["line 2713: For the narrow tram depot, the phone extension was set to 4342 last year."]
    prompt = extraction_prompt(QUESTION, lines)
    assert "4342" in prompt and "'crooked'" in prompt.rsplit("Note:", 1)[1]
    assert "Note:" not in extraction_prompt(QUESTION, supporting_lines(("763",), EVIDENCE))


def test_an_extracted_answer_agrees_only_when_its_values_match() -> None:
    assert agrees("763", "763", ("763",))
    assert agrees("The extension is 763.", "763", ("763",))
    assert not agrees("NONE", "4342", ("4342",))
    assert not agrees("1484", "14351", ("14351",))


@pytest.mark.parametrize(("extracted", "answer", "same"), [
    ("zipfile", "zipfile.py", True), ("heap.py", "multiprocessing/heap.py", True),
    ("multiprocessing/heap", "heap.py", True), ("heap.py", "multiprocessing/pool.py", False),
    ("zipfile", "zipfile_ext.py", False), ("2", "2390", False),
])
def test_one_file_named_two_ways_agrees(extracted: str, answer: str, same: bool) -> None:
    assert agrees(extracted, answer, (answer,)) is same


def test_a_bare_printed_value_is_recognised() -> None:
    assert is_bare_value("82388.99000000001", ("82388.99",))
    assert not is_bare_value("search(...) over 14,351 lines", ("14351",))


def test_a_file_name_is_checked_as_one_value() -> None:
    evidence = ["tkinter/tix.py:1504: class Tree(TixWidget):", "distutils/dist.py:1113: the release tree."]
    assert check_grounding("Tree.py", "file for class Tree?", evidence).grounded is False
    assert check_grounding("tix.py", "file for class Tree?", evidence).grounded is True

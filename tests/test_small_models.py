"""The small-model path (issue 11): each failure seen in traces of the 1.5B model has a mechanism that stops it.

A scripted model plays the small model's bad habits; the REPL, sandbox and loop are the real ones.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from recursa import RLM, Budget, CodeExecuted, Context, Notice, ScriptedLM
from recursa._lm import Completion, Message
from recursa._local import _degenerate
from recursa._parsing import CODE_GRAMMAR, STEP_GRAMMAR, find_code_blocks

pytestmark = pytest.mark.anyio

LOG = "\n".join(
    f"2024-05-{i % 28 + 1:02d} 10:00:{i % 60:02d} {'ERROR' if i % 7 == 0 else 'INFO'} "
    f"[{'payments' if i % 3 == 0 else 'search'}] request {1000 + i} took {i % 50} ms"
    for i in range(2_000)
)
PAYMENT_ERRORS = sum(1 for line in LOG.splitlines() if "ERROR" in line and "[payments]" in line)


class GrammarLM(ScriptedLM):
    """A scripted model that, like the local one, takes a GBNF grammar; it records what each call asked for."""

    supports_grammar = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params: list[dict[str, Any]] = []

    async def complete(self, messages: list[Message], **params: Any) -> Completion:
        self.params.append(params)
        return await super().complete(messages, **params)


def code(src: str) -> str:
    return f"```repl\n{src}\n```"


def small(root: Any, **kwargs: Any) -> RLM:
    """An RLM configured as for a small local model."""
    kwargs.setdefault("budget", Budget(max_iterations=6))
    return RLM(root, history="compact", **kwargs)


def value_kind(read: str = "NONE") -> GrammarLM:
    """A helper model that takes every question for one that asks a single value, so the host computes no answer
    of its own (see ``_answer_kind``) and what is tested is the root model's answer and its checks; asked to
    re-read lines, it replies ``read``."""
    def reply(messages: list[Message]) -> str:
        kind = re.search(r"^([A-D])\) a single value", messages[-1]["content"], re.MULTILINE)
        return kind[1] if kind else read

    return GrammarLM(reply)


def notices(result: Any) -> list[str]:
    return [e.message for e in result.trace if isinstance(e, Notice)]


# -- real output before the first decision -------------------------------------------------------------

async def test_the_host_runs_a_search_before_the_first_turn() -> None:
    root = ScriptedLM([code("print(len(search('payments ERROR')))"), f"FINAL({PAYMENT_ERRORS})"])
    result = await small(root).arun("How many ERROR lines does the payments service have?", LOG)
    first = root.calls[0][-1]["content"]
    assert "The host already ran this first step" in first
    assert f"Lines containing all of 'ERROR', 'payments': {PAYMENT_ERRORS}" in first
    assert "[payments] request" in first  # real lines, in the real format
    probes = [e for e in result.trace if isinstance(e, CodeExecuted) and e.iteration == 0]
    assert len(probes) == 1 and probes[0].code.startswith("search(")
    assert result.answer == str(PAYMENT_ERRORS) and result.stopped_reason == "final" and result.grounded is True


# -- cause 1: made-up output instead of code ---------------------------------------------------------------

async def test_the_root_reply_is_constrained_to_one_step_where_the_backend_allows_it() -> None:
    root = GrammarLM(["FINAL(7)", code("print(len(search('payments ERROR')))"), f"FINAL({PAYMENT_ERRORS})"])
    sub = ScriptedLM(lambda messages: "NONE")  # re-reading the lines that hold a 7 finds no answer there
    result = await small(root, sub=sub).arun("How many ERROR lines does the payments service have?", LOG)
    assert root.params[0] == {"grammar": STEP_GRAMMAR}
    assert root.params[1]["grammar"] == CODE_GRAMMAR  # after a refused FINAL the next reply must be code
    assert result.answer == str(PAYMENT_ERRORS)


def test_a_reply_looping_on_one_line_is_cut() -> None:
    assert _degenerate("```repl\n" + "1 matches\n" * 8)
    assert not _degenerate("```repl\nimport re\nlines = search('x')\nprint(len(lines))\n")


async def test_imagined_output_is_never_run_and_never_answers() -> None:
    payments = sum(1 for line in LOG.splitlines() if "[payments]" in line)
    root = ScriptedLM(["3 matches\nline 12: the secret is 4471\nline 13: the secret is 4471",
                       code("print(len(search('payments')))"), f"FINAL({payments})"])
    result = await small(root).arun("How many payments lines are there?", LOG)
    assert result.answer == str(payments) and result.stopped_reason == "final"
    ran = [e.code for e in result.trace if isinstance(e, CodeExecuted)]
    assert not any("4471" in c for c in ran)
    assert "no ```repl code block" in root.calls[1][-1]["content"]


# -- cause 2: a fence tag on its own line ------------------------------------------------------------------

def test_a_fence_tag_on_its_own_line_is_not_run_as_code() -> None:
    reply = "```\nrepl\nprint(1)\n```\n```\npython\nprint(2)\n```"
    assert find_code_blocks(reply) == ["print(1)\n", "print(2)\n"]


def test_a_block_repeated_in_one_reply_runs_once() -> None:
    assert find_code_blocks("\n".join([code("print(1)")] * 49)) == ["print(1)\n"]


# -- cause 3: `re` not imported ----------------------------------------------------------------------------

async def test_common_modules_are_already_imported_in_the_repl() -> None:
    src = ("print(len(re.findall('ERROR', context)), json.dumps([1]), math.floor(2.5), "
           "Counter('aab')['a'], number('took 12.5 ms'))")
    root = ScriptedLM([code(src), "FINAL(done)"])
    result = await RLM(root).arun("q", LOG)
    run = [e for e in result.trace if isinstance(e, CodeExecuted) and e.code.startswith("print(len(re")][0]
    assert run.error is None and run.output.strip() == f"{LOG.count('ERROR')} [1] 2 2 12.5"


# -- cause 4: a traceback unlocks FINAL, numbers lifted from the budget line --------------------------------

async def test_a_final_right_after_a_failed_step_is_refused_once() -> None:
    root = ScriptedLM([code("print(len(search('payments')))"), code("print(undefined_name)"), "FINAL(29)",
                       code("print(len(search('payments ERROR')))"), f"FINAL({PAYMENT_ERRORS})"])
    result = await small(root).arun("How many ERROR lines does the payments service have?", LOG)
    assert any("the code before it failed" in n for n in notices(result))
    assert result.answer == str(PAYMENT_ERRORS) and result.stopped_reason == "final"


async def test_a_number_from_the_budget_line_is_not_grounded() -> None:
    root = ScriptedLM([code("print(len(search('payments')))"), "FINAL(29)", code("print('still looking')"),
                       "FINAL(29)"])
    result = await small(root, budget=Budget(max_iterations=30)).arun("How many refund lines are there?", LOG)
    assert "budget left: 29 turns" in root.calls[1][-1]["content"]
    assert result.answer == "29" and result.grounded is False and result.stopped_reason == "ungrounded"


# -- cause 5: placeholder answers pass ---------------------------------------------------------------------

async def test_a_placeholder_answer_gets_one_look_then_is_reported_as_ungrounded() -> None:
    root = ScriptedLM([code("print(search('warehouse door code'))"), "FINAL(12345)",
                       code("print('nothing')"), "FINAL(12345)"])
    result = await small(root).arun("What is the door code of the blue warehouse?", LOG)
    assert any("not grounded" in n for n in notices(result))
    assert "FINAL(12345) was not accepted" in root.calls[2][-1]["content"]
    assert result.to_dict()["grounded"] is False and result.to_dict()["stopped_reason"] == "ungrounded"
    assert result.to_dict()["model"] == "scripted"


async def test_the_model_must_look_itself_before_answering_from_the_hosts_search() -> None:
    root = ScriptedLM(["FINAL(14)", code("print(len(search('payments ERROR')))"), f"FINAL({PAYMENT_ERRORS})"])
    result = await small(root).arun("How many ERROR lines does the payments service have?", LOG)
    assert any("has not run code of its own" in n for n in notices(result))
    assert result.answer == str(PAYMENT_ERRORS) and result.grounded is True


async def test_a_value_read_off_a_look_alike_line_is_refused_by_the_extraction_check() -> None:
    # "northern" occurs elsewhere in the text, so only reading the line tells that it is about another depot.
    context = ("Filler about the weather. " * 50 + "\nThe door code for the narrow tram depot is 48324.\n"
               + "More filler about the harbour and the northern lights. " * 50)
    root = ScriptedLM([code("print(search('door code tram depot'))"), "FINAL(48324)",
                       code("print(len(search('northern')))"),
                       "FINAL(The text does not mention the northern tram depot)"])
    sub = ScriptedLM(lambda messages: "NONE" if "'northern'" in messages[-1]["content"] else "48324")
    result = await small(root, sub=sub).arun("What is the door code for the northern tram depot?", context)
    assert any("read independently" in n for n in notices(result))
    assert "Note: the question's word(s) 'northern'" in sub.calls[0][-1]["content"]
    assert result.answer.startswith("The text does not mention") and result.stopped_reason == "final"
    assert result.grounded is None


async def test_big_models_keep_the_papers_loop_unless_asked() -> None:
    root = ScriptedLM([code("print(len(context))"), "FINAL(12345)"])
    result = await RLM(root).arun("q", LOG)
    assert result.answer == "12345" and result.stopped_reason == "final" and result.grounded is None
    assert "The host already ran" not in root.calls[0][-1]["content"]


async def test_a_final_holding_only_dots_is_not_an_answer() -> None:
    root = ScriptedLM([code("print(len(search('payments ERROR')))"), "FINAL(...)", f"FINAL({PAYMENT_ERRORS})"])
    result = await small(root).arun("How many ERROR lines does the payments service have?", LOG)
    assert any("only dots" in n for n in notices(result))
    assert result.answer == str(PAYMENT_ERRORS) and result.stopped_reason == "final"


async def test_an_extracted_long_value_that_matches_is_accepted() -> None:
    uuid = "67a9c378-7c65-41e5-82e2-e662f728b4fa"
    context = "Filler. " * 500 + f"\nOne of the special magic uuids for ember-lantern-43 is: {uuid}.\n" + "More. " * 500
    root = ScriptedLM([code("print(search('ember-lantern-43')[0])"), f"FINAL({uuid})"])
    sub = ScriptedLM(lambda messages: uuid)
    result = await small(root, sub=sub).arun("What is the special magic uuid for ember-lantern-43?", context)
    assert result.answer == uuid and result.stopped_reason == "final" and result.grounded is True


# -- checks against the host's first search: look-alike keys, one value of several, fields in records ----------

DEPOTS = ("Filler about the weather. " * 60 + "\nNote: Priya Novak is the manager of the rusty ferry.\n"
          + "More filler about the harbour. " * 60)


async def test_an_answer_about_a_look_alike_key_is_refused_with_the_absent_answer_offered() -> None:
    root = GrammarLM([code("print(search('manager ferry'))"), "FINAL(Priya Novak)",
                      "FINAL(The text does not mention the sunny ferry.)"])
    result = await small(root, sub=value_kind()).arun("Who is the manager of the sunny ferry?", DEPOTS)
    refusal = root.calls[2][-1]["content"]
    assert "'sunny' occurs nowhere in the text" in refusal and "about the rusty ferry" in refusal
    assert "FINAL(The text does not mention the sunny ferry.)" in refusal
    assert root.params[2]["grammar"] == STEP_GRAMMAR  # the offered answer may be given at once
    assert result.answer == "The text does not mention the sunny ferry." and result.stopped_reason == "final"


async def test_an_answer_about_a_look_alike_key_given_again_is_reported_as_doubted() -> None:
    root = ScriptedLM([code("print(search('manager ferry'))"), "FINAL(Priya Novak)", "FINAL(Priya Novak)"])
    result = await small(root).arun("Who is the manager of the sunny ferry?", DEPOTS)
    assert result.answer == "Priya Novak" and result.grounded is False and result.stopped_reason == "ungrounded"


async def test_the_same_key_in_the_line_is_no_look_alike() -> None:
    root = ScriptedLM([code("print(search('manager ferry'))"), "FINAL(Priya Novak)"])
    sub = ScriptedLM(lambda messages: "Priya Novak")
    result = await small(root, sub=sub).arun("Who is the manager of the rusty ferry?", DEPOTS)
    assert result.answer == "Priya Novak" and result.stopped_reason == "final" and result.grounded is True


async def test_one_value_of_several_for_one_key_is_refused_once_with_the_others_shown() -> None:
    codes = ["G929-73", "B925-43", "R561-93"]
    lines = [f"Among the licence numbers of the narrow pharmacy is {c}. " + "Filler. " * 20 for c in codes]
    context = "\n".join(["Some filler text about the town. " * 20, *lines,
                         "Among the licence numbers of the blue pharmacy is S384-71."])
    root = ScriptedLM([code("print(search('licence narrow pharmacy'))"), "FINAL(G929-73)",
                       "FINAL(G929-73, B925-43, R561-93)"])
    sub = ScriptedLM(lambda messages: "G929-73, B925-43, R561-93")
    result = await small(root, sub=sub).arun("Which licence numbers does the narrow pharmacy have?", context)
    refusal = next(n for n in notices(result) if "not grounded" in n)
    assert "3 lines contain every word of the question" in refusal and "B925-43" in refusal and "R561-93" in refusal
    assert "S384-71" not in refusal  # the look-alike line lacks a word of the key
    assert "3 lines contain every word" in root.calls[2][-1]["content"]
    assert result.answer == "G929-73, B925-43, R561-93" and result.stopped_reason == "final"


def test_search_shows_how_a_word_fills_different_fields_of_records() -> None:
    from recursa.sandbox._repl_tools import make_search, read_search

    log = "\n".join(f"2024-01-01 10:00:{i % 60:02d} WARN [{'inventory' if i % 2 else 'auth'}] slow response from "
                    f"{'inventory' if i % 3 else 'billing'} ({i} ms)" for i in range(300))
    printed: list[str] = []
    make_search([log], ["context"], as_list=False, out=printed.append)("WARN lines logged by inventory")
    own = sum(" [inventory] " in line for line in log.splitlines())
    called = sum("[inventory]" not in line and "from inventory" in line for line in log.splitlines())
    forms = next(line for line in printed if line.startswith("  by how 'inventory' appears in them: "))
    assert f"'[inventory]' {own} (a field of every line)" in forms and "'from inventory' " in forms
    assert called and read_search("\n".join(printed)).complete is False  # 200 lines, 8 shown

    prose = " ".join(f"The inventory of shop {i} was counted by {name}." for i, name in
                     enumerate(["Ann", "Bob", "Cy", "Di", "Ed"] * 20)).replace(". ", ".\n")
    printed.clear()
    make_search([prose], ["context"], as_list=False, out=printed.append)("inventory counted")
    assert not any("by how" in line for line in printed)


def test_search_lists_lines_with_every_word_apart_from_partial_matches() -> None:
    from recursa.sandbox._repl_tools import make_search, read_search

    text = "The door code of the blue warehouse is 4471.\nThe door code of the green warehouse is 9150.\nfiller\n"
    printed: list[str] = []
    make_search([text], ["context"], as_list=False, out=printed.append)("door code of the purple warehouse")
    output = "\n".join(printed)
    assert "Not found anywhere in context: 'purple'" in output
    report = read_search(output)
    assert report.absent == ("purple",) and report.complete and len(report.full_lines) == 2

    printed.clear()
    make_search([text], ["context"], as_list=False, out=printed.append)("blue warehouse door code")
    output = "\n".join(printed)
    assert output.index("blue warehouse is 4471") < output.index("Other lines, with some of the words:")
    assert output.index("Other lines") < output.index("green warehouse is 9150")
    assert read_search(output).full_lines == ("line 1: The door code of the blue warehouse is 4471.",)


async def test_dots_copied_from_a_shortened_search_line_are_not_part_of_the_answer() -> None:
    context = "Filler. " * 400 + "\nThe door code of the blue warehouse is 4471.\n" + "More. " * 400
    root = ScriptedLM([code("print(search('door code blue warehouse'))"), "FINAL(...4471)"])
    result = await small(root, sub=ScriptedLM(lambda messages: "4471")).arun(
        "What is the door code of the blue warehouse?", context)
    assert result.answer == "4471" and result.stopped_reason == "final"


SERVICES_LOG = "\n".join(
    f"2024-03-01 10:{i // 60 % 60:02d}:{i % 60:02d} {'WARN' if i % 4 == 0 else 'INFO'} "
    f"[{('inventory', 'auth', 'billing')[i % 3]}] slow response from {('inventory', 'search')[i % 5 == 0]} ({i} ms)"
    for i in range(3_000))
OWN_WARNS = sum(" WARN [inventory] " in line for line in SERVICES_LOG.splitlines())
ANY_WARNS = sum("WARN" in line and "inventory" in line for line in SERVICES_LOG.splitlines())


async def test_a_count_of_lines_where_a_word_means_different_things_is_refused_with_the_split_shown() -> None:
    root = GrammarLM([code("print(len(search('WARN inventory')))"), f"FINAL({ANY_WARNS})", f"FINAL({OWN_WARNS})"])
    result = await small(root, sub=value_kind()).arun("How many WARN lines did the inventory service write?",
                                                       SERVICES_LOG)
    refusal = next(n for n in notices(result) if "not grounded" in n)
    assert f"{ANY_WARNS:,} counts the lines that contain 'WARN', 'inventory' in any form" in refusal
    assert f"'[inventory]' {OWN_WARNS:,}" in refusal and root.params[2]["grammar"] == STEP_GRAMMAR
    assert result.answer == str(OWN_WARNS) and result.stopped_reason == "final"


async def test_a_count_of_lines_with_one_of_the_words_is_refused() -> None:
    warns = sum("WARN" in line for line in SERVICES_LOG.splitlines())
    root = ScriptedLM([code("print(len(search('WARN')))"), f"FINAL({warns})", f"FINAL({warns})"])
    result = await small(root).arun("How many WARN lines did the inventory service write?", SERVICES_LOG)
    assert any(f"{warns:,} is the number of lines that contain 'WARN'" in n for n in notices(result))
    assert result.grounded is False and result.stopped_reason == "ungrounded"


def test_the_hosts_search_output_reads_back_into_its_findings() -> None:
    from recursa.sandbox._repl_tools import make_search, read_search

    printed: list[str] = []
    make_search([SERVICES_LOG], ["context"], as_list=False, out=printed.append)("WARN lines of the inventory service")
    report = read_search("\n".join(printed))
    assert report.counts["WARN"] == sum("WARN" in line for line in SERVICES_LOG.splitlines())
    assert report.absent == ("lines", "service") and report.all_count == ANY_WARNS and not report.complete
    assert dict(report.forms["inventory"])["[inventory]"] == OWN_WARNS


async def test_every_value_of_a_key_read_off_its_own_lines_is_accepted_without_a_re_reading() -> None:
    codes = ["28519", "86405", "59915"]
    lines = [f"The silent orchard also uses {c} as a door code. " + "Filler. " * 20 for c in codes]
    look_alike = "The blue orchard also uses 4444 as a door code."
    context = "\n".join(["Some filler text about the town. " * 20, *lines, look_alike])
    root = ScriptedLM([code("print(search('door codes silent orchard'))"), "FINAL(28519, 86405, 59915)"])
    sub = ScriptedLM(lambda messages: "28519")  # a small model re-reading the lines gives one value
    result = await small(root, sub=sub).arun("Which door codes does the silent orchard have? Give every one.", context)
    assert result.answer == "28519, 86405, 59915" and result.stopped_reason == "final" and result.grounded is True
    assert sub.calls == []


async def test_an_invented_value_for_an_absent_key_is_refused_with_the_absence_pointed_out() -> None:
    root = GrammarLM([code("print(search('manager sunny ferry'))"), "FINAL(12345)",
                      "FINAL(The text does not mention the sunny ferry.)"])
    result = await small(root, sub=value_kind()).arun("Who is the manager of the sunny ferry?", DEPOTS)
    refusal = next(n for n in notices(result) if "not grounded" in n)
    assert "never printed: 12345" in refusal and "'sunny' occurs nowhere in the text" in refusal
    assert root.params[2]["grammar"] == STEP_GRAMMAR
    assert result.answer == "The text does not mention the sunny ferry." and result.stopped_reason == "final"


def test_a_compound_word_the_text_keeps_apart_is_searched_as_its_parts() -> None:
    from recursa.sandbox._repl_tools import make_search

    printed: list[str] = []
    found = make_search([SERVICES_LOG], ["context"], as_list=False, out=printed.append)(
        "inventory: how many WARN-level messages?")
    assert "'WARN' 750" in printed[0] and "'level'" in printed[0] and "'WARN-level'" not in printed[0]
    assert len(found) == ANY_WARNS


async def test_a_first_answer_every_check_backs_is_taken_without_the_own_look_turn() -> None:
    context = "Filler. " * 400 + "\nThe door code of the blue warehouse is 4471.\n" + "More. " * 400
    root = ScriptedLM(["FINAL(4471)"])
    sub = ScriptedLM(lambda messages: "4471")
    result = await small(root, sub=sub).arun("What is the door code of the blue warehouse?", context)
    assert result.answer == "4471" and result.stopped_reason == "final" and result.grounded is True
    assert not any("has not run code of its own" in n for n in notices(result))


def test_search_puts_the_line_that_defines_a_name_of_the_question_first() -> None:
    from recursa.sandbox._repl_tools import make_search

    # Words around the name ("value", "gives") are as rare as the name itself; the name and its definition win.
    uses = [f"    if mode == PY_SOURCE:  # the value gives case {i}" for i in range(3)]
    docs = ["\n".join(["# the value of this code gives nothing", *uses, "def load(): pass"]),
            "\n".join(["import os", "PY_SOURCE = 1", "PY_COMPILED = 2"])]
    printed: list[str] = []
    make_search(docs, ["a.py", "b.py"], as_list=True, out=printed.append)("What value does the code give PY_SOURCE?")
    listed = [line for line in printed if line.startswith("  ")]
    assert listed[0] == "  b.py:2: PY_SOURCE = 1"


async def test_a_value_read_off_the_line_that_defines_the_name_is_accepted_without_a_re_reading() -> None:
    source = ["import sys\n\ndef main():\n    run(TESTCMD)\n" * 3,
              "# a constant is assigned below\nTESTCMD = 'import x; x.main()'\n"]
    context = Context(source, names=["runner.py", "pdb.py"])
    root = ScriptedLM(["FINAL('import x; x.main()')"])
    sub = ScriptedLM(lambda messages: "NONE")  # a small re-reader misled by 'constant' and 'assigned'
    result = await small(root, sub=sub).arun("Find the constant TESTCMD. What is it assigned?", context)
    assert result.answer == "import x; x.main()" and result.stopped_reason == "final" and result.grounded is True
    assert sub.calls == []


def test_only_the_assigned_value_or_the_defining_file_is_read_off_a_definition() -> None:
    from recursa._grounding import reads_a_definition

    constant = ["pdb.py:1736: TESTCMD = 'import x; x.main()'  # how to run it"]
    assert reads_a_definition("Find the constant TESTCMD. What is it assigned?", ("'import x; x.main()'",), constant)
    assert not reads_a_definition("What is TESTCMD?", ("pdb.py",), constant)  # a file name is not its value
    assert not reads_a_definition("What is TESTCMD?", ("run",), constant)  # nor a word of the comment
    klass = ["multiprocessing/context.py:230: class DefaultContext(BaseContext):"]
    assert reads_a_definition("Which file defines DefaultContext?", ("multiprocessing/context.py",), klass)
    assert not reads_a_definition("Which file defines DefaultContext?", ("BaseContext",), klass)
    assert not reads_a_definition("What is USTAR_FORMAT?", ("0",), ["tarfile.py:988: if format == USTAR_FORMAT:"])


async def test_a_value_copied_without_its_first_letter_is_completed_from_its_line() -> None:
    context = "Filler about the weather. " * 80 + "\nIn the purple arcade, P272-98 serves as the licence number.\n" + \
        "More filler about the harbour. " * 80
    root = ScriptedLM(["FINAL(272-98)"])
    result = await small(root, sub=value_kind(read="P272-98")).arun("Do you know the purple arcade's licence number?",
                                                                   context)
    assert result.answer == "P272-98" and result.stopped_reason == "final" and result.grounded is True
    assert any("completed to 'P272-98'" in n for n in notices(result))


async def test_a_first_answer_about_a_look_alike_key_is_told_why_at_once() -> None:
    root = GrammarLM(["FINAL(Priya Novak)", "FINAL(The text does not mention the sunny ferry.)"])
    result = await small(root, sub=value_kind()).arun("Who is the manager of the sunny ferry?", DEPOTS)
    refusal = root.calls[1][-1]["content"]
    assert "'sunny' occurs nowhere in the text" in refusal and "Before answering, run one" not in refusal
    assert root.params[1]["grammar"] == STEP_GRAMMAR  # the offered answer may be given at once
    assert result.answer == "The text does not mention the sunny ferry." and result.stopped_reason == "final"


def test_only_a_clipped_copy_of_one_value_is_completed() -> None:
    from recursa._grounding import whole_value

    line = ["In the purple arcade, P272-98 serves as the licence number; 14437 and 4437 are other numbers."]
    assert whole_value("272-98", line) == "P272-98"
    assert whole_value("P272-98", line) is None  # already whole
    assert whole_value("4437", line) is None  # a value of its own
    assert whole_value("2-98", line) is None  # more than two characters missing
    assert whole_value("The licence", line) is None  # not a single value
    assert whole_value("1234", ["A1234 and B1234"]) is None  # two values would fit


async def test_a_look_alike_answer_repeated_after_its_first_refusal_is_refused_again() -> None:
    root = GrammarLM(["FINAL(Priya Novak)", code("print(search('manager ferry'))"), "FINAL(Priya Novak)",
                      "FINAL(The text does not mention the sunny ferry.)"])
    result = await small(root, sub=value_kind()).arun("Who is the manager of the sunny ferry?", DEPOTS)
    assert sum("'sunny' occurs nowhere in the text" in n for n in notices(result)) == 2
    assert result.answer == "The text does not mention the sunny ferry." and result.stopped_reason == "final"


async def test_a_file_named_by_a_line_that_lacks_the_class_asked_about_is_refused() -> None:
    context = Context(["# override earlier field definitions in base classes\nimport re\n",
                       "from typing import Protocol\n\nclass PackageMetadata(Protocol):\n    pass\n"],
                      names=["dataclasses.py", "importlib/metadata/_meta.py"])
    root = ScriptedLM(["FINAL(dataclasses.py)", code("print(search('class PackageMetadata'))"),
                       "FINAL(importlib/metadata/_meta.py)"])
    sub = value_kind(read="dataclasses.py")  # a small re-reader that agrees with anything on the line
    result = await small(root, sub=sub).arun("Locate the class definition for PackageMetadata: what file is it in?",
                                             context)
    assert any("do not mention 'PackageMetadata'" in n for n in notices(result))
    assert result.answer == "importlib/metadata/_meta.py" and result.grounded is True

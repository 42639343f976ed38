"""The RLM loop end to end with a scripted model and the real sandboxed REPL."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from processes import descendants
from recursa import (
    RLM,
    Budget,
    CodeExecuted,
    LMError,
    Notice,
    Result,
    RunFinished,
    RunStarted,
    ScriptedLM,
    Usage,
    read_trace,
)

pytestmark = pytest.mark.anyio


def code(src: str, lang: str = "repl") -> str:
    return f"Let me look.\n```{lang}\n{src}\n```"


def user_messages(lm: ScriptedLM) -> list[str]:
    return [m["content"] for m in lm.calls[-1] if m["role"] == "user"]


async def test_code_runs_and_final_var_returns_a_variable() -> None:
    root = ScriptedLM([code("n = context.count('x')\nprint(n)", "python"), "FINAL_VAR(n)"])
    result = await RLM(root).arun("How many x?", "x y x z x")
    assert result.answer == "3" and result.stopped_reason == "final" and result.iterations == 2
    assert "3" in user_messages(root)[-1]


async def test_final_inside_code_ends_the_run() -> None:
    root = ScriptedLM([code("hits = [w for w in context.split() if w == 'x']\nFINAL(f'{len(hits)} hits')")])
    result = await RLM(root).arun("How many x?", "x y x")
    assert result.answer == "2 hits" and result.iterations == 1


async def test_root_sees_metadata_never_the_context() -> None:
    secret = "NEEDLE-7f3a9c"
    context = "filler text. " * 20_000 + secret + " more filler." * 100
    root = ScriptedLM([code("print(len(context))"), "FINAL(done)"])
    await RLM(root).arun("Find the needle", context)
    every_message = json.dumps(root.calls)
    assert secret not in every_message
    first = user_messages(root)[0]
    assert f"{len(context):,} characters" in first and "filler text." in first
    assert "budget left: 30 turns" in first


async def test_long_output_is_truncated_with_a_notice() -> None:
    root = ScriptedLM([code("print('a' * 50_000)"), "FINAL(ok)"])
    await RLM(root, max_output_chars=1_000).arun("q", "ctx")
    observation = user_messages(root)[-1]
    assert "output truncated: showed 1,000 of 50,000 characters" in observation
    assert observation.count("a") < 1_200


async def test_final_before_looking_is_refused_then_accepted() -> None:
    root = ScriptedLM(["FINAL(1234)", code("print(context[:20])"), "FINAL(the real answer)"])
    result = await RLM(root).arun("q", "the real answer is here")
    assert result.answer == "the real answer" and result.iterations == 3
    assert any(isinstance(e, Notice) and "FINAL refused" in e.message for e in result.trace)
    assert "You have not run any code yet" in root.calls[1][-1]["content"]


async def test_final_in_the_same_reply_as_code_waits_for_its_output() -> None:
    root = ScriptedLM([code("print(6 * 7)") + "\nFINAL(41)", "FINAL(42)"])
    result = await RLM(root).arun("q", "ctx")
    assert result.answer == "42" and result.iterations == 2
    assert "Your FINAL was not accepted yet" in root.calls[1][-1]["content"]


async def test_final_var_of_a_missing_variable_is_an_observation() -> None:
    root = ScriptedLM([code("x = 1"), "FINAL_VAR(nope)", "FINAL_VAR(x)"])
    result = await RLM(root).arun("q", "ctx")
    assert result.answer == "1"
    assert "no variable named 'nope'" in root.calls[2][-1]["content"]


async def test_multi_document_context_has_names() -> None:
    root = ScriptedLM([code("FINAL(', '.join(f'{n}:{len(d)}' for n, d in zip(context_names, context)))")])
    result = await RLM(root).arun("q", ["aaa", "bb"])
    assert result.answer == "doc0:3, doc1:2"
    assert "a list of 2 documents" in user_messages(root)[0]


async def test_sub_calls_batched_in_order() -> None:
    sub = ScriptedLM(lambda messages: messages[-1]["content"].upper())
    root = ScriptedLM([code("out = llm_query_batched([f'item {i}' for i in range(5)])\nprint(out)"),
                       "FINAL_VAR(out)"])
    result = await RLM(root, sub).arun("q", "ctx")
    assert result.answer == str([f"ITEM {i}" for i in range(5)])
    assert result.sub_calls == 5
    subs = [e for e in result.trace if e.type == "lm_called" and e.role == "sub"]
    assert len(subs) == 5 and all(e.depth == 1 for e in subs)


async def test_max_iterations_gives_one_final_turn() -> None:
    replies = [code(f"print({i})") for i in range(3)] + ["FINAL(best guess)"]
    root = ScriptedLM(replies)
    result = await RLM(root, budget=Budget(max_iterations=3)).arun("q", "ctx")
    assert result.stopped_reason == "max_iterations" and result.answer == "best guess"
    assert "The max_iterations budget is used up" in root.calls[-1][-1]["content"]


async def test_max_sub_calls_stops_with_its_name() -> None:
    sub = ScriptedLM(lambda m: "ok")
    root = ScriptedLM([
        code("a = llm_query_batched(['p'] * 4)\nprint(len(a))"),
        code("try:\n    b = llm_query_batched(['p'] * 4)\nexcept RuntimeError as e:\n    print('ERR', e)"),
        "FINAL(partial)",
    ])
    result = await RLM(root, sub, budget=Budget(max_sub_calls=5)).arun("q", "ctx")
    assert result.stopped_reason == "max_sub_calls" and result.answer == "partial"
    assert result.sub_calls == 4
    outputs = [e.output for e in result.trace if isinstance(e, CodeExecuted)]
    assert "ERR sub-call budget exhausted: 4 sub-calls asked, 1 left of 5" in outputs[1]


async def test_max_tokens_stops_with_its_name() -> None:
    root = ScriptedLM([code("print('x' * 4000)"), code("print(1)"), "FINAL(tok)"])
    result = await RLM(root, budget=Budget(max_tokens=1500)).arun("q", "ctx")
    assert result.stopped_reason == "max_tokens" and result.answer == "tok"


async def test_max_cost_stops_with_its_name() -> None:
    root = ScriptedLM([code("print(1)"), code("print(2)"), "FINAL(cheap)"], cost_per_call=0.4)
    result = await RLM(root, budget=Budget(max_cost_usd=0.75)).arun("q", "ctx")
    assert result.stopped_reason == "max_cost_usd" and result.answer == "cheap"
    assert result.cost_usd == pytest.approx(1.2)


async def test_timeout_stops_with_its_name() -> None:
    root = ScriptedLM([code("import time\ntime.sleep(30)"), "FINAL(late)"])
    result = await RLM(root, budget=Budget(timeout_s=1.5)).arun("q", "ctx")
    assert result.stopped_reason == "timeout" and result.answer == "late"
    assert result.duration_s < 20


async def test_no_reply_without_code_or_final_is_nudged() -> None:
    root = ScriptedLM(["I think about it.", code("print(1)"), "FINAL(1)"])
    result = await RLM(root).arun("q", "ctx")
    assert result.answer == "1"
    assert "no ```repl code block" in root.calls[1][-1]["content"]


def _depth_aware_root(messages: list[dict[str, str]]) -> str:
    """Root model for recursion tests: the top run delegates, sub-runs answer from their context."""
    first_user = messages[1]["content"]
    replies = sum(1 for m in messages if m["role"] == "assistant")
    if first_user.startswith("Question: top"):
        if replies == 0:
            return code("r = rlm_query('sub task: reverse abc')\nprint(r)")
        return "FINAL_VAR(r)"
    if replies == 0:
        return code("FINAL(context.split()[-1][::-1])")
    raise AssertionError("unexpected call")


async def test_rlm_query_recurses_when_depth_allows() -> None:
    root = ScriptedLM(_depth_aware_root)
    result = await RLM(root, budget=Budget(max_depth=2)).arun("top question", "ctx")
    assert result.answer == "cba"
    starts = [e for e in result.trace if isinstance(e, RunStarted)]
    assert [s.depth for s in starts] == [0, 1] and starts[1].parent_run_id == starts[0].run_id


async def test_rlm_query_is_a_plain_sub_call_at_max_depth() -> None:
    sub = ScriptedLM(lambda m: "plain answer")
    root = ScriptedLM([code("r = rlm_query('anything')\nprint(r)"), "FINAL_VAR(r)"])
    result = await RLM(root, sub, budget=Budget(max_depth=1)).arun("top", "ctx")
    assert result.answer == "plain answer"
    assert [e.depth for e in result.trace if isinstance(e, RunStarted)] == [0]


async def test_trace_jsonl_is_written_and_readable(tmp_path: Path) -> None:
    root = ScriptedLM([code("print('hi')"), "FINAL(bye)"])
    path = tmp_path / "trace.jsonl"
    result = await RLM(root).arun("q", "ctx", trace_path=path)
    events = read_trace(path)
    assert [e.type for e in events] == [e.type for e in result.trace]
    assert events[-1].type == "run_finished" and events[-1].answer == "bye"
    code_events = [e for e in events if isinstance(e, CodeExecuted)]
    assert code_events[0].output == "hi\n"


async def test_astream_yields_events_in_order() -> None:
    root = ScriptedLM([code("print(1)"), "FINAL(1)"])
    types = [e.type async for e in RLM(root).astream("q", "ctx")]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.index("code_executed") > types.index("lm_called")


def test_stream_yields_the_events_then_gives_the_result() -> None:
    root = ScriptedLM([code("print(1)"), "FINAL(1)"])
    with RLM(root).stream("q", "ctx") as run:
        types = [e.type for e in run]
        result = run.result()
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.index("code_executed") > types.index("lm_called")
    assert result.answer == "1" and [e.type for e in result.trace] == types


def test_stream_result_raises_the_error_that_ended_the_run() -> None:
    root = ScriptedLM([code("print(1)"), LMError("endpoint exploded")])
    run = RLM(root).stream("q", "ctx")
    events = list(run)
    assert isinstance(events[-1], RunFinished) and events[-1].stopped_reason == "error"
    with pytest.raises(LMError, match="endpoint exploded") as info:
        run.result()
    assert info.value.result.stopped_reason == "error" and info.value.result.trace[-1] is events[-1]


def _new_processes(before: set[int], within: float = 5.0) -> set[int]:
    deadline = time.monotonic() + within
    while (new := set(descendants(os.getpid())) - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    return new


def test_leaving_a_stream_early_cancels_the_run_and_stops_its_worker() -> None:
    before = set(descendants(os.getpid()))
    root = ScriptedLM([code("import time\ntime.sleep(60)"), "FINAL(never)"])
    started = time.monotonic()
    with RLM(root).stream("q", "ctx") as run:
        for event in run:
            if event.type == "lm_called":
                break  # the code is about to sleep in the REPL
        time.sleep(1.0)
        assert set(descendants(os.getpid())) - before, "the run's worker should be running"
    assert time.monotonic() - started < 20
    assert not _new_processes(before)
    with pytest.raises(RuntimeError, match="closed before its run ended"):
        run.result()


def test_run_takes_on_event_like_arun() -> None:
    seen: list[str] = []
    result = RLM(ScriptedLM([code("print(1)"), "FINAL(1)"])).run("q", "ctx", on_event=lambda e: seen.append(e.type))
    assert seen == [e.type for e in result.trace] and seen[-1] == "run_finished"


def test_result_fields_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Result("a", "final", 1, 0, Usage(), 0.0, 0.1, "r")  # type: ignore[misc]
    result = Result(answer="a", stopped_reason="final", iterations=1, sub_calls=0, usage=Usage(), cost_usd=0.0,
                    duration_s=0.1, run_id="r")
    assert result.to_dict()["answer"] == "a" and result.trace == [] and result.grounded is None


async def test_root_model_error_raises_with_partial_trace() -> None:
    root = ScriptedLM([code("print(1)"), LMError("endpoint exploded")])
    with pytest.raises(LMError, match="endpoint exploded") as info:
        await RLM(root).arun("q", "ctx")
    partial = info.value.result
    assert partial.stopped_reason == "error" and any(isinstance(e, CodeExecuted) for e in partial.trace)
    assert isinstance(partial.trace[-1], RunFinished)


async def test_session_keeps_variables_between_questions() -> None:
    root = ScriptedLM([code("total = len(context)\nprint(total)"), "FINAL_VAR(total)",
                       code("print(total * 2)"), "FINAL(doubled)"])
    async with RLM(root).session("abcd") as session:
        first = await session.ask("how long?")
        second = await session.ask("twice that?")
    assert first.answer == "4" and second.answer == "doubled"
    assert "8" in root.calls[-1][-1]["content"]


async def test_session_ask_reports_events_like_arun() -> None:
    root = ScriptedLM([code("print(len(context))"), "FINAL(4)"])
    seen: list = []
    async with RLM(root).session("abcd") as session:
        result = await session.ask("how long?", on_event=seen.append)
    assert seen == result.trace and isinstance(seen[0], RunStarted) and isinstance(seen[-1], RunFinished)


def test_run_works_inside_a_running_event_loop() -> None:
    async def inside() -> str | None:
        root = ScriptedLM([code("print(2)"), "FINAL(2)"])
        return RLM(root).run("q", "ctx").answer

    assert asyncio.run(inside()) == "2"


async def test_repeated_code_is_not_rerun_and_the_model_is_asked_to_answer() -> None:
    block = code("print(context.upper())")
    root = ScriptedLM([block, block, "FINAL(ABC)"])
    result = await RLM(root).arun("Shout it", "abc")
    assert result.answer == "ABC" and result.iterations == 3
    assert sum(isinstance(e, CodeExecuted) for e in result.trace) == 1
    assert "You already ran exactly this code" in root.calls[2][-1]["content"]
    assert "Question: Shout it" in root.calls[2][-1]["content"]


async def test_compact_history_recaps_code_and_output_in_one_message() -> None:
    root = ScriptedLM([code("print(context[:5])"), code("print(len(context))"), "FINAL(11)"])
    rlm = RLM(root, history="compact")
    result = await rlm.arun("How long?", "hello world")
    assert result.answer == "11"
    third = root.calls[2]
    assert [m["role"] for m in third] == ["system", "user"]
    recap = third[1]["content"]
    assert recap.count("You ran this code:") == 2 and "print(context[:5])" in recap and "hello" in recap
    assert "11" in recap and "Question: How long?" in recap


def test_small_window_models_get_compact_history() -> None:
    class Small(ScriptedLM):
        context_chars = 20_000

    assert RLM(Small([])).history == "compact" and RLM(ScriptedLM([])).history == "full"
    with pytest.raises(ValueError, match="history"):
        RLM(ScriptedLM([]), history="sometimes")


async def test_final_turn_runs_a_final_written_in_code_instead_of_returning_the_raw_reply() -> None:
    root = ScriptedLM([code("best = context[::-1]"), code("FINAL_VAR('best')")])
    result = await RLM(root, budget=Budget(max_iterations=1)).arun("q", "abc")
    assert result.stopped_reason == "max_iterations" and result.answer == "cba"


async def test_final_turn_without_final_returns_the_text_not_the_code() -> None:
    root = ScriptedLM([code("x = 1"), "I think it is 7.\n```repl\nprint(x)\n```"])
    result = await RLM(root, budget=Budget(max_iterations=1)).arun("q", "abc")
    assert result.answer == "I think it is 7."

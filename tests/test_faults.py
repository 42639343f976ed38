"""Faults at the model edge, measured end to end (issue 12, section 3; the README's fault table).

The real loop (``RLM`` with ``OpenAIChat``) and the real CLI (``recursa ask --json`` as a subprocess) run
against tests/fake_openai.py, a real HTTP server that misbehaves on cue. Every fault must end as a retried
call or as a named ``stopped_reason`` / ``RecursaError``, never a traceback; budgets hold; the trace keeps
every step up to the fault; ``--json`` prints exactly one JSON object, on failure too.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fake_openai import FakeOpenAIServer, Reply
from processes import child_env
from recursa import RLM, Budget, OpenAIChat, Result
from recursa._exceptions import LMError, LMResponseError, LMTimeoutError, RecursaError

CONTEXT = "order 1: alice bought 3 apples\norder 2: bob bought 5 pears\n"
LOOK = "Let me look.\n```repl\nprint(context[:40])\n```"
ANSWER = "FINAL(bob)"


class Model:
    """The scripted root and sub model behind the fake server, with faults injected by request number.

    The root looks at the context once, then answers; the sub model answers ``ans-<prompt>``. ``faults``
    maps a root request number (0 = first request, retries count) to the reply that replaces it;
    ``sub_faults`` maps a sub-call prompt to a list of replies it gets before its normal answer.
    """

    def __init__(
        self,
        faults: dict[int, Reply] | None = None,
        *,
        root: list[str] | None = None,
        sub_faults: dict[str, list[Reply]] | None = None,
    ) -> None:
        self.faults = dict(faults or {})
        self.root = root or [LOOK, ANSWER]
        self.sub_faults = {k: list(v) for k, v in (sub_faults or {}).items()}
        self.root_requests = 0
        self._lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> Reply:
        messages = request["messages"]
        with self._lock:
            if request["model"] == "sub-model":
                prompt = messages[-1]["content"]
                pending = self.sub_faults.get(prompt)
                return pending.pop(0) if pending else f"ans-{prompt}"
            number, self.root_requests = self.root_requests, self.root_requests + 1
        if number in self.faults:
            return self.faults[number]
        turn = sum(1 for m in messages if m["role"] == "assistant")
        return self.root[min(turn, len(self.root) - 1)]


def chat(server: FakeOpenAIServer, model: str = "root-model", **kwargs: Any) -> OpenAIChat:
    """A client with test-sized backoff: retries cost milliseconds, not seconds."""
    kwargs.setdefault("backoff_s", 0.001)
    kwargs.setdefault("max_backoff_s", 0.05)
    return OpenAIChat(model, base_url=server.base_url, api_key="sk-test", **kwargs)


def run(server: FakeOpenAIServer, budget: Budget | None = None, **client: Any) -> Result:
    rlm = RLM(chat(server, **client), chat(server, "sub-model", **client), budget=budget or Budget())
    return rlm.run("Who bought pears?", CONTEXT)


def run_failing(server: FakeOpenAIServer, error: type[RecursaError] = LMError, **client: Any) -> tuple[str, Result]:
    """Run, expecting ``error``; return its message and the partial result it carries."""
    with pytest.raises(error) as caught:
        run(server, **client)
    result = caught.value.result  # type: ignore[attr-defined]
    assert isinstance(result, Result) and result.stopped_reason == "error" and result.error == str(caught.value)
    return str(caught.value), result


def events(result: Result, kind: str, **match: Any) -> list[dict[str, Any]]:
    found = [e.to_dict() for e in result.trace]
    return [e for e in found if e["type"] == kind and all(e.get(k) == v for k, v in match.items())]


def assert_trace_ends_cleanly(result: Result) -> None:
    kinds = [e.to_dict()["type"] for e in result.trace]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished" and kinds.count("run_finished") == 1


def assert_kept_first_turn(result: Result) -> None:
    """A fault at the second root request must leave the first turn, code and output, in the trace."""
    (looked,) = events(result, "code_executed")
    assert "order 1: alice" in looked["output"]
    assert events(result, "lm_called", role="root")[0]["response"] == LOOK


# -- retried: rate limits, server errors, lost connections --------------------------------------------------------


def test_429_storm_without_retry_after_is_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    model = Model({0: {"status": 429}, 1: {"status": 429}, 2: {"status": 429}})
    with FakeOpenAIServer(model) as server, caplog.at_level(logging.INFO, logger="recursa.retries"):
        result = run(server)
    assert result.answer == "bob" and result.stopped_reason == "final"
    assert model.root_requests == 5  # 3 refused + 2 turns
    notices = [r.getMessage() for r in caplog.records if r.name == "recursa.retries"]
    assert [n.split(", retry ")[1].split(" in ")[0] for n in notices] == ["1/4", "2/4", "3/4"]
    assert all("HTTP 429" in n for n in notices)
    assert not any(e["error"] for e in events(result, "lm_called"))  # retries are the client's business


def test_429_storm_with_retry_after_waits_as_told_within_the_cap() -> None:
    told = {"status": 429, "headers": {"Retry-After": "0.25"}}
    with FakeOpenAIServer(Model({0: told, 1: told})) as server:
        started = time.monotonic()
        result = run(server, max_backoff_s=5)
        assert time.monotonic() - started >= 0.5
    assert result.stopped_reason == "final"
    hour = {"status": 429, "headers": {"retry-after": "3600"}}
    with FakeOpenAIServer(Model({0: hour})) as server:
        started = time.monotonic()
        assert run(server, max_backoff_s=0.05).stopped_reason == "final"
        assert time.monotonic() - started < 10  # a confused header cannot stall the run


def test_429_storm_longer_than_the_retries_stops_with_a_named_error() -> None:
    storm = {i: {"status": 429, "error": "slow down"} for i in range(1, 50)}
    with FakeOpenAIServer(Model(storm)) as server:
        message, result = run_failing(server, max_retries=2)
    assert "rate-limited model 'root-model' (HTTP 429, after 3 attempts): slow down" in message
    assert "lower the concurrency" in message
    assert_trace_ends_cleanly(result)
    assert_kept_first_turn(result)
    (failed,) = events(result, "lm_called", error=message)
    assert failed["role"] == "root" and failed["response"] == ""


def test_quota_429_is_not_retried() -> None:
    quota = {"status": 429, "error": "You exceeded your current quota", "code": "insufficient_quota"}
    model = Model({0: quota})
    with FakeOpenAIServer(model) as server:
        message, result = run_failing(server)
    assert model.root_requests == 1 and "billing" in message
    assert_trace_ends_cleanly(result)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_once_is_retried(status: int) -> None:
    model = Model({1: {"status": status, "error": "upstream trouble"}})
    with FakeOpenAIServer(model) as server:
        result = run(server)
    assert result.stopped_reason == "final" and result.answer == "bob" and model.root_requests == 3


def test_5xx_that_persists_stops_with_a_named_error_and_keeps_the_trace() -> None:
    down = {i: {"status": 503, "error": "maintenance"} for i in range(1, 50)}
    with FakeOpenAIServer(Model(down)) as server:
        message, result = run_failing(server, max_retries=3)
    assert "failed on model 'root-model' with HTTP 503 (after 4 attempts): maintenance" in message
    assert result.iterations == 2
    assert_trace_ends_cleanly(result)
    assert_kept_first_turn(result)


@pytest.mark.parametrize(
    "fault",
    [{"cut_after": 40}, {"cut_after": 40, "reset": True}, {"drop": True}, {"drop": True, "reset": True}],
    ids=["cut-mid-body", "reset-mid-body", "closed-before-reply", "reset-before-reply"],
)
def test_connection_lost_mid_reply_is_retried(fault: dict[str, Any]) -> None:
    model = Model({1: {"text": ANSWER, **fault}})
    with FakeOpenAIServer(model) as server:
        result = run(server)
    assert result.stopped_reason == "final" and result.answer == "bob"
    assert model.root_requests == 3


def test_timeout_once_is_retried_and_a_dead_server_is_a_timeout_error() -> None:
    model = Model({0: {"text": LOOK, "delay": 2.0}})
    with FakeOpenAIServer(model) as server:
        assert run(server, timeout_s=0.3).stopped_reason == "final"
    assert model.root_requests == 3
    slow = Model({i: {"text": ANSWER, "delay": 2.0} for i in range(1, 50)})
    with FakeOpenAIServer(slow) as server:
        started = time.monotonic()
        message, result = run_failing(server, LMTimeoutError, timeout_s=0.3, max_retries=1)
        elapsed = time.monotonic() - started
    assert "did not answer within 0.3s (after 2 attempts)" in message
    assert elapsed < 5  # two 0.3 s attempts and the run around them, not the server's 2 s replies
    assert_trace_ends_cleanly(result)
    assert_kept_first_turn(result)


# -- not retried: replies that are not chat completions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ({"raw": '{"id": "chatcmpl-1", "object": "chat.completion", "choi'}, "not valid JSON"),
        ({"raw": "<html><body>502 Bad Gateway</body></html>", "content_type": "text/html"}, "not a chat completion"),
        ({"raw": ""}, "not valid JSON"),
        ({"raw": "", "content_type": "text/plain"}, "not a chat completion"),
        ({"json": {"choices": {"0": "x"}}}, "no choices"),
        ({"json": {"error": {"message": "backend exploded"}}}, "no choices: backend exploded"),
        ({"json": {"choices": [{"message": {"content": 7}}]}}, "without text content"),
        ({"text": None, "finish_reason": "length"}, "raise max_tokens"),
    ],
    ids=["truncated-json", "html", "empty-body", "empty-text-body", "choices-not-a-list", "error-in-200",
         "content-not-text", "null-content"],
)
def test_garbage_reply_stops_with_a_response_error_and_keeps_the_trace(fault: dict[str, Any], said: str) -> None:
    model = Model({1: fault})
    with FakeOpenAIServer(model) as server:
        message, result = run_failing(server, LMResponseError)
    assert said in message and "model 'root-model' at" in message
    assert model.root_requests == 2  # retrying cannot fix a server that speaks another protocol
    assert_trace_ends_cleanly(result)
    assert_kept_first_turn(result)


# -- answered, but not well: budgets and the last turn ------------------------------------------------------------


def test_empty_replies_end_at_the_iteration_budget() -> None:
    model = Model(root=[""])
    with FakeOpenAIServer(model) as server:
        result = run(server, Budget(max_iterations=3))
    assert result.stopped_reason == "max_iterations" and result.answer is None and result.iterations == 3
    assert model.root_requests == 4  # 3 turns and the one last turn
    assert_trace_ends_cleanly(result)


def test_a_model_that_never_writes_final_gets_one_last_turn() -> None:
    model = Model(root=["Still looking.\n```repl\nprint(len(context))\n```"])
    with FakeOpenAIServer(model) as server:
        result = run(server, Budget(max_iterations=4))
    assert result.stopped_reason == "max_iterations" and result.iterations == 4
    assert result.answer == "Still looking."  # its words from the last turn: a best guess, named as such
    assert model.root_requests == 5
    assert_trace_ends_cleanly(result)


def test_a_reply_of_megabytes_is_kept_and_the_token_budget_stops_the_run() -> None:
    flood = "word " * 400_000  # 2 MB, 400,000 tokens by the fake server's count
    model = Model({0: flood})
    with FakeOpenAIServer(model) as server:
        result = run(server, Budget(max_tokens=50_000))
    assert result.stopped_reason == "max_tokens"
    assert result.answer == "bob"  # the one last turn answered from what it had
    assert model.root_requests == 2
    first = events(result, "lm_called", role="root")[0]
    assert len(first["response"]) == len(flood) and first["output_tokens"] == 400_000
    assert_trace_ends_cleanly(result)


BATCH = (
    '```repl\ntry:\n    print(llm_query_batched(["a", "bad", "c"]))\n'
    'except Exception as exc:\n    print("ERR", exc)\n```'
)


def test_a_sub_call_failing_for_one_prompt_of_a_batch_is_an_error_the_code_sees() -> None:
    refused = {"status": 400, "error": "content policy", "delay": 0.3}  # after the other two have answered
    model = Model(root=[BATCH, ANSWER], sub_faults={"bad": [refused]})
    with FakeOpenAIServer(model) as server:
        result = run(server)
    assert result.stopped_reason == "final" and result.answer == "bob" and result.sub_calls == 3
    (step,) = events(result, "code_executed")
    assert step["output"].startswith("ERR sub-call failed:") and "HTTP 400): content policy" in step["output"]
    subs = events(result, "lm_called", role="sub")
    assert sorted(e["response"] for e in subs) == ["", "ans-a", "ans-c"]  # the others' answers stay in the trace
    assert [e["error"] for e in subs if e["error"]] == [step["output"][len("ERR sub-call failed: "):].strip()]


def test_sub_calls_cancelled_by_a_failing_sibling_stay_in_the_trace() -> None:
    model = Model(root=[BATCH, ANSWER], sub_faults={"bad": [{"status": 400, "error": "content policy"}],
                                                    "c": [{"text": "ans-c", "delay": 2.0}]})
    with FakeOpenAIServer(model) as server:
        started = time.monotonic()
        result = run(server)
        assert time.monotonic() - started < 1.8  # the slow sibling was cancelled, not waited for
        assert server.requests_per_model["sub-model"] == 3
    assert len(events(result, "lm_called", role="sub")) == 3


def test_a_sub_call_hitting_a_5xx_for_one_prompt_is_retried() -> None:
    model = Model(root=[BATCH, ANSWER], sub_faults={"bad": [{"status": 503}, {"status": 500}]})
    with FakeOpenAIServer(model) as server:
        result = run(server)
    (step,) = events(result, "code_executed")
    assert step["output"].strip() == "['ans-a', 'ans-bad', 'ans-c']"
    assert result.stopped_reason == "final"


def test_the_time_budget_bounds_a_slow_model_call() -> None:
    model = Model(root=[{"text": LOOK, "delay": 3.0}, ANSWER])  # type: ignore[list-item]
    with FakeOpenAIServer(model) as server:
        started = time.monotonic()
        result = run(server, Budget(timeout_s=1.0))
        elapsed = time.monotonic() - started
    assert result.stopped_reason == "timeout"
    assert elapsed < 2.5


# -- the CLI: one JSON object, a named reason, an exit code, never a traceback ------------------------------------

HURRY = {"Retry-After": "0.01"}  # the subprocess uses the default backoff; the server asks for a short wait


def recursa_json(server: FakeOpenAIServer, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    (tmp_path / "orders.txt").write_text(CONTEXT)
    base = child_env()
    proc = subprocess.run(
        [sys.executable, "-m", "recursa.cli", "ask", "Who bought pears?", "--context", str(tmp_path / "orders.txt"),
         "--model", "root-model", "--sub-model", "sub-model", "--base-url", server.base_url, "--api-key", "sk-test",
         "--json", "--trace", str(tmp_path / "trace.jsonl"), *args],
        capture_output=True, text=True, timeout=120, env=base,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.count("\n") == 1, proc.stdout[:2000]  # exactly one line of output: one JSON object
    out = json.loads(proc.stdout)
    assert isinstance(out, dict) and {"answer", "stopped_reason", "iterations", "usage", "error"} <= set(out)
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert trace[0]["type"] == "run_started" and trace[-1]["type"] == "run_finished"
    assert trace[-1]["stopped_reason"] == out["stopped_reason"]
    return proc, out


@pytest.mark.parametrize(
    ("faults", "root", "args", "reason", "retries"),
    [
        ({0: {"status": 429, "headers": HURRY}, 1: {"status": 429, "headers": HURRY}}, None, (), "final", 2),
        ({1: {"status": 502, "headers": HURRY}}, None, (), "final", 1),
        ({0: {"text": LOOK, "cut_after": 30, "reset": True}}, None, (), "final", 1),
        ({}, [""], ("--max-iterations", "2"), "max_iterations", 0),
        ({}, ["Still looking.\n```repl\nprint(len(context))\n```"], ("--max-iterations", "2"), "max_iterations", 0),
        ({0: "word " * 400_000}, None, ("--max-tokens", "50000"), "max_tokens", 0),
    ],
    ids=["429-storm", "502", "reset-mid-body", "empty-replies", "never-final", "megabyte-reply"],
)
def test_cli_ends_each_recoverable_fault_with_one_json_object(
    tmp_path: Path, faults: dict[int, Reply], root: list[str] | None, args: tuple[str, ...], reason: str, retries: int
) -> None:
    with FakeOpenAIServer(Model(faults, root=root)) as server:
        proc, out = recursa_json(server, tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert out["stopped_reason"] == reason and out["error"] is None
    assert sum("retry" in line for line in proc.stderr.splitlines()) == retries, proc.stderr


@pytest.mark.parametrize(
    ("faults", "said"),
    [
        ({i: {"status": 500, "error": "boom", "headers": HURRY} for i in range(1, 50)}, "HTTP 500 (after 5 attempts)"),
        ({1: {"raw": '{"choices": [{"mess'}}, "not valid JSON"),
        ({1: {"status": 401, "error": "bad key"}}, "refused the credentials"),
    ],
    ids=["5xx-storm", "truncated-json", "401"],
)
def test_cli_ends_each_fatal_fault_with_one_json_object_and_exit_1(
    tmp_path: Path, faults: dict[int, Reply], said: str
) -> None:
    with FakeOpenAIServer(Model(faults)) as server:
        proc, out = recursa_json(server, tmp_path)
    assert proc.returncode == 1
    assert out["stopped_reason"] == "error" and said in out["error"] and out["answer"] is None
    assert out["iterations"] == 2 and out["usage"]["total_tokens"] > 0  # what was spent before the fault
    errors = [line for line in proc.stderr.splitlines() if line.startswith("recursa: error:")]
    assert len(errors) == 1 and said in errors[0]
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert any(e["type"] == "code_executed" and "order 1: alice" in e["output"] for e in trace)


def test_cli_json_on_an_error_before_the_run_is_still_one_object(tmp_path: Path) -> None:
    base = child_env()
    proc = subprocess.run(
        [sys.executable, "-m", "recursa.cli", "ask", "q", "--context", str(tmp_path / "missing.txt"), "--json"],
        capture_output=True, text=True, timeout=60, env=base,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert out["stopped_reason"] == "error" and "missing.txt" in out["error"] and out["iterations"] == 0


def test_cli_ctrl_c_during_a_model_call_is_one_json_object_and_exit_130(tmp_path: Path) -> None:
    (tmp_path / "orders.txt").write_text(CONTEXT)
    base = child_env()
    with FakeOpenAIServer(lambda request: {"text": ANSWER, "delay": 30}) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recursa.cli", "ask", "q", "--context", str(tmp_path / "orders.txt"), "--model", "m",
             "--base-url", server.base_url, "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=base,
            # As at a terminal: a shell starts background jobs (CI under nohup ... &) with SIGINT ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 60
        while server.in_flight == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert stdout.count("\n") == 1 and json.loads(stdout)["stopped_reason"] == "cancelled"

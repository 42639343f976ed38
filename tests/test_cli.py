"""`recursa ask` as a user runs it: a subprocess against a fake OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_openai import FakeOpenAIServer, closed_port_url
from processes import child_env

ROOT_CODE = '''I will filter the error lines first.
```repl
import re
hits = re.findall(r"^.*level=ERROR.*$", context, re.MULTILINE)
print(len(hits), "error lines")
users = llm_query_batched([f"Which user is in this line? {h}" for h in hits])
counts = {}
for u in users:
    counts[u] = counts.get(u, 0) + 1
top = max(sorted(counts), key=counts.get)
summary = f"{top} with {counts[top]} errors"
print(summary)
```'''


def script(request: dict[str, Any]) -> str:
    """Root model: filter with a regex, map sub-calls over the hits, return FINAL_VAR. Sub model: read a line."""
    messages = request["messages"]
    if request["model"] == "sub-model":
        line = messages[-1]["content"]
        return line.split("user=")[1].split()[0]
    answered = sum(1 for m in messages if m["role"] == "assistant")
    return ROOT_CODE if answered == 0 else "FINAL_VAR(summary)"


def make_log(path: Path, size: int = 5_200_000) -> str:
    """A log of at least ``size`` bytes where user u7 has the most ERROR lines."""
    rng = random.Random(1)
    lines = []
    total = 0
    errors = {"u3": 4, "u7": 9, "u11": 2}
    pending = [u for u, n in errors.items() for _ in range(n)]
    rng.shuffle(pending)
    i = 0
    while total < size or pending:
        if pending and i % 5000 == 0:
            line = f"2026-11-01T10:{i % 60:02d}:00 level=ERROR user={pending.pop()} msg=payment failed"
        else:
            line = f"2026-11-01T10:{i % 60:02d}:00 level=INFO user=u{rng.randint(1, 40)} msg=page view {i}"
        lines.append(line)
        total += len(line) + 1
        i += 1
    path.write_text("\n".join(lines) + "\n")
    return "u7 with 9 errors"


def recursa(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    base = child_env()
    return subprocess.run(
        [sys.executable, "-m", "recursa.cli", *args], capture_output=True, text=True, timeout=300,
        env={**base, **(env or {})}, input=stdin,
    )


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(responder=script, models={"root-model", "sub-model"}) as srv:
        yield srv


def test_ask_over_a_5mb_log_end_to_end(server: FakeOpenAIServer, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    expected = make_log(log)
    assert log.stat().st_size >= 5_000_000
    trace = tmp_path / "trace.jsonl"
    proc = recursa(
        "ask", "Which user has the most ERROR lines?", "--context", str(log), "--model", "root-model",
        "--sub-model", "sub-model", "--base-url", server.base_url, "--api-key", "sk-test", "--json",
        "--trace", str(trace),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["answer"] == expected
    assert out["stopped_reason"] == "final" and out["iterations"] == 2 and out["sub_calls"] == 15
    assert out["usage"]["total_tokens"] > 0 and set(out) >= {"answer", "cost_usd", "usage"}
    assert server.requests_per_model["sub-model"] == 15
    root_requests = [b for b in server.bodies if b["model"] == "root-model"]
    assert all(len(json.dumps(b)) < 50_000 for b in root_requests), "the context must not reach the root model"
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    assert sum(e["type"] == "lm_called" and e["role"] == "sub" for e in events) == 15


def test_ask_plain_output_and_env_defaults(server: FakeOpenAIServer, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    expected = make_log(log, size=50_000)
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test", "RECURSA_MODEL": "root-model",
           "RECURSA_SUB_MODEL": "sub-model"}
    proc = recursa("ask", "Which user has the most ERROR lines?", "--context", "-", env=env, stdin=log.read_text())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def _assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("recursa: error:")]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    proc = recursa("ask", "q", "--context", str(tmp_path / "nope.txt"), "--base-url", "http://127.0.0.1:9/v1")
    _assert_one_line_error(proc, "not found", "nope.txt")


def test_empty_context_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    proc = recursa("ask", "q", "--context", str(tmp_path / "empty.txt"), "--base-url", "http://127.0.0.1:9/v1")
    _assert_one_line_error(proc, "empty")


def test_binary_file_is_skipped_and_alone_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 10)
    proc = recursa("ask", "q", "--context", str(tmp_path / "blob.bin"), "--base-url", "http://127.0.0.1:9/v1")
    _assert_one_line_error(proc, "empty", "binary")
    assert "blob.bin" in proc.stderr


def test_unknown_model_is_a_clear_error(server: FakeOpenAIServer, tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("some text")
    proc = recursa("ask", "q", "--context", str(tmp_path / "c.txt"), "--model", "no-such-model",
                   "--base-url", server.base_url, "--api-key", "sk-test")
    _assert_one_line_error(proc, "no-such-model")


def test_malformed_server_reply_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("some text")
    with FakeOpenAIServer(responder=lambda r: {"raw": "this is not json", "content_type": "text/plain"}) as srv:
        proc = recursa("ask", "q", "--context", str(tmp_path / "c.txt"), "--model", "m", "--base-url", srv.base_url,
                       "--api-key", "sk-test")
    _assert_one_line_error(proc)


def test_server_down_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("some text")
    url = closed_port_url()
    proc = recursa("ask", "q", "--context", str(tmp_path / "c.txt"), "--model", "m", "--base-url", url,
                   "--api-key", "sk-test")
    _assert_one_line_error(proc, "127.0.0.1")


# -- issue 11: a named model never silently becomes another one --------------------------------------------------


def test_named_hosted_model_without_endpoint_is_an_error_not_the_local_model(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("some text")
    proc = recursa("ask", "q", "--context", str(tmp_path / "c.txt"), "--model", "gpt-5-mini")
    _assert_one_line_error(proc, "'gpt-5-mini'", "OPENAI_API_KEY", "--base-url", "--model local")
    assert "embedded local model (Qwen" not in proc.stderr  # it did not fall back


def test_model_named_in_env_without_endpoint_is_the_same_error(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("some text")
    proc = recursa("ask", "q", "--context", str(tmp_path / "c.txt"), env={"RECURSA_MODEL": "gpt-5-mini"})
    _assert_one_line_error(proc, "'gpt-5-mini'", "OPENAI_API_KEY", "--model local")


def test_make_models_local_only_when_nothing_is_named(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from recursa import _defaults
    from recursa._exceptions import LMError
    from recursa._local import LocalLlama
    from recursa.cli import make_models

    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RECURSA_MODEL", "RECURSA_SUB_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_defaults, "_announced", False)
    root, sub = make_models(None, None, None, None)  # nothing named, no endpoint: the embedded model, said so
    assert isinstance(root, LocalLlama) and sub is root
    assert "embedded local model" in capsys.readouterr().err
    root, sub = make_models("local", "local", None, None)
    assert isinstance(root, LocalLlama) and sub is root
    with pytest.raises(LMError, match="'gpt-5-nano' cannot be reached"):
        make_models(None, "gpt-5-nano", None, None)  # a named sub-model is held to the same rule
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    root, sub = make_models("gpt-5-mini", "local", None, None)
    assert root.model == "gpt-5-mini" and isinstance(sub, LocalLlama)


# -- issue 11: endpoint mistakes fail at once, retries are announced ---------------------------------------------


def test_base_url_without_scheme_fails_at_once(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("some text")
    proc = recursa("ask", "q", "--context", str(tmp_path / "c.txt"), "--model", "m",
                   "--base-url", "localhost:8000/v1")
    _assert_one_line_error(proc, "'localhost:8000/v1'", "'http://localhost:8000/v1'")
    assert "retry" not in proc.stderr


def test_unresolvable_host_fails_at_once(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("some text")
    proc = recursa("ask", "q", "--context", str(tmp_path / "c.txt"), "--model", "m",
                   "--base-url", "http://no-such-host.invalid/v1", "--json")
    _assert_one_line_error(proc, "could not resolve", "no-such-host.invalid")
    assert "retry" not in proc.stderr
    assert json.loads(proc.stdout)["stopped_reason"] == "error"


def test_retries_are_announced_on_stderr(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    expected = make_log(log, size=20_000)
    busy = {"status": 503, "error": "overloaded", "headers": {"Retry-After": "0.01"}}
    first = [True]

    def flaky(request: dict[str, Any]) -> Any:
        if request["model"] == "root-model" and first[0]:
            first[0] = False
            return busy
        return script(request)

    with FakeOpenAIServer(responder=flaky) as srv:
        proc = recursa("ask", "Which user has the most ERROR lines?", "--context", str(log), "--model", "root-model",
                       "--sub-model", "sub-model", "--base-url", srv.base_url, "--api-key", "sk-test")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected
    notices = [line for line in proc.stderr.splitlines() if "retry" in line]
    assert notices == [f"recursa: root-model: HTTP 503 from {srv.base_url}, retry 1/4 in 0.0s"]


# -- issue 11: demo leaves nothing behind; help shows sensible placeholders ---------------------------------------


def _demo(tmp_path: Path, server: FakeOpenAIServer, *extra: str) -> subprocess.CompletedProcess:
    base = child_env()
    return subprocess.run(
        [sys.executable, "-m", "recursa.cli", "demo", "--chars", "3000", "--seed", "1", "--model", "m",
         "--base-url", server.base_url, "--api-key", "sk-test", *extra],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=base,
    )


def test_demo_writes_no_trace_unless_asked(tmp_path: Path) -> None:
    with FakeOpenAIServer(responder=lambda request: "```repl\nFINAL('not it')\n```") as srv:
        proc = _demo(tmp_path, srv)
        assert proc.returncode == 0, proc.stderr
        assert list(tmp_path.iterdir()) == []
        assert "trace:" not in proc.stdout
        proc = _demo(tmp_path, srv, "--trace", "t.jsonl")
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["t.jsonl"]
    assert "trace:    t.jsonl" in proc.stdout


def test_help_shows_no_type_placeholders() -> None:
    from recursa.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    for args in (["--help"], ["ask", "--help"], ["demo", "--help"], ["mcp", "--help"]):
        out = runner.invoke(app, args, terminal_width=120).output
        assert "<bool>" not in out and "<list[str]>" not in out and "<str>" not in out.split("Options:")[1], out
    out = runner.invoke(app, ["ask", "--help"], terminal_width=120).output
    lines = {line.split()[0] if not line.strip().startswith("-c") else "--context": line.strip()
             for line in out.splitlines() if line.strip().startswith("-")}
    assert lines["--context"].startswith("-c, --context PATH ")
    assert lines["--include"].startswith("--include GLOB ") and lines["--trace"].startswith("--trace PATH ")
    assert lines["--json"].split()[1] == "Print"  # a flag takes no value


# -- issue 15: start-up loads what the command needs --------------------------------------------------------------

_HEAVY = ("rich", "recursa.bench.runner", "recursa.bench.report", "openai", "langchain_core", "langgraph",
          "llama_index", "mcp", "starlette", "uvicorn", "matplotlib", "llama_cpp")


@pytest.mark.parametrize("args", [["--help"], ["ask", "--help"], ["bench", "--help"]])
def test_help_imports_no_bench_runner_rich_or_framework(args: list[str]) -> None:
    """``recursa --help`` and ``recursa ask`` start fast: the benchmark runner (and rich with it), the openai SDK
    and the framework extras are imported only by the commands that use them."""
    script = ("import sys\nfrom recursa.cli import main\nsys.argv = ['recursa', *sys.argv[1:]]\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\n"
              f"print(' '.join(m for m in {_HEAVY!r} if m in sys.modules) or 'none', file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60,
                          env=child_env())
    assert "Usage:" in proc.stdout, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "none"



def test_a_missing_local_extra_is_an_install_hint_not_a_bug_report(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from recursa.cli import app
    from typer.testing import CliRunner

    (tmp_path / "c.txt").write_text("some text")
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RECURSA_MODEL", "RECURSA_SUB_MODEL"):
        monkeypatch.delenv(name, raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    out = CliRunner().invoke(app, ["ask", "q", "--context", str(tmp_path / "c.txt")])
    assert out.exit_code == 1
    assert "pip install" in out.output and "recursa[local]" in out.output and "bug" not in out.output

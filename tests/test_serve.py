"""`recursa serve` as clients use it: the real CLI and uvicorn on 127.0.0.1, driven by the official `openai`
client, LangChain's `ChatOpenAI`, httpx and a raw socket, with `FakeOpenAIServer` as the upstream model.

The fake upstream answers for two models: ``root-model`` follows a script chosen by a tag in the question,
``sub-model`` answers ``llm_query`` calls. Every body it received is kept, so tests can prove what the root
model was (and was not) shown.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_openai import FakeOpenAIServer, scripted

pytest.importorskip("starlette", reason="pip install 'recursa[serve]'")
pytest.importorskip("uvicorn", reason="pip install 'recursa[serve]'")
openai = pytest.importorskip("openai", reason="the tests' OpenAI client comes with pip install 'recursa[dev]'")

from processes import child_env, workers_of  # noqa: E402
from recursa import Budget, read_trace  # noqa: E402
from recursa._model_store import EMBEDDED_MODEL  # noqa: E402
from recursa.serve import check_binding  # noqa: E402
from recursa.serve._chat import HTTPProblem, capped_budget, parse_chat  # noqa: E402

TOKEN = "test-token-7f3a"
SECRET = "TOP-SECRET-91c2"
MAX_REQUEST_MB = 8


# -- the scripted upstream ------------------------------------------------------------------------

def repl(src: str, prose: str = "Let me look.\n") -> str:
    return f"{prose}```repl\n{src}\n```"


SCRIPTS: dict[str, list[Any]] = {
    "[names]": [repl("names = ', '.join(context_names)\nprint(names)"), "FINAL_VAR(names)"],
    "[needle]": [repl("import re\nm = re.search(r'magic number is (\\d+)', context)\nfound = m.group(1)\nprint(found)"),
                 "FINAL_VAR(found)"],
    "[sub]": [repl("said = llm_query('Say something.')\nprint(said)"), "FINAL_VAR(said)"],
    "[slow]": [{"text": repl("print(len(context))"), "delay": 0.6}, {"text": "FINAL(done)", "delay": 0.3}],
    "[sleep]": [repl("import time\nprint('sleeping', flush=True)\ntime.sleep(60)"), "FINAL(woke up)"],
    "[stuck]": [repl("import time\ntime.sleep(60)", prose="")],
    "[never]": [repl("print('still looking')")],
    "[broken]": [{"status": 400, "error": "the upstream refuses this prompt"}],
}


def upstream(request: dict[str, Any]) -> Any:
    messages = request["messages"]
    if request["model"] == "sub-model":
        return "sub-answer"
    if "budget is used up" in messages[-1]["content"]:
        script = next((s for tag, s in SCRIPTS.items() if tag in _text(messages)), None)
        return script[0] if script is SCRIPTS["[stuck]"] else "FINAL(best guess)"
    return scripted(messages, SCRIPTS)


def _text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(str(m.get("content")) for m in messages)


# -- processes ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(interval)
    return value


class Server:
    """``recursa serve`` in a subprocess, stopped at exit."""

    def __init__(self, args: list[str], fake: FakeOpenAIServer, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        base = child_env()
        command = [sys.executable, "-m", "recursa.cli", "serve", "--port", str(self.port), "--model", "root-model",
                   "--sub-model", "sub-model", "--base-url", fake.base_url, "--api-key", "sk-upstream", *args]
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(command, env={**base, **(env or {})}, stdout=self._log_file,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self) -> Server:
        def up() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=60, interval=0.1)
        return self

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/healthz", timeout=5).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._log_file.close()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(upstream, models={"root-model", "sub-model"}) as server:
        yield server


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("serve")
    root = base / "root"
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "a.log").write_text("GET /index 200\n")
    (root / "logs" / "b.log").write_text("GET /login 500\n")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    return {"base": base, "root": root, "outside": outside}


@pytest.fixture(scope="module")
def server(fake: FakeOpenAIServer, tree: dict[str, Path]) -> Iterator[Server]:
    args = ["--root", str(tree["root"]), "--max-concurrent-runs", "4", "--max-request-mb", str(MAX_REQUEST_MB),
            "--max-iterations", "10", "--trace-dir", str(tree["base"] / "traces")]
    srv = Server(args, fake, tree["base"] / "server.log", env={"RECURSA_SERVE_TOKEN": TOKEN}).wait_ready()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, max_retries=0, timeout=60)


@pytest.fixture(autouse=True)
def _fresh_counters(fake: FakeOpenAIServer) -> None:
    fake.reset_counters()


def ask(question: str, *before: str) -> list[dict[str, str]]:
    return [*({"role": "user", "content": text} for text in before), {"role": "user", "content": question}]


# -- the official openai client ---------------------------------------------------------------------

def test_openai_client_gets_a_chat_completion(client: openai.OpenAI, server: Server, fake: FakeOpenAIServer) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["recursa"]

    reply = client.chat.completions.create(
        model="recursa",
        messages=[{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "first document"},
                  {"role": "assistant", "content": "noted"},
                  {"role": "user", "content": "[names] which documents?"}],
    )
    assert reply.object == "chat.completion" and reply.model == "recursa"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "system[0], user[1], assistant[2]"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    ext = reply.model_extra["recursa"]
    assert ext["stopped_reason"] == "final" and ext["iterations"] == 2 and ext["documents"] == 3
    assert ext["root_model"] == "root-model" and ext["sub_calls"] == 0

    trace = httpx.get(f"{server.url}/v1/traces/{ext['trace_id']}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert trace.status_code == 200 and trace.headers["content-type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in trace.text.splitlines()]
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    assert events[0]["budget"]["max_iterations"] == 10  # the server's cap
    assert events[-1]["answer"] == reply.choices[0].message.content
    saved = Path(server.log).parent / "traces" / f"{ext['trace_id']}.jsonl"
    assert saved.read_text() == trace.text
    assert read_trace(saved)[-1].answer == reply.choices[0].message.content  # what `recursa view` reads


def test_sub_calls_budget_stops_and_unknown_model(client: openai.OpenAI, fake: FakeOpenAIServer) -> None:
    sub = client.chat.completions.create(model="recursa", messages=ask("[sub] what does the sub-model say?"))
    assert sub.choices[0].message.content == "sub-answer"
    assert sub.model_extra["recursa"]["sub_calls"] == 1 and fake.requests_per_model["sub-model"] == 1

    # a request may lower the server's budget (never raise it); a budget stop is finish_reason "length"
    stopped = client.chat.completions.create(model="recursa", messages=ask("[never] find it"),
                                             extra_body={"recursa": {"max_iterations": 2, "max_cost_usd": 5}})
    assert stopped.choices[0].finish_reason == "length"
    assert stopped.choices[0].message.content == "best guess"
    assert stopped.model_extra["recursa"]["stopped_reason"] == "max_iterations"
    assert stopped.model_extra["recursa"]["iterations"] == 2

    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=ask("[names] q"))
    with pytest.raises(openai.BadRequestError, match="max_iterations must be a positive whole number"):
        client.chat.completions.create(model="recursa", messages=ask("[names] q"),
                                       extra_body={"recursa": {"max_iterations": -3}})
    with pytest.raises(openai.BadRequestError, match="Unknown recursa option"):
        client.chat.completions.create(model="recursa", messages=ask("[names] q"), extra_body={"recursa": {"x": 1}})
    with pytest.raises(openai.BadRequestError, match="reads text only"):
        client.chat.completions.create(model="recursa", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])


def test_openai_client_streams_progress_then_the_answer(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="recursa", messages=ask("[needle] the magic number?",
                                                                            "the magic number is 4242."),
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == "recursa" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert "Iteration 1 of at most 10" in reasoning and "Iteration 2 of at most 10" in reasoning
    assert "Ran `import re`" in reasoning
    assert "".join(d.content or "" for d in deltas) == "4242"
    closing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(closing) == 1 and closing[0].choices[0].finish_reason == "stop"
    assert closing[0].model_extra["recursa"]["stopped_reason"] == "final"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_run_errors_come_back_in_openai_shape(client: openai.OpenAI, tree: dict[str, Path]) -> None:
    # no answer before the run's timeout: 504, also over a stream
    with pytest.raises(openai.APIStatusError, match="timed out after 1 s") as info:
        client.chat.completions.create(model="recursa", messages=ask("[stuck] q"),
                                       extra_body={"recursa": {"timeout_s": 1}})
    assert info.value.status_code == 504
    stream = client.chat.completions.create(model="recursa", messages=ask("[stuck] q"), stream=True,
                                            extra_body={"recursa": {"timeout_s": 1}})
    with pytest.raises(openai.APIError, match="timed out after 1 s"):
        list(stream)
    # the upstream model failing is a 502 naming its error
    with pytest.raises(openai.APIStatusError, match="upstream model failed.*the upstream refuses this prompt") as info:
        client.chat.completions.create(model="recursa", messages=ask("[broken] q"))
    assert info.value.status_code == 502


# -- files under --root -----------------------------------------------------------------------------

def test_files_by_path_under_the_root_only(
    client: openai.OpenAI, fake: FakeOpenAIServer, tree: dict[str, Path]
) -> None:
    reply = client.chat.completions.create(model="recursa", messages=ask("[names] which logs?"),
                                           extra_body={"recursa": {"paths": ["logs"]}})
    assert reply.choices[0].message.content == "logs/a.log, logs/b.log"
    globbed = client.chat.completions.create(model="recursa", messages=ask("[names] which logs?"),
                                             extra_body={"recursa": {"glob": "**/b.log"}})
    assert globbed.choices[0].message.content == "logs/b.log"
    for path in (str(tree["outside"] / "secret.txt"), "escape.txt", "../outside/secret.txt"):
        for stream in (False, True):  # refused with the status code, before a stream starts
            with pytest.raises(openai.PermissionDeniedError, match="outside the allowed roots"):
                client.chat.completions.create(model="recursa", messages=ask("[names] q"), stream=stream,
                                               extra_body={"recursa": {"paths": [path]}})
    with pytest.raises(openai.BadRequestError, match="Path not found: 'missing.log'"):
        client.chat.completions.create(model="recursa", messages=ask("[names] q"), stream=True,
                                       extra_body={"recursa": {"paths": ["missing.log"]}})
    assert SECRET not in json.dumps(fake.bodies)


# -- a 5 MB message ---------------------------------------------------------------------------------

def test_5mb_message_is_context_and_never_reaches_the_root_prompt(
    client: openai.OpenAI, fake: FakeOpenAIServer
) -> None:
    lines = [f"filler line {i:07d}: nothing to see here, keep scrolling." for i in range(95_000)]
    lines.insert(60_000, "Between the lines: the magic number is 771204.")
    document = "\n".join(lines)
    message = f"{document}\n\n[needle] What is the magic number in the log above?"
    assert len(message) > 5_000_000

    reply = client.chat.completions.create(model="recursa", messages=[{"role": "user", "content": message}])
    assert reply.choices[0].message.content == "771204"
    assert reply.model_extra["recursa"]["documents"] == 1

    root_bodies = [b for b in fake.bodies if b["model"] == "root-model"]
    assert len(root_bodies) == 2
    sent = json.dumps(root_bodies)
    assert len(sent) < 60_000, "the root model was sent far more than metadata and a preview"
    for i in (2_000, 30_000, 59_999, 60_001, 94_999):  # nothing past the preview, before or after the needle
        assert f"filler line {i:07d}" not in sent
    assert "[needle] What is the magic number in the log above?" in root_bodies[0]["messages"][1]["content"]


# -- limits, auth, concurrency ----------------------------------------------------------------------

def test_401_without_the_token(server: Server) -> None:
    chat = f"{server.url}/v1/chat/completions"
    body = {"model": "recursa", "messages": ask("[names] q")}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = httpx.post(chat, json=body, headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    assert httpx.get(f"{server.url}/v1/traces/abc").status_code == 401
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"  # for load balancers: no token
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="wrong bearer token"):
        wrong.chat.completions.create(model="recursa", messages=ask("[names] q"))


def test_413_over_the_limit(client: openai.OpenAI, server: Server, fake: FakeOpenAIServer) -> None:
    big = "x" * (MAX_REQUEST_MB * 2**20 + 1000)
    with pytest.raises(openai.APIStatusError, match="over this server's limit") as info:
        client.chat.completions.create(model="recursa", messages=ask("[names] q", big))
    assert info.value.status_code == 413
    assert fake.request_count == 0
    # a declared length far over the limit is refused without reading the body
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {10**10}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


def burst(server: Server, n: int) -> tuple[list[httpx.Response], int]:
    """``n`` clients at once, each asking a question whose run takes about a second; returns their responses
    and the most runs the server reported in flight at any moment."""
    results: list[httpx.Response] = []
    running: list[int] = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            running.append(server.health()["running"])
            time.sleep(0.05)

    def one(i: int) -> None:
        body = {"model": "recursa", "messages": ask(f"[slow] request {i}")}
        results.append(httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60,
                                  headers={"Authorization": f"Bearer {TOKEN}"}))

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    return results, max(running)


def assert_busy(responses: list[httpx.Response], message: str) -> None:
    for r in responses:
        assert int(r.headers["retry-after"]) >= 1
        error = r.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and message in error["message"], error


def test_16_clients_with_4_run_slots_get_429_with_retry_after(server: Server, fake: FakeOpenAIServer) -> None:
    results, most_running = burst(server, 16)
    ok = [r for r in results if r.status_code == 200]
    busy = [r for r in results if r.status_code == 429]
    assert len(ok) == 4 and len(busy) == 12, [r.status_code for r in results]
    assert all(r.json()["choices"][0]["message"]["content"] == "done" for r in ok)
    assert_busy(busy, "All 4 run slots are busy (--max-concurrent-runs)")
    assert most_running == 4 and fake.max_in_flight <= 4
    assert server.health()["running"] == 0


def test_queued_clients_all_get_answers(fake: FakeOpenAIServer, tmp_path: Path) -> None:
    srv = Server(["--max-concurrent-runs", "4", "--max-queued", "12", "--token", TOKEN], fake,
                 tmp_path / "queued.log").wait_ready()
    try:
        results, most_running = burst(srv, 17)
        ok = [r for r in results if r.status_code == 200]
        busy = [r for r in results if r.status_code == 429]
        assert len(ok) == 16 and len(busy) == 1, [r.status_code for r in results]  # 4 running + 12 queued, 1 left
        assert all(r.json()["choices"][0]["message"]["content"] == "done" for r in ok)
        assert_busy(busy, "All 4 run slots are busy and 12 queued")
        assert most_running == 4 and fake.max_in_flight <= 4
        assert srv.health() == {"status": "ok", "running": 0, "queued": 0, "max_concurrent_runs": 4,
                                "max_queued": 12}
    finally:
        srv.stop()


# -- disconnects ------------------------------------------------------------------------------------

def _gone_within(pid: int, started: float) -> float:
    wait_until(lambda: not workers_of(pid), timeout=10)
    return time.monotonic() - started


def test_client_disconnect_cancels_the_run_and_its_worker(server: Server, client: openai.OpenAI) -> None:
    pid = server.proc.pid
    assert workers_of(pid) == []
    body = json.dumps({"model": "recursa", "messages": ask("[sleep] q")}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: workers_of(pid))
        time.sleep(0.5)  # let the worker get into time.sleep(60)
        assert server.health()["running"] == 1
    closed = time.monotonic()
    gone = _gone_within(pid, closed)
    print(f"non-streaming: worker gone {gone:.2f} s after the client hung up")
    assert gone < 1.0  # the contract: within a second
    wait_until(lambda: server.health()["running"] == 0, timeout=5)

    stream = client.chat.completions.create(model="recursa", messages=ask("[sleep] q"), stream=True)
    for c in stream:
        if c.choices and "Iteration 1" in ((c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""):
            break
    wait_until(lambda: workers_of(pid))
    time.sleep(0.5)
    stream.close()
    closed = time.monotonic()
    gone = _gone_within(pid, closed)
    print(f"streaming: worker gone {gone:.2f} s after the client hung up")
    assert gone < 1.0  # the contract: within a second
    wait_until(lambda: server.health()["running"] == 0, timeout=5)


# -- LangChain --------------------------------------------------------------------------------------

def test_langchain_chat_openai(server: Server) -> None:
    langchain_openai = pytest.importorskip("langchain_openai", reason="pip install 'recursa[dev]' (langchain-openai)")
    from langchain_core.messages import HumanMessage, SystemMessage

    llm = langchain_openai.ChatOpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, model="recursa", max_retries=0)
    message = llm.invoke([SystemMessage("notes: the magic number is 1337."), HumanMessage("[needle] the number?")])
    assert message.content == "1337"
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.usage_metadata is not None and message.usage_metadata["total_tokens"] > 0
    streamed = "".join(str(part.content) for part in llm.stream([HumanMessage("[names] which documents?")]))
    assert streamed == "user[0]"


# -- start-up and the request rules -----------------------------------------------------------------

def test_binding_beyond_loopback_without_a_token_is_refused_at_start(fake: FakeOpenAIServer, tmp_path: Path) -> None:
    port = free_port()
    base = child_env()
    done = subprocess.run([sys.executable, "-m", "recursa.cli", "serve", "--host", "0.0.0.0", "--port", str(port),
                           "--base-url", fake.base_url], capture_output=True, text=True, timeout=60, env=base)
    assert done.returncode == 1
    assert "refusing to serve on 0.0.0.0 without a token" in done.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    for host in ("127.0.0.1", "127.0.0.9", "localhost", "::1", "[::1]"):
        check_binding(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.com"):
        with pytest.raises(ValueError, match="without a token"):
            check_binding(host, None)
        check_binding(host, "a-token")


@pytest.mark.skipif(find_spec("llama_cpp") is None, reason="pip install 'recursa[local]'")
def test_no_endpoint_serves_the_embedded_model(tmp_path: Path) -> None:
    port = free_port()
    base = child_env()
    log = tmp_path / "local.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "recursa.cli", "serve", "--port", str(port)], env=base,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        models = wait_until(lambda: _get_json(f"http://127.0.0.1:{port}/v1/models"), timeout=60, interval=0.1)
        assert [m["id"] for m in models["data"]] == ["recursa"]
        assert f"(root {EMBEDDED_MODEL.name}, sub {EMBEDDED_MODEL.name})" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _get_json(url: str) -> Any:
    try:
        return httpx.get(url, timeout=1).json()
    except httpx.HTTPError:
        return None


def test_which_message_is_the_question() -> None:
    def parse(messages: list[dict[str, Any]], **extra: Any) -> Any:
        return parse_chat({"model": "recursa", "messages": messages, **extra}, served=["recursa"],
                          question_max_chars=100)

    only = parse([{"role": "user", "content": "hello"}])
    assert only.question == "hello" and only.names == ["user[0]"]  # nothing else to read: the message itself
    later = parse([{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                   {"role": "user", "content": [{"type": "text", "text": "q2"}]},
                   {"role": "assistant", "content": None}])
    assert later.question == "q2" and later.names == ["user[0]", "assistant[1]"]
    long = parse([{"role": "user", "content": "x" * 500 + "\n\nWhat is it?"}])
    assert long.question == "What is it?" and long.names == ["user[0]"] and len(long.documents[0]) > 500
    no_tail = parse([{"role": "user", "content": "y" * 500}])
    assert "'user[0]'" in no_tail.question and no_tail.documents == ["y" * 500]
    files = parse([{"role": "user", "content": "q"}], recursa={"paths": "src", "timeout_s": 5})
    assert files.documents == [] and files.paths == ["src"] and files.budget == {"timeout_s": 5.0}
    with pytest.raises(HTTPProblem, match="no user message"):
        parse([{"role": "system", "content": "s"}])
    with pytest.raises(HTTPProblem, match="Only n=1"):
        parse([{"role": "user", "content": "q"}], n=2)

    capped = capped_budget(Budget(max_iterations=10, max_cost_usd=None, timeout_s=60),
                           {"max_iterations": 50, "max_cost_usd": 0.5, "timeout_s": 5})
    assert (capped.max_iterations, capped.max_cost_usd, capped.timeout_s) == (10, 0.5, 5)

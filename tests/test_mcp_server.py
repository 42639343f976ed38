"""The MCP server against a real ``mcp`` SDK client: in memory, over a stdio subprocess and over HTTP.

In-memory servers get a ``ScriptedLM``; subprocess servers talk to ``FakeOpenAIServer`` through
``OPENAI_BASE_URL``. Both answer with the same script, chosen by a tag in the question.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

mcp = pytest.importorskip("mcp", reason="the MCP server needs pip install 'recursa[mcp]'")
if not hasattr(mcp, "Client"):
    pytest.skip("these tests drive the server with the mcp 2.x client: pip install --upgrade 'recursa[mcp]'",
                allow_module_level=True)
from fake_openai import FakeOpenAIServer, scripted  # noqa: E402
from mcp import Client, StdioServerParameters, types  # noqa: E402
from processes import cmdline, descendants, workers_of  # noqa: E402
from recursa import ScriptedLM  # noqa: E402
from recursa.mcp_server import Limits, create_server  # noqa: E402

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
SECRET = "TOP-SECRET-5b1e"


# -- the scripted model -------------------------------------------------------------------------

def repl(src: str) -> str:
    return f"Let me look.\n```repl\n{src}\n```"


SCRIPTS: dict[str, list[str]] = {
    "[names]": [repl("summary = f'{len(context_names)} docs: ' + ', '.join(context_names)\nprint(summary)"),
                "FINAL_VAR(summary)"],
    "[remember]": [repl("secret = sum(len(d) for d in (context if isinstance(context, list) else [context]))\n"
                        "print(secret)"), "FINAL_VAR(secret)"],
    "[reuse]": [repl("try:\n    doubled = f'doubled={secret * 2}'\nexcept NameError:\n    doubled = 'secret missing'\n"
                     "print(doubled)"), "FINAL_VAR(doubled)"],
    "[sleep]": [repl("import time\nprint('sleeping', flush=True)\ntime.sleep(60)"), "FINAL(woke up)"],
}


def scripted_reply(messages: list[dict[str, Any]]) -> str:
    """The root model: follows the script named by the tag in the question, one reply per turn."""
    if len(messages) < 2:
        return "sub-answer"
    return str(scripted(messages, SCRIPTS))


def fake_openai_reply(request: dict[str, Any]) -> str:
    return scripted_reply(request["messages"])


# -- files and processes ------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """An allowed root with logs, and next to it a directory the server must never read."""
    root = tmp_path / "root"
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "a.log").write_text("GET /index 200\nGET /login 500\n")
    (root / "logs" / "b.log").write_text("POST /api 201\n")
    (root / "notes.txt").write_text("notes about the service\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    return {"root": root, "outside": outside}


def server_pid() -> int:
    """The ``python -m recursa.mcp_server`` process this test started."""
    for pid in descendants(os.getpid()):
        if "recursa.mcp_server" in cmdline(pid):
            return pid
    raise AssertionError("no recursa.mcp_server subprocess found")


async def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    with anyio.fail_after(timeout):
        while not (value := check()):
            await anyio.sleep(0.05)
    return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(fake: FakeOpenAIServer) -> dict[str, str]:
    return {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-test", "RECURSA_MODEL": "fake-model"}


def in_memory(tree: dict[str, Path], **options: Any) -> tuple[Any, ScriptedLM]:
    lm = ScriptedLM(scripted_reply)
    return create_server(roots=[tree["root"]], root=lm, **options), lm


async def answer_names_with_progress(client: Client) -> types.CallToolResult:
    """``rlm_answer`` over logs/ through a server in another process: the answer, and progress per iteration."""
    progress: list[str | None] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    result = await client.call_tool("rlm_answer", {"question": "[names] q", "paths": ["logs"]},
                                    progress_callback=on_progress)
    assert result.structured_content["answer"] == "2 docs: logs/a.log, logs/b.log", text_of(result)
    assert any(m and m.startswith("Iteration 2") for m in progress)
    return result


def text_of(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


# -- in memory ----------------------------------------------------------------------------------

async def test_tools_are_listed_with_input_and_output_schemas(tree: dict[str, Path]) -> None:
    server, _ = in_memory(tree)
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
    assert set(tools) == {"rlm_answer", "load_context", "ask", "close_context"}
    answer = tools["rlm_answer"]
    assert answer.input_schema["required"] == ["question"]
    assert set(answer.input_schema["properties"]) == {
        "question", "paths", "glob", "text", "max_cost_usd", "max_iterations"}
    assert "api_key" not in json.dumps([t.input_schema for t in tools.values()])
    assert {"answer", "stopped_reason", "iterations", "sub_calls", "tokens", "cost_usd", "trace_id"} <= set(
        answer.output_schema["properties"])
    assert {"context_id", "documents", "chars", "preview"} <= set(tools["load_context"].output_schema["properties"])
    assert tools["ask"].input_schema["required"] == ["context_id", "question"]
    assert all(t.description for t in tools.values())
    assert templates == {"recursa://trace/{trace_id}", "recursa://context/{context_id}"}


async def test_rlm_answer_reads_files_under_the_root_and_reports_progress(tree: dict[str, Path]) -> None:
    server, _ = in_memory(tree)
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async with Client(server) as client:
        result = await client.call_tool("rlm_answer", {"question": "[names] which logs?", "paths": ["logs"]},
                                        progress_callback=on_progress)
        assert not result.is_error, text_of(result)
        out = result.structured_content
        assert out["answer"] == "2 docs: logs/a.log, logs/b.log"
        assert out["stopped_reason"] == "final" and out["iterations"] == 2 and out["documents"] == 2
        assert out["tokens"] > 0 and out["sub_calls"] == 0
        trace = await client.read_resource(f"recursa://trace/{out['trace_id']}")
    events = [json.loads(line) for line in trace.contents[0].text.splitlines()]
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    assert events[-1]["answer"] == out["answer"]
    messages = [m for _, _, m in progress]
    assert [v for v, _, _ in progress] == sorted({v for v, _, _ in progress}), "progress must increase"
    assert any(m and m.startswith("Iteration 1 of at most 30") for m in messages)
    assert any(m and m.startswith("Iteration 2 of at most 30") for m in messages)
    assert all(total == 30 for _, total, _ in progress)


async def test_load_context_then_ask_reuses_variables_between_questions(tree: dict[str, Path]) -> None:
    server, _ = in_memory(tree)
    async with Client(server) as client:
        loaded = await client.call_tool("load_context", {"paths": ["logs", "notes.txt"]})
        assert not loaded.is_error, text_of(loaded)
        info = loaded.structured_content
        assert info["documents"] == 3 and info["names"] == ["logs/a.log", "logs/b.log", "notes.txt"]
        assert info["chars"] == sum(len(p.read_text()) for p in (tree["root"] / "logs").iterdir()) + len(
            (tree["root"] / "notes.txt").read_text())
        cid = info["context_id"]

        first = await client.call_tool("ask", {"context_id": cid, "question": "[remember] total size?"})
        assert first.structured_content["answer"] == str(info["chars"])
        second = await client.call_tool("ask", {"context_id": cid, "question": "[reuse] double it"})
        assert second.structured_content["answer"] == f"doubled={info['chars'] * 2}"
        assert second.structured_content["question_number"] == 2

        manifest = json.loads((await client.read_resource(f"recursa://context/{cid}")).contents[0].text)
        assert [d["name"] for d in manifest["documents"]] == info["names"] and manifest["questions"] == 2
        assert manifest["trace_ids"] == [first.structured_content["trace_id"], second.structured_content["trace_id"]]

        closed = await client.call_tool("close_context", {"context_id": cid})
        assert closed.structured_content == {"context_id": cid, "closed": True, "questions": 2}
        again = await client.call_tool("ask", {"context_id": cid, "question": "[reuse] again"})
        assert again.is_error and "Unknown context_id" in text_of(again)
    assert workers_of(os.getpid()) == []


async def test_refused_requests_are_tool_errors_and_the_server_keeps_serving(tree: dict[str, Path]) -> None:
    server, lm = in_memory(tree, limits=Limits(max_inline_chars=1_000))
    bad_calls = {
        "outside the allowed roots": {"paths": [str(tree["outside"] / "secret.txt")]},
        "to " + str(tree["outside"]): {"paths": ["../outside/secret.txt"]},
        "through a symlink": {"paths": ["escape.txt"]},
        "Path not found: 'missing.txt'": {"paths": ["missing.txt"]},
        "save it to a file under an allowed root and pass its path": {"text": "x" * 5_000},
        "Nothing to read": {},
    }
    async with Client(server) as client:
        for expected, arguments in bad_calls.items():
            result = await client.call_tool("rlm_answer", {"question": "[names] q", **arguments})
            assert result.is_error and expected in text_of(result), (arguments, text_of(result))
            assert SECRET not in text_of(result)
        unknown = await client.call_tool("ask", {"context_id": "ctx_nope", "question": "[names] q"})
        assert unknown.is_error and "Unknown context_id 'ctx_nope'" in text_of(unknown)

        # a directory walk skips the symlink out of the root (and never follows the symlinked directory)
        ok = await client.call_tool("rlm_answer", {"question": "[names] q", "paths": ["."]})
        assert not ok.is_error, text_of(ok)
        assert ok.structured_content["answer"] == "3 docs: logs/a.log, logs/b.log, notes.txt"
        assert ok.structured_content["skipped"] == ["escape.txt (symlink out of the allowed directories)",
                                                    "escape_dir/ (symlink out of the allowed directories)"]
        inline = await client.call_tool("rlm_answer", {"question": "[names] q", "text": "small text"})
        assert inline.structured_content["answer"] == "1 docs: <text>"
        globbed = await client.call_tool("rlm_answer", {"question": "[names] q", "glob": "**/*.log"})
        assert globbed.structured_content["answer"] == "2 docs: logs/a.log, logs/b.log"
    assert SECRET not in json.dumps(lm.calls)


async def test_unknown_trace_is_a_resource_error(tree: dict[str, Path]) -> None:
    server, _ = in_memory(tree)
    async with Client(server) as client:
        with pytest.raises(mcp.MCPError, match="No trace 'nope'"):
            await client.read_resource("recursa://trace/nope")
        after = await client.call_tool("rlm_answer", {"question": "[names] q", "paths": ["notes.txt"]})
        assert after.structured_content["answer"] == "1 docs: notes.txt"


async def test_cancelling_a_call_stops_the_run_and_its_worker(tree: dict[str, Path]) -> None:
    server, _ = in_memory(tree)
    async with Client(server) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "rlm_answer", {"question": "[sleep] q", "paths": ["notes.txt"]})
            await wait_until(lambda: workers_of(os.getpid()))
            await anyio.sleep(0.3)  # let the worker get into time.sleep(60)
            tg.cancel_scope.cancel()
        await wait_until(lambda: not workers_of(os.getpid()), timeout=5)

        # the same holds for a warm context: the worker dies, the context stays usable (variables lost)
        cid = (await client.call_tool("load_context", {"paths": ["notes.txt"]})).structured_content["context_id"]
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "ask", {"context_id": cid, "question": "[sleep] q"})
            await anyio.sleep(0.5)
            tg.cancel_scope.cancel()
        await wait_until(lambda: not workers_of(os.getpid()), timeout=5)
        after = await client.call_tool("ask", {"context_id": cid, "question": "[names] q"})
        assert after.structured_content["answer"] == "1 docs: notes.txt"

        # closing a context stops the question running on it
        results: list[types.CallToolResult] = []

        async def ask_and_keep() -> None:
            results.append(await client.call_tool("ask", {"context_id": cid, "question": "[sleep] q"}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask_and_keep)
            await anyio.sleep(0.5)
            await client.call_tool("close_context", {"context_id": cid})
        assert results[0].is_error and "was closed while" in text_of(results[0])
    assert workers_of(os.getpid()) == []


async def test_client_roots_are_allowed_where_the_client_offers_them(tree: dict[str, Path], tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "readme.md").write_text("hello from the client's workspace")

    async def list_roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=workspace.as_uri(), name="workspace")])

    server, _ = in_memory(tree)
    arguments = {"question": "[names] q", "paths": [str(workspace / "readme.md")]}
    async with Client(server, mode="legacy", list_roots_callback=list_roots) as client:
        result = await client.call_tool("rlm_answer", arguments)
        assert not result.is_error, text_of(result)
        assert result.structured_content["answer"] == "1 docs: readme.md"
    async with Client(server, mode="legacy") as client:
        refused = await client.call_tool("rlm_answer", arguments)
        assert refused.is_error and "outside the allowed roots" in text_of(refused)


async def test_sampling_uses_the_clients_model(tree: dict[str, Path]) -> None:
    requests: list[types.CreateMessageRequestParams] = []

    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        requests.append(params)
        messages = [{"role": "system", "content": params.system_prompt or ""}] + [
            {"role": m.role, "content": m.content.text} for m in params.messages
        ]
        reply = types.TextContent(type="text", text=scripted_reply(messages))
        return types.CreateMessageResult(role="assistant", content=reply, model="client-model")

    server = create_server(roots=[tree["root"]], use_client_sampling=True)
    async with Client(server, mode="legacy", sampling_callback=sample) as client:
        result = await client.call_tool("rlm_answer", {"question": "[names] q", "paths": ["logs"]})
        assert not result.is_error, text_of(result)
        assert result.structured_content["answer"] == "2 docs: logs/a.log, logs/b.log"
        cid = (await client.call_tool("load_context", {"paths": ["notes.txt"]})).structured_content["context_id"]
        first = await client.call_tool("ask", {"context_id": cid, "question": "[remember] q"})
        second = await client.call_tool("ask", {"context_id": cid, "question": "[reuse] q"})
        assert second.structured_content["answer"] == f"doubled={int(first.structured_content['answer']) * 2}"
    assert len(requests) == 6 and requests[0].system_prompt

    async with Client(server, mode="legacy") as client:  # a client without sampling gets told what to do
        refused = await client.call_tool("rlm_answer", {"question": "[names] q", "paths": ["logs"]})
        assert refused.is_error and "does not offer sampling" in text_of(refused)


# -- over a stdio subprocess and streamable HTTP -------------------------------------------------

@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(fake_openai_reply) as fake:
        yield fake


def stdio_params(tree: dict[str, Path], fake: FakeOpenAIServer) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "recursa.mcp_server", "--root", str(tree["root"])],
        env=server_env(fake), cwd=str(tree["root"]),
    )


@pytest.mark.slow
async def test_stdio_subprocess_end_to_end(tree: dict[str, Path], fake_openai: FakeOpenAIServer) -> None:
    # mode="legacy" speaks the initialize handshake, as Claude Desktop, Claude Code and IDEs do today
    async with Client(stdio_params(tree, fake_openai), mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"rlm_answer", "load_context", "ask", "close_context"}

        await answer_names_with_progress(client)

        outside = await client.call_tool("rlm_answer", {"question": "[names] q", "paths": ["escape.txt"]})
        assert outside.is_error and "outside the allowed roots" in text_of(outside)

        cid = (await client.call_tool("load_context", {"paths": ["logs"]})).structured_content["context_id"]
        first = await client.call_tool("ask", {"context_id": cid, "question": "[remember] q"})
        second = await client.call_tool("ask", {"context_id": cid, "question": "[reuse] q"})
        assert second.structured_content["answer"] == f"doubled={int(first.structured_content['answer']) * 2}"

        pid = server_pid()
        warm = set(workers_of(pid))  # the open context's worker (with its launcher processes)
        assert warm
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "rlm_answer", {"question": "[sleep] q", "paths": ["notes.txt"]})
            await wait_until(lambda: set(workers_of(pid)) - warm)  # this run's worker is up
            await anyio.sleep(0.3)
            tg.cancel_scope.cancel()
        await wait_until(lambda: set(workers_of(pid)) == warm, timeout=5)

        after = await client.call_tool("ask", {"context_id": cid, "question": "[names] q"})
        assert after.structured_content["answer"] == "2 docs: logs/a.log, logs/b.log"
        await client.call_tool("close_context", {"context_id": cid})
        assert workers_of(pid) == []
    assert SECRET not in json.dumps(fake_openai.bodies)


@pytest.mark.slow
async def test_streamable_http(tree: dict[str, Path], fake_openai: FakeOpenAIServer, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "recursa.mcp_server", "--http", "--port", str(port), "--root", str(tree["root"])],
        env={**os.environ, **server_env(fake_openai)}, stdout=log, stderr=subprocess.STDOUT, cwd=tree["root"],
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                await anyio.sleep(0.1)
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            assert len((await client.list_tools()).tools) == 4
            result = await answer_names_with_progress(client)
            trace = await client.read_resource(f"recursa://trace/{result.structured_content['trace_id']}")
            assert json.loads(trace.contents[0].text.splitlines()[-1])["type"] == "run_finished"
            refused = await client.call_tool("rlm_answer", {"question": "[names] q", "paths": ["/etc/hostname"]})
            assert refused.is_error and "outside the allowed roots" in text_of(refused)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_example_client_runs_against_the_server(tree: dict[str, Path], fake_openai: FakeOpenAIServer) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "mcp_client.py"), "--root", str(tree["root"]),
         "[names] which logs?", "logs"],
        env={**os.environ, **server_env(fake_openai)}, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "2 docs: logs/a.log, logs/b.log" in done.stdout

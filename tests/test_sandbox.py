"""The REPL sandbox against real worker processes: behaviour, limits, isolation, and clean-up."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from recursa._context import Context
from recursa.sandbox import ReplSandbox, SandboxLimits, SubCallRequest, _isolation, sandbox_mechanisms

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- helpers: the host's view of processes -----------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, start time) for every process the host can see."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), fields[19])
    return table


def _tree(root: int) -> set[tuple[int, str]]:
    """The worker's process and all its descendants, as (pid, start time) so reused pids do not confuse us."""
    table = _proc_table()
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.add((pid, table[pid][1]))
            todo.extend(child for child, (ppid, _) in table.items() if ppid == pid)
    return found


def _alive(procs: set[tuple[int, str]]) -> set[tuple[int, str]]:
    table = _proc_table()
    return {(pid, start) for pid, start in procs if pid in table and table[pid][1] == start}


async def _assert_gone(procs: set[tuple[int, str]], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while _alive(procs) and time.monotonic() < deadline:
        await anyio.sleep(0.02)
    assert not _alive(procs), f"worker processes left behind: {_alive(procs)}"


def _mechanisms() -> str:
    return " | ".join(sandbox_mechanisms())


# -- the REPL ---------------------------------------------------------------------------------------


async def test_variables_persist_and_last_expression_is_shown() -> None:
    async with ReplSandbox(Context(["hello world"])) as sb:
        assert (await sb.execute("x = 40")).output == ""
        result = await sb.execute("y = x + 2\ny")
        assert result.output == "42\n" and result.error is None and not result.crashed
        assert (await sb.execute("print(x, y)")).output == "40 42\n"
        assert await sb.get_variable("y") == "42"
        assert await sb.get_variable("nope") is None


async def test_context_as_str() -> None:
    async with ReplSandbox(Context(["héllo wörld 🌍"])) as sb:
        result = await sb.execute("print(type(context).__name__, len(context), context_names, context)")
        assert result.output == "str 13 ['doc0'] héllo wörld 🌍\n"


async def test_context_as_list_with_names_and_metadata() -> None:
    ctx = Context(["alpha", "", "gamma γ"], names=["a.txt", "b.txt", "c.txt"], metadata=[{"n": 1}, {}, {"n": 3}])
    async with ReplSandbox(ctx) as sb:
        result = await sb.execute("print(context)\nprint(context_names)\nprint(context_metadata)")
        assert result.output == "['alpha', '', 'gamma γ']\n['a.txt', 'b.txt', 'c.txt']\n[{'n': 1}, {}, {'n': 3}]\n"


async def test_single_document_kept_as_list_when_asked() -> None:
    async with ReplSandbox(Context(["only"], as_list=True)) as sb:
        assert (await sb.execute("context")).output == "['only']\n"


async def test_output_interleaves_stdout_and_stderr_and_is_capped() -> None:
    async with ReplSandbox(Context(["c"])) as sb:
        code = "import sys\nprint('a')\nprint('b', file=sys.stderr)\nn = sys.stdout.write('c\\n')"
        assert (await sb.execute(code)).output == "a\nb\nc\n"
        result = await sb.execute("print('x' * 1_500_000)")
        assert result.output.startswith("x" * 1000)
        assert "500,001 more characters of output were dropped" in result.output
        assert len(result.output) < 1_000_200
        shell = await sb.execute("import os\nrc = os.system('echo from-a-subprocess')")
        assert "from-a-subprocess" in shell.output


async def test_errors_are_tracebacks_without_worker_frames() -> None:
    async with ReplSandbox(Context(["c"])) as sb:
        result = await sb.execute("def f():\n    raise ValueError('boom')\nprint('before')\nf()")
        assert result.output == "before\n"
        assert result.error is not None
        assert result.error.startswith("Traceback (most recent call last):")
        assert result.error.endswith("ValueError: boom")
        assert "raise ValueError('boom')" in result.error
        assert "_worker.py" not in result.error
        syntax = await sb.execute("x = (")
        assert syntax.error is not None and "SyntaxError" in syntax.error
        exit_error = (await sb.execute("raise SystemExit(3)")).error
        assert exit_error is not None and exit_error.endswith("SystemExit: 3")
        assert (await sb.execute("print('still here')")).output == "still here\n"


# -- sub-calls ---------------------------------------------------------------------------------------


async def test_sub_calls_reach_the_handler_with_prompts_in_order() -> None:
    requests: list[SubCallRequest] = []

    async def handler(request: SubCallRequest) -> list[str]:
        requests.append(request)
        return [f"<{p}>" for p in request.prompts]

    async with ReplSandbox(Context(["c"]), on_sub_call=handler) as sb:
        code = (
            "print(llm_query('a'))\n"
            "print(llm_query_batched(['b', 'c']))\n"
            "print(rlm_query('d'))\n"
            "print(rlm_query_batched(['e', 'f']))\n"
            "print(llm_query_batched([]))"
        )
        result = await sb.execute(code)
        assert result.error is None
        assert result.output == "<a>\n['<b>', '<c>']\n<d>\n['<e>', '<f>']\n[]\n"
    assert requests == [
        SubCallRequest(["a"], recursive=False),
        SubCallRequest(["b", "c"], recursive=False),
        SubCallRequest(["d"], recursive=True),
        SubCallRequest(["e", "f"], recursive=True),
    ]


async def test_sub_calls_from_threads_are_answered_concurrently() -> None:
    async def handler(request: SubCallRequest) -> list[str]:
        await anyio.sleep(0.3)
        return [p.upper() for p in request.prompts]

    async with ReplSandbox(Context(["c"]), on_sub_call=handler) as sb:
        code = (
            "from concurrent.futures import ThreadPoolExecutor\n"
            "with ThreadPoolExecutor(6) as pool:\n"
            "    answers = list(pool.map(llm_query, 'abcdef'))\n"
            "answers"
        )
        started = time.perf_counter()
        result = await sb.execute(code)
        assert result.output == "['A', 'B', 'C', 'D', 'E', 'F']\n"
        assert time.perf_counter() - started < 1.5  # six 0.3 s calls would take 1.8 s one after another


async def test_sub_call_errors_surface_as_exceptions_in_code() -> None:
    async def handler(request: SubCallRequest) -> list[str]:
        raise ValueError(f"model refused {request.prompts[0]!r}")

    async with ReplSandbox(Context(["c"]), on_sub_call=handler) as sb:
        result = await sb.execute("llm_query('q')")
        assert result.error is not None and result.error.endswith("RuntimeError: model refused 'q'")
        caught = await sb.execute("try:\n    llm_query('q')\nexcept RuntimeError as e:\n    print('caught', e)")
        assert caught.output == "caught model refused 'q'\n"

    async with ReplSandbox(Context(["c"])) as sb:
        result = await sb.execute("llm_query_batched(['a'])")
        assert result.error is not None
        assert result.error.endswith("RuntimeError: sub-calls are not available in this run")


async def test_waiting_for_sub_calls_does_not_count_against_the_step_timeout() -> None:
    async def slow(request: SubCallRequest) -> list[str]:
        await anyio.sleep(2.7)  # longer than the step timeout plus the hard-kill grace
        return ["done"]

    async with ReplSandbox(Context(["c"]), on_sub_call=slow) as sb:
        result = await sb.execute("answer = llm_query('slow')\nprint(answer)", timeout_s=0.5)
        assert result.output == "done\n"
        assert not result.timed_out and not result.crashed


# -- final answers ----------------------------------------------------------------------------------


async def test_final_and_final_var() -> None:
    async with ReplSandbox(Context(["c"])) as sb:
        result = await sb.execute("print('working')\nFINAL(6 * 7)\nprint('not reached')")
        assert result.final == "42" and result.output == "working\n" and result.error is None

        result = await sb.execute("parts = ['a', 'b']\nanswer = '-'.join(parts)\nFINAL_VAR('answer')")
        assert result.final == "a-b" and result.error is None

        result = await sb.execute("FINAL_VAR(answer)")  # the variable itself, not its name
        assert result.final == "a-b"

        result = await sb.execute("FINAL_VAR('missing')")
        assert result.final is None
        assert result.error == (
            "FINAL_VAR: no variable named 'missing' exists; define it first or use FINAL(...) with the text"
        )


async def test_final_cannot_be_swallowed_by_except_exception() -> None:
    async with ReplSandbox(Context(["c"])) as sb:
        code = "try:\n    FINAL('done')\nexcept Exception:\n    print('swallowed')\nprint('after')"
        result = await sb.execute(code)
        assert result.final == "done" and result.output == ""
        code = "x = 1\ntry:\n    FINAL_VAR('x')\nexcept Exception:\n    print('swallowed')"
        assert (await sb.execute(code)).final == "1"


async def test_show_vars_lists_user_variables() -> None:
    async with ReplSandbox(Context(["c"])) as sb:
        result = await sb.execute("import re\nchunks = ['a', 'b']\nnote = 'hello'\nn = 3\nSHOW_VARS()")
        assert "chunks: list (2 items)" in result.output
        assert "note: str (5 chars)" in result.output
        assert "n: int = 3" in result.output
        assert "re" not in result.output.split() and "llm_query" not in result.output


# -- isolation ----------------------------------------------------------------------------------------


async def test_worker_environment_has_no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "sk-test-secret")
    async with ReplSandbox(Context(["c"]), limits=SandboxLimits(extra_env={"RECURSA_FLAG": "1"})) as sb:
        code = (
            "import os\n"
            "print(sorted(os.environ))\n"
            "print(any('sk-test-secret' in v for v in os.environ.values()))\n"
            f"for pid in (os.getppid(), {os.getpid()}):\n"
            "    try:\n"
            "        print('sk-test-secret' in open(f'/proc/{pid}/environ').read())\n"
            "    except OSError as e:\n"
            "        print('unreadable', type(e).__name__)\n"
        )
        result = await sb.execute(code)
        assert result.error is None, result.error
        names, leaked, *proc_lines = result.output.splitlines()
        assert "OPENAI_API_KEY" not in names and "MY_SERVICE_TOKEN" not in names and "'RECURSA_FLAG'" in names
        assert leaked == "False"
        assert all(line.startswith("unreadable") for line in proc_lines), proc_lines
    with pytest.raises(ValueError, match="secret"):
        ReplSandbox(Context(["c"]), limits=SandboxLimits(extra_env={"OPENAI_API_KEY": "x"}))


async def test_no_network_even_to_a_listening_local_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        async with ReplSandbox(Context(["c"])) as sb:
            code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
            result = await sb.execute(code)
            assert result.error is not None and not result.crashed
            assert any(word in result.error for word in ("PermissionError", "unreachable", "refused")), result.error
        with pytest.raises(BlockingIOError):
            server.accept()


async def test_model_code_cannot_signal_the_host() -> None:
    async with ReplSandbox(Context(["c"])) as sb:
        await sb.execute("import os, signal")
        await sb.execute("os.kill(os.getppid(), signal.SIGKILL)")
        await sb.execute("os.killpg(0, signal.SIGKILL)")
        kill_all = (
            "import os, signal\n"
            "for entry in os.listdir('/proc'):\n"
            "    if entry.isdigit() and int(entry) != os.getpid():\n"
            "        try:\n"
            "            os.kill(int(entry), signal.SIGKILL)\n"
            "        except OSError:\n"
            "            pass\n"
            "for pid in range(1, 5000):\n"
            "    try:\n"
            "        os.kill(pid, signal.SIGKILL)\n"
            "    except OSError:\n"
            "        pass\n"
            "os.kill(-1, signal.SIGKILL)\n"
            "print('survived')"
        )
        result = await sb.execute(kill_all)
        assert result.output == "survived\n" or result.crashed
        # We are the host: still running. The sandbox still works.
        assert (await sb.execute("print(len(context))")).output == "1\n"


async def test_writes_outside_the_work_dir_are_refused_by_landlock() -> None:
    if "landlock" not in _mechanisms():
        pytest.skip("Landlock is not available here")
    async with ReplSandbox(Context(["c"])) as sb:
        result = await sb.execute("import os\nopen('notes.txt', 'w').write('ok')\nprint(os.listdir('.'))")
        assert result.output == "['notes.txt']\n"
        result = await sb.execute("open('/tmp/recursa-escape.txt', 'w')")
        assert result.error is not None and "PermissionError" in result.error


async def test_fallback_without_namespaces_still_protects_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a kernel without unprivileged user namespaces gets: an audit hook instead of a network namespace."""
    monkeypatch.setattr(_isolation, "_USE_NAMESPACES", False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        async with ReplSandbox(Context(["c"])) as sb:
            await sb.start()
            assert any("audit hook" in m and "weaker" in m for m in sb.mechanisms)
            assert not any("namespace" in m for m in sb.mechanisms)
            result = await sb.execute(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)")
            assert result.error is not None and "PermissionError" in result.error
            await sb.execute("import os\ntry:\n    os.kill(os.getppid(), 9)\nexcept OSError:\n    pass")
            crashed = await sb.execute("os.killpg(0, 9)")
            assert crashed.crashed and "SIGKILL" in (crashed.error or "")
            assert (await sb.execute("print(context)")).output == "c\n"
            procs = _tree(sb.pid or 0)
        await _assert_gone(procs, within=1.0)


def test_sandbox_mechanisms_are_reported() -> None:
    mechanisms = sandbox_mechanisms()
    assert mechanisms[0].startswith("separate process")
    assert any("environment" in m for m in mechanisms)
    assert any("rlimits" in m for m in mechanisms)
    assert any("network namespace" in m or "audit hook" in m for m in mechanisms)
    assert sum("reads: " in m or "reads not confined" in m for m in mechanisms) == 1, mechanisms


async def test_unconfined_reads_are_reported_as_weaker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel with neither Landlock nor user namespaces: the worker says so instead of claiming protection."""
    monkeypatch.setattr(_isolation, "_USE_LANDLOCK", False)
    monkeypatch.setattr(_isolation, "_USE_NAMESPACES", False)
    async with ReplSandbox(Context(["c"])) as sb:
        await sb.start()
        assert any(m.startswith("reads not confined") and "weaker" in m for m in sb.mechanisms), sb.mechanisms
        assert not any("reads: " in m for m in sb.mechanisms)
        assert (await sb.execute("import json\nprint(json.dumps(context))")).output == '"c"\n'


# -- reads: the Python installation, the work dir and the context; nothing else ----------------------

_CHECKOUT = Path(__file__).resolve().parents[1]
_STDLIB = (
    "re, json, math, collections, itertools, statistics, datetime, textwrap, string, functools, heapq, bisect, "
    "difflib, csv, io, hashlib, random, decimal, fractions, zoneinfo, mimetypes, time, locale, unicodedata"
)
_PROBE = """
import os, subprocess
def probe(path):
    try:
        if os.path.isdir(path):
            return 'READ ' + ','.join(sorted(os.listdir(path)))
        with open(path, 'rb') as f:
            return 'READ ' + f.read().decode('utf-8', 'replace')
    except OSError as e:
        return 'DENIED ' + type(e).__name__
for path in PATHS:
    print(path, '->', probe(path))
"""


@pytest.fixture
def planted() -> Iterator[dict]:
    """World-readable secrets where a real one would be: a project's .env (mode 644, in a 755 directory, so the
    uid drop to nobody does not protect it) under /tmp and in the project checkout."""
    token = "sk-planted-" + secrets.token_hex(12)
    outside = tempfile.mkdtemp(prefix="recursa-secret-")
    os.chmod(outside, 0o755)
    env_outside = os.path.join(outside, ".env")
    fd, env_in_checkout = tempfile.mkstemp(prefix=".recursa-test-secret-", suffix=".env", dir=_CHECKOUT)
    for path in (env_outside, env_in_checkout):
        with open(path if path == env_outside else fd, "w") as f:
            f.write(f"OPENAI_API_KEY={token}\n")
        os.chmod(path, 0o644)
    try:
        yield {
            "token": token,
            "files": [env_outside, env_in_checkout, str(_CHECKOUT / "README.md"), __file__, "/etc/passwd"],
            "dirs": [outside, str(_CHECKOUT), os.path.expanduser("~"), "/home", "/etc", "/tmp", "/"],
        }
    finally:
        shutil.rmtree(outside, ignore_errors=True)
        os.unlink(env_in_checkout)


@pytest.fixture(params=["landlock", "minimal root"])
def read_confinement(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Landlock where the kernel has it; else a minimal root in a mount namespace (forced here by hiding Landlock)."""
    if request.param == "landlock":
        if "landlock" not in _mechanisms():
            pytest.skip("Landlock is not available here")
    else:
        if "mount namespace" not in _mechanisms():
            pytest.skip("no mount namespace here")
        monkeypatch.setattr(_isolation, "_USE_LANDLOCK", False)
    return request.param


async def test_model_code_cannot_read_files_outside_its_work_dir(read_confinement: str, planted: dict) -> None:
    token = planted["token"]
    async with ReplSandbox(Context([f"the context, no {token[:8]} here"])) as sb:
        await sb.start()
        assert any(m.startswith(read_confinement) and "reads: " in m for m in sb.mechanisms), sb.mechanisms
        targets = planted["files"] + planted["dirs"]
        result = await sb.execute(f"PATHS = {targets!r}\n{_PROBE}")
        assert result.error is None, result.error
        lines = result.output.splitlines()
        assert len(lines) == len(targets), result.output
        for line in lines:
            assert " -> DENIED " in line, line
        # Indirect ways: a symlink in the work dir, /proc/self/root, a subprocess, a crash and restart.
        secret = planted["files"][0]
        result = await sb.execute(
            f"os.symlink({secret!r}, 'link.env')\n"
            f"PATHS = ['link.env', '/proc/self/root' + {secret!r}, '/proc/1/root' + {secret!r}]\n{_PROBE}\n"
            f"print(subprocess.run(['cat', {secret!r}, '/etc/passwd'], capture_output=True, text=True))"
        )
        assert result.error is None, result.error
        assert result.output.count(" -> DENIED ") == 3, result.output
        crashed = await sb.execute("os._exit(1)")
        assert crashed.crashed
        again = await sb.execute(f"print(open({secret!r}).read())")
        assert again.error is not None and any(e in again.error for e in ("PermissionError", "FileNotFoundError"))
        everything = result.output + again.output + (again.error or "")
        assert token not in everything and "root:x:0:0" not in everything


async def test_confined_reads_leave_the_stdlib_work_dir_and_context_usable(read_confinement: str) -> None:
    async with ReplSandbox(Context(["alpha beta\ngamma"]), limits=SandboxLimits(step_timeout_s=1.0)) as sb:
        code = (
            f"import {_STDLIB}\n"
            "words = re.findall(r'\\w+', context)\n"
            "print(words, json.dumps(collections.Counter(words)), statistics.mean([1, 2, 3]))\n"
            "print(hashlib.sha256(context.encode()).hexdigest()[:12], decimal.Decimal('1.10') + 1)\n"
            "print(zoneinfo.ZoneInfo('Europe/Paris').key, mimetypes.guess_type('a.csv')[0])\n"
            "print(difflib.SequenceMatcher(None, 'abc', 'abd').ratio(), unicodedata.name('a'))\n"
            "import numpy\n"
            "print(numpy.arange(3).sum())"
        )
        result = await sb.execute(code)
        assert result.error is None or "No module named 'numpy'" in result.error, result.error
        assert result.output.startswith("['alpha', 'beta', 'gamma'] {\"alpha\": 1"), result.output
        assert "Europe/Paris text/csv" in result.output
        result = await sb.execute(
            "import os\nos.makedirs('d', exist_ok=True)\nopen('d/notes.txt', 'w').write('kept')\n"
            "print(open('d/notes.txt').read(), os.listdir('.'))\nrc = os.system('echo from-a-subprocess')"
        )
        assert result.error is None, result.error
        assert result.output.startswith("kept ['d']\n") and "from-a-subprocess" in result.output
        slow = await sb.execute("x = 1\nwhile True:\n    pass")
        assert slow.timed_out and not slow.crashed
        crashed = await sb.execute("import os\nos._exit(1)")
        assert crashed.crashed
        assert (await sb.execute("import json\nprint(json.dumps(context))")).output == '"alpha beta\\ngamma"\n'


# -- limits, hangs and crashes ---------------------------------------------------------------------


async def test_infinite_loop_times_out_softly_and_variables_survive() -> None:
    async with ReplSandbox(Context(["c"])) as sb:
        await sb.execute("kept = 'yes'")
        procs = _tree(sb.pid or 0)
        result = await sb.execute("n = 0\nwhile n >= 0:\n    n += 1", timeout_s=0.5)
        assert result.timed_out and not result.crashed
        assert result.error is not None and result.error.startswith("step timed out after 0.5s")
        assert (await sb.execute("print(kept, n > 0)")).output == "yes True\n"
        assert _alive(procs) == procs  # the same worker, nothing restarted


async def test_loop_swallowing_the_timeout_is_hard_killed_and_restarted() -> None:
    async with ReplSandbox(Context(["the context"])) as sb:
        await sb.execute("kept = 1")
        procs = _tree(sb.pid or 0)
        # (not `while True:` first in the try: CPython 3.11 then raises the timeout outside the try block)
        code = (
            "n = 0\n"
            "while n >= 0:\n"
            "    try:\n"
            "        while n >= 0:\n"
            "            n += 1\n"
            "    except BaseException:\n"
            "        pass"
        )
        result = await sb.execute(code, timeout_s=0.3)
        assert result.timed_out and result.crashed
        assert "variables were lost" in result.notice
        await _assert_gone(procs)
        assert (await sb.execute("print(len(context))\nprint('kept' in globals())")).output == "11\nFalse\n"


async def test_memory_bomb_is_a_memory_error() -> None:
    async with ReplSandbox(Context(["c"]), limits=SandboxLimits(memory_mb=256)) as sb:
        result = await sb.execute("hog = []\nwhile True:\n    hog.append(bytearray(10**7))", timeout_s=20)
        assert result.crashed or (result.error is not None and "MemoryError" in result.error)
        result = await sb.execute("hog = None\nbig = bytearray(10**12)")
        assert result.error is not None and "MemoryError" in result.error
        assert (await sb.execute("print('fine')")).output == "fine\n"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import os\nos._exit(3)", "exited with code 3"),
        ("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
    ],
    ids=["os_exit", "segfault", "sigkill"],
)
async def test_crash_is_reported_and_the_repl_restarts(code: str, expected: str) -> None:
    async with ReplSandbox(Context(["abc"])) as sb:
        await sb.execute("x = 1")
        procs = _tree(sb.pid or 0)
        result = await sb.execute(code)
        assert result.crashed and not result.timed_out
        assert result.error is not None and expected in result.error
        assert "restarted" in result.notice and "variables were lost" in result.notice
        await _assert_gone(procs)
        assert (await sb.execute("print(context, 'x' in globals())")).output == "abc False\n"


async def test_fork_bomb_is_contained() -> None:
    if "NPROC" not in _mechanisms():
        pytest.skip("RLIMIT_NPROC is not enforced here (worker runs as root); a fork bomb is not safe to run")
    async with ReplSandbox(Context(["c"]), limits=SandboxLimits(max_processes=24)) as sb:
        await sb.execute("import os\nkept = 1")
        baseline = _tree(sb.pid or 0)
        result = await sb.execute("while True:\n    os.fork()", timeout_s=10)
        assert not result.crashed
        assert result.error is not None and "BlockingIOError" in result.error
        assert (await sb.execute("print(kept)")).output == "1\n"
        assert _tree(sb.pid or 0) == baseline  # every forked child is gone


async def test_processes_started_by_a_step_do_not_outlive_it() -> None:
    if "pid namespace" not in _mechanisms():
        pytest.skip("needs a pid namespace")
    async with ReplSandbox(Context(["c"])) as sb:
        await sb.execute("pass")
        baseline = _tree(sb.pid or 0)
        await sb.execute("import subprocess\np = subprocess.Popen(['sleep', '30'], start_new_session=True)")
        assert _tree(sb.pid or 0) == baseline


# -- clean-up ----------------------------------------------------------------------------------------


async def test_aclose_leaves_no_process_and_no_directory() -> None:
    sb = ReplSandbox(Context(["c"]))
    await sb.execute("import subprocess\nx = 1")
    assert sb.pid is not None
    procs = _tree(sb.pid)
    assert len(procs) >= 1
    workspace = sb._workspace
    assert workspace is not None and os.path.isdir(workspace.base)
    await sb.aclose()
    await _assert_gone(procs, within=2.0)
    assert not os.path.exists(workspace.base)
    await sb.aclose()  # idempotent


async def test_cancelled_step_kills_the_worker_at_once_and_the_next_step_restarts() -> None:
    async with ReplSandbox(Context(["c"])) as sb:
        await sb.execute("x = 1")
        procs = _tree(sb.pid or 0)
        with anyio.move_on_after(0.3):
            await sb.execute("import time\ntime.sleep(30)")
        await _assert_gone(procs, within=2.0)
        result = await sb.execute("print('back', 'x' in globals())")
        assert result.output == "back False\n" and not result.crashed


async def test_cancelled_while_waiting_for_a_sub_call() -> None:
    async def never(request: SubCallRequest) -> list[str]:
        await anyio.sleep(60)
        return ["late"]

    async with ReplSandbox(Context(["c"]), on_sub_call=never) as sb:
        await sb.start()
        procs = _tree(sb.pid or 0)
        with anyio.move_on_after(0.3):
            await sb.execute("llm_query('q')")
        await _assert_gone(procs, within=2.0)

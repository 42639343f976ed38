"""One file loader for every entry point: the same project tree gives the same files through the CLI, the
MCP server and the LangChain file tool, and a Python audit hook proves that nothing outside it (and
nothing it skips, binaries aside) is ever opened."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fake_openai import FakeOpenAIServer
from processes import child_env
from recursa import RLM, ContextError, ScriptedLM, load_context
from recursa._exceptions import ContextTooLargeError, PathNotAllowedError
from recursa._files import AllowedRoots, LoadLimits, _read_approved, load_files

SECRET = "OUTSIDE-SECRET-3f9a"

EXPECTED = [
    ".gitignore", ".ignore", "README.md", "docs/guide.md", "src/.gitignore", "src/app.py", "src/keep.log",
]
"""What a user means by the project: its tracked-looking text files."""

EXPECTED_SKIPPED = {
    ".git/": "vcs",
    ".venv/": "virtualenv",
    "env/": "virtualenv",  # any directory holding pyvenv.cfg
    "node_modules/": "dependencies",
    "dist/": "build",
    "pkg.egg-info/": "build",
    "__pycache__/": "cache",
    "secret/": "ignored",  # .gitignore: secret/
    "app.log": "ignored",  # .gitignore: *.log
    "docs/notes.draft": "ignored",  # .ignore: *.draft
    "src/debug.log": "ignored",  # the parent's *.log
    "src/generated/": "ignored",  # the nested .gitignore
    "link_out.txt": "outside",
    "link_dir/": "outside",
    "image.png": "binary",
    "latin1.txt": "not_utf8",
}


# -- the audit hook -------------------------------------------------------------------------------------------

_opened: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], str | bytes | os.PathLike):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only inside `recording_opens`


@contextmanager
def recording_opens() -> Iterator[list[str]]:
    """Every path this process opens meanwhile (``open``, ``io.open``, ``os.open``), in any thread."""
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


HOOKED_CLI = """
import os, sys, json
opened = []
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        opened.append(os.fsdecode(args[0]))
sys.addaudithook(hook)
record = sys.argv.pop(1)
from recursa.cli import main
try:
    main()
finally:
    seen = list(opened)
    with open(record, "w") as f:
        json.dump(seen, f)
"""


def assert_opened_only_wanted(opened: list[str], project: Path, tmp_path: Path) -> None:
    """Nothing outside the project was opened, and inside it only the files loaded, the ignore files and the
    binary and non-UTF-8 files (which must be opened to be told apart from text)."""
    assert opened, "the audit hook saw no open at all"
    real = {os.path.realpath(p) for p in opened}
    outside = (tmp_path / "outside").resolve()
    assert not [p for p in real if Path(p).is_relative_to(outside)], "a file outside the project was opened"
    inside = {Path(p).relative_to(project).as_posix() for p in real if Path(p).is_relative_to(project)}
    allowed = {*EXPECTED, "image.png", "latin1.txt"}
    assert inside <= allowed, f"opened files the loader skips: {sorted(inside - allowed)}"
    assert set(EXPECTED) <= inside
    strays = [p for p in real if Path(p).is_relative_to(tmp_path) and not Path(p).is_relative_to(project)]
    assert not [p for p in strays if not p.endswith(".json")], strays


# -- the project ----------------------------------------------------------------------------------------------


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A real-looking project, and beside it a world-readable secret that must never be opened."""
    root = tmp_path / "project"
    write(root / "README.md", "# demo\nA small service.\n")
    write(root / ".gitignore", "*.log\nsecret/\n")
    write(root / ".ignore", "*.draft\n")
    write(root / "src" / "app.py", "print('serving')\n")
    write(root / "src" / ".gitignore", "generated/\n!keep.log\n")
    write(root / "src" / "keep.log", "kept: a nested .gitignore re-includes it\n")
    write(root / "src" / "debug.log", "ignored by the parent's *.log\n")
    write(root / "src" / "generated" / "schema.py", "GENERATED = True\n")
    write(root / "docs" / "guide.md", "How to run it.\n")
    write(root / "docs" / "notes.draft", "not yet\n")
    write(root / "app.log", "GET / 200\n")
    write(root / "secret" / "token.txt", "sk-not-for-the-model\n")
    write(root / ".venv" / "pyvenv.cfg", "home = /usr/bin\n")
    write(root / ".venv" / "lib" / "site.py", "venv = 1\n")
    write(root / "env" / "pyvenv.cfg", "home = /usr/bin\n")
    write(root / "env" / "lib" / "other.py", "venv = 2\n")
    write(root / "node_modules" / "left-pad" / "index.js", "module.exports = 1\n")
    write(root / "dist" / "bundle.js", "built()\n")
    write(root / "pkg.egg-info" / "PKG-INFO", "Name: pkg\n")
    write(root / "__pycache__" / "app.cpython-311.pyc", b"\x00\x01compiled")
    write(root / ".git" / "config", "[core]\n")
    write(root / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    write(root / "latin1.txt", "caf\xe9".encode("latin-1"))
    outside = tmp_path / "outside"
    write(outside / "secret.txt", SECRET)
    (outside / "secret.txt").chmod(0o644)
    (root / "link_out.txt").symlink_to(outside / "secret.txt")
    (root / "link_dir").symlink_to(outside, target_is_directory=True)
    (root / "alias.md").symlink_to(root / "README.md")  # inside the tree: the file is read once, by its own name
    return root


def skipped_reasons(ctx: Any) -> dict[str, str]:
    return {s.name: s.reason for s in ctx.manifest.skipped}


def names_reply(messages: list[dict[str, str]]) -> str:
    """A root model that lists the documents it was given, then answers with that list."""
    if not any(m["role"] == "assistant" for m in messages):
        return "```repl\nimport json\nnames = json.dumps(sorted(context_names))\nprint(names)\n```"
    return "FINAL_VAR(names)"


# -- the loader itself ----------------------------------------------------------------------------------------


def test_the_loader_reads_what_a_user_means_and_opens_nothing_else(project: Path, tmp_path: Path) -> None:
    with recording_opens() as opened:
        ctx = load_files([project])
    assert ctx.names == EXPECTED
    assert skipped_reasons(ctx) == EXPECTED_SKIPPED
    assert SECRET not in "".join(ctx.documents)
    assert ctx.manifest.counts()["ignored"] == 5
    assert_opened_only_wanted(opened, project, tmp_path)
    assert ctx.manifest.summary().startswith(f"{len(EXPECTED)} file(s), {ctx.total_chars:,} characters; skipped 16 (")


def test_named_escapes_are_refused_before_anything_is_read(project: Path, tmp_path: Path) -> None:
    roots = AllowedRoots([project])
    with recording_opens() as opened:
        for spec in ["link_out.txt", "../outside/secret.txt", str(tmp_path / "outside" / "secret.txt"),
                     "link_dir/secret.txt", "link_dir", "src/../../outside/*.txt"]:
            with pytest.raises(PathNotAllowedError, match="outside the allowed roots") as caught:
                load_files([spec], roots=roots)
            assert caught.value.resolved.startswith(str((tmp_path / "outside").resolve()))
            assert SECRET not in str(caught.value)
    assert not [p for p in opened if "outside" in p]
    with pytest.raises(PathNotAllowedError, match="through a symlink"):
        load_files(["link_out.txt"], roots=roots)
    with pytest.raises(ContextError, match="Path not found: 'missing.txt'"):
        load_files(["missing.txt"], roots=roots)


def test_ignore_files_above_the_directory_named_apply_within_the_root(project: Path) -> None:
    ctx = load_files(["src"], roots=AllowedRoots([project]))
    assert ctx.names == ["src/.gitignore", "src/app.py", "src/keep.log"]
    assert skipped_reasons(ctx) == {"src/debug.log": "ignored", "src/generated/": "ignored"}


def test_include_and_exclude_globs_come_on_top_of_the_ignore_rules(project: Path) -> None:
    assert load_files([project], include=["*.md"]).names == ["README.md", "docs/guide.md"]
    ctx = load_files([project], exclude=["docs/", "*.py"])
    assert ctx.names == [".gitignore", ".ignore", "README.md", "src/.gitignore", "src/keep.log"]
    assert skipped_reasons(ctx)["docs/"] == "excluded" and skipped_reasons(ctx)["src/app.py"] == "excluded"
    # an include glob cannot bring back what the ignore rules or the default skips leave out
    assert load_files([project], include=["*.log", "*.js"]).names == ["src/keep.log"]


def test_globs_in_paths_walk_only_as_deep_as_they_say(project: Path) -> None:
    assert load_files([str(project / "*.md")]).names == ["README.md"]
    assert load_files([str(project / "**" / "*.py")]).names == ["src/app.py"]
    with pytest.raises(ContextError, match="No file matches"):
        load_files([str(project / "*.nothing")])


def test_a_file_named_directly_is_read_even_where_a_walk_would_skip_it(project: Path) -> None:
    ctx = load_files([project / "dist" / "bundle.js"])
    assert ctx.value == "built()\n" and not ctx.as_list


def test_special_files_are_skipped_without_being_opened(project: Path) -> None:
    os.mkfifo(project / "pipe")  # opening a FIFO would block the loader
    ctx = load_files([project])
    assert skipped_reasons(ctx)["pipe"] == "special"


def test_a_file_swapped_for_a_symlink_after_the_check_is_not_read(project: Path, tmp_path: Path) -> None:
    target = project / "docs" / "guide.md"
    approved = target.stat()
    target.unlink()
    target.symlink_to(tmp_path / "outside" / "secret.txt")
    with recording_opens() as opened:
        assert _read_approved(target, approved, 1_000) is None  # O_NOFOLLOW: the open itself fails
    assert opened == [str(target)]
    (project / "docs" / "new.md").write_text("a different file in its place")  # a new inode, moved over it
    os.replace(project / "docs" / "new.md", target)
    assert _read_approved(target, approved, 1_000) is None  # not the inode that was approved


def test_size_limits_fail_before_reading_and_name_the_biggest_files(project: Path) -> None:
    write(project / "data" / "dump.sql", "x" * 5_000)
    write(project / "data" / "small.sql", "y" * 2_000)
    write(project / "model.bin", b"\x00" * 9_000)  # binary: skipped, never a reason to refuse
    with recording_opens() as opened:
        with pytest.raises(ContextTooLargeError, match=r"over the 4.9 KiB limit for one file: data/dump.sql"):
            load_files([project], limits=LoadLimits(max_file_bytes=4_999))
    # only the head of the file over the limit was read (to tell text from binary), nothing else
    assert not [p for p in opened if p.endswith(("small.sql", ".md", ".py"))], "nothing is read before the check"
    with pytest.raises(ContextTooLargeError, match=r"over the 6.8 KiB limit; the biggest: data/dump.sql") as caught:
        load_files([project], limits=LoadLimits(max_total_bytes=7_000))
    assert caught.value.biggest[0] == ("data/dump.sql", 5_000) and caught.value.limit == 7_000
    with pytest.raises(ContextTooLargeError, match="more than 3 files"):
        load_files([project], limits=LoadLimits(max_files=3))
    ctx = load_files([project], limits=LoadLimits(max_file_bytes=6_000, max_total_bytes=20_000))
    assert "data/dump.sql" in ctx.names and skipped_reasons(ctx)["model.bin"] == "binary"


def test_load_context_of_a_path_uses_the_same_loader(project: Path) -> None:
    ctx = load_context(project)
    assert ctx.names == EXPECTED and ctx.manifest is not None
    assert ctx.describe()["manifest"]["skipped_counts"]["ignored"] == 5


# -- the same set through every entry point -------------------------------------------------------------------


def test_cli_loads_the_same_files_prints_a_summary_and_opens_nothing_outside(project: Path, tmp_path: Path) -> None:
    record = tmp_path / "opened.json"
    trace = tmp_path / "trace.json"
    env = child_env()
    with FakeOpenAIServer(responder=lambda request: names_reply(request["messages"]), models={"m"}) as server:
        proc = subprocess.run(
            [sys.executable, "-c", HOOKED_CLI, str(record), "ask", "Which files?", "--context", ".", "--model", "m",
             "--base-url", server.base_url, "--api-key", "sk-test", "--json", "--trace", str(trace)],
            capture_output=True, text=True, timeout=300, cwd=project, env=env,
        )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(json.loads(proc.stdout)["answer"]) == sorted(EXPECTED)
    summary = [line for line in proc.stderr.splitlines() if line.startswith("recursa: context: ")]
    assert summary == [
        f"recursa: context: {len(EXPECTED)} file(s), {sum(len((project / n).read_text()) for n in EXPECTED):,} "
        "characters; skipped 16 (5 ignored by .gitignore/.ignore, 2 virtualenv, 2 build output, "
        "2 symlink out of the allowed directories, 1 version control, 1 cache, 1 node_modules, 1 binary, "
        "1 not UTF-8)"
    ]
    started = next(json.loads(line) for line in trace.read_text().splitlines() if '"run_started"' in line)
    manifest = started["context"]["manifest"]
    assert {s["name"]: s["reason"] for s in manifest["skipped"]} == EXPECTED_SKIPPED
    assert [f["name"] for f in manifest["files"]] == EXPECTED
    assert_opened_only_wanted(json.loads(record.read_text()), project, tmp_path)
    assert SECRET not in proc.stdout + proc.stderr + trace.read_text()


def test_mcp_server_loads_the_same_files_and_opens_nothing_outside(project: Path, tmp_path: Path) -> None:
    mcp = pytest.importorskip("mcp", reason="the MCP server needs pip install 'recursa[mcp]'")
    if not hasattr(mcp, "Client"):
        pytest.skip("drives the server with the mcp 2.x client: pip install --upgrade 'recursa[mcp]'")
    import anyio
    from recursa.mcp_server import create_server

    lm = ScriptedLM(names_reply)
    server = create_server(roots=[project], root=lm, use_client_roots=False)

    async def main() -> tuple[Any, Any, Any, Any]:
        async with mcp.Client(server) as client:
            answered = await client.call_tool("rlm_answer", {"question": "Which files?", "paths": ["."]})
            loaded = await client.call_tool("load_context", {"paths": ["."]})
            cid = loaded.structured_content["context_id"]
            resource = await client.read_resource(f"recursa://context/{cid}")
            refused = await client.call_tool("rlm_answer", {"question": "q", "paths": ["link_out.txt"]})
            await client.call_tool("close_context", {"context_id": cid})
            return answered, loaded, resource, refused

    with recording_opens() as opened:
        answered, loaded, resource, refused = anyio.run(main)
    assert not answered.is_error, answered.content
    assert json.loads(answered.structured_content["answer"]) == sorted(EXPECTED)
    assert loaded.structured_content["names"] == EXPECTED
    assert sorted(loaded.structured_content["skipped"]) == sorted(
        f"{name} ({reason})" for name, reason in _worded(EXPECTED_SKIPPED).items())
    manifest = json.loads(resource.contents[0].text)
    assert {s["name"]: s["reason"] for s in manifest["files"]["skipped"]} == EXPECTED_SKIPPED
    assert manifest["files"]["skipped_counts"]["ignored"] == 5
    assert refused.is_error and "through a symlink" in refused.content[0].text
    assert SECRET not in json.dumps(lm.calls)
    assert_opened_only_wanted(opened, project, tmp_path)


def test_langchain_file_tool_loads_the_same_files_and_opens_nothing_outside(project: Path, tmp_path: Path) -> None:
    pytest.importorskip("langchain_core", reason="the LangChain adapter needs pip install 'recursa[langgraph]'")
    from recursa.integrations.langchain import create_rlm_file_tool

    lm = ScriptedLM(names_reply)
    tool = create_rlm_file_tool(RLM(lm), base_dir=project)
    with recording_opens() as opened:
        answer = tool.invoke({"question": "Which files?", "paths": ["."]})
        refused = tool.invoke({"question": "q", "paths": ["link_dir/secret.txt"]})
        globbed = tool.invoke({"question": "q", "paths": ["../outside/*.txt"]})
    assert json.loads(answer) == sorted(EXPECTED)
    assert refused.startswith("recursa could not answer: PathNotAllowedError") and SECRET not in refused
    assert globbed.startswith("recursa could not answer: PathNotAllowedError")
    assert SECRET not in json.dumps(lm.calls)
    assert_opened_only_wanted(opened, project, tmp_path)


def _worded(reasons: dict[str, str]) -> dict[str, str]:
    from recursa._context import REASONS

    return {name: REASONS[reason] for name, reason in reasons.items()}


def test_the_secret_really_is_world_readable(project: Path, tmp_path: Path) -> None:
    """The refusals above are the loader's doing, not file permissions."""
    secret = tmp_path / "outside" / "secret.txt"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o644 and secret.read_text() == SECRET


def test_secret_files_are_left_out_of_a_walk_but_read_when_named(tmp_path: Path) -> None:
    tree = tmp_path / "app"
    write(tree / "main.py", "print('hi')\n")
    write(tree / ".env", "OPENAI_API_KEY=sk-live-123\n")
    write(tree / "config" / ".env.production", "DB_PASSWORD=hunter2\n")
    write(tree / ".env.example", "OPENAI_API_KEY=\n")
    write(tree / "deploy.pem", "-----BEGIN PRIVATE KEY-----\n")
    ctx = load_files([tree])
    text = "".join(ctx.documents)
    assert "sk-live-123" not in text and "hunter2" not in text and "PRIVATE KEY" not in text
    assert sorted(ctx.names) == [".env.example", "main.py"]
    assert skipped_reasons(ctx) == {".env": "secret", "config/.env.production": "secret", "deploy.pem": "secret"}
    assert "sk-live-123" in load_files([tree / ".env"]).documents[0]

"""Loading contexts from every kind of source, and the errors for bad ones."""

import io
import sys
from pathlib import Path

import pytest
from recursa import Context, ContextError, load_context
from recursa._files import load_paths


def test_string_and_bytes_and_list() -> None:
    assert load_context("hello").value == "hello"
    assert load_context("héllo".encode()).value == "héllo"
    ctx = load_context(["a", "bb"])
    assert ctx.value == ["a", "bb"] and ctx.as_list and ctx.total_chars == 3


def test_directory_recursive_with_globs(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub" / "b.log").write_text("beta")
    (tmp_path / "sub" / "c.txt").write_text("gamma")
    ctx = load_context(tmp_path)
    assert ctx.names == ["a.txt", "sub/b.log", "sub/c.txt"] and ctx.as_list
    assert load_context(tmp_path, include=["*.txt"]).names == ["a.txt", "sub/c.txt"]
    assert load_context(tmp_path, exclude=["sub/*"]).names == ["a.txt"]


def test_glob_and_file(tmp_path: Path) -> None:
    (tmp_path / "x.md").write_text("one")
    (tmp_path / "y.md").write_text("two")
    ctx = load_paths([str(tmp_path / "*.md")])
    assert ctx.value == ["one", "two"]
    single = load_paths([str(tmp_path / "x.md")])
    assert single.value == "one" and not single.as_list


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin")))
    assert load_paths(["-"]).value == "from stdin"


def test_binary_and_undecodable_files_are_skipped_with_their_reason(tmp_path: Path, capsys) -> None:
    (tmp_path / "good.txt").write_text("text")
    (tmp_path / "img.png").write_bytes(b"\x89PNG\x00\x00\x01")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    ctx = load_context(tmp_path)
    assert ctx.names == ["good.txt"]
    assert sorted(ctx.skipped) == ["img.png (binary)", "latin.txt (not UTF-8)"]
    assert ctx.manifest is not None and ctx.manifest.counts() == {"binary": 1, "not_utf8": 1}
    assert capsys.readouterr().err == "", "the library prints nothing; the CLI shows the summary"


def test_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="not found"):
        load_context(tmp_path / "missing.txt")
    with pytest.raises(ContextError, match="empty"):
        load_context("")
    (tmp_path / "bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ContextError, match=r"empty \(skipped 1: bin \(binary\)\)"):
        load_context(tmp_path)
    with pytest.raises(ContextError, match="binary"):
        load_context(b"\x00\x00abc")
    with pytest.raises(ContextError, match="No file matches"):
        load_paths([str(tmp_path / "*.nothing")])


def test_describe_shows_metadata_not_the_text() -> None:
    ctx = Context(["x" * 10_000, "y" * 5], names=["a", "b"])
    info = ctx.describe(preview_chars=100)
    assert info["total_chars"] == 10_005 and info["lengths"] == [10_000, 5] and len(info["preview"]) == 100
    assert "manifest" not in info  # texts given directly have no file manifest


def test_describe_carries_the_file_manifest_for_the_trace(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "x.js").write_text("js")
    manifest = load_context(tmp_path).describe(200)["manifest"]
    assert [f["name"] for f in manifest["files"]] == ["a.txt"] and manifest["files"][0]["chars"] == 5
    assert manifest["skipped"] == [{"name": "node_modules/", "reason": "dependencies"}]
    assert manifest["skipped_counts"] == {"dependencies": 1} and manifest["roots"] == [str(tmp_path.resolve())]

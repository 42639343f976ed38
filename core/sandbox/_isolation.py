"""Host-side preparation of a worker: its scrubbed environment, its files, and a probe of what the
kernel lets it do. The isolation itself happens inside the worker (the ``_worker`` package)."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from .._context import Context
from ._api import SandboxLimits
from ._worker._protocol import HEADER, decode

__all__ = ["Workspace", "probe_mechanisms", "read_paths", "worker_command", "worker_env"]

NOBODY = 65534
WORKER_PACKAGE = Path(__file__).with_name("_worker")
"""Run as a directory: ``python -I -S DIR`` puts DIR on ``sys.path`` and runs its ``__main__``."""
HOST_MECHANISMS = ["scrubbed environment (no API keys)"]

_ENV_ALLOW = {"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "PYTHONHASHSEED"}
_SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION|^OPENAI_|^ANTHROPIC_|^AWS_|^AZURE_|^GOOGLE_|^HF_",
    re.IGNORECASE,
)
_USE_NAMESPACES = True
"""Tests switch this off to exercise the fallback a kernel without user namespaces gets."""
_USE_LANDLOCK = True
"""Tests switch this off to exercise the minimal root in a mount namespace that a kernel without Landlock gets."""


def worker_env(workdir: str, extra: Mapping[str, str]) -> dict[str, str]:
    """A short allow-list of the host's environment plus ``extra``; anything that looks like a secret is refused."""
    for name in extra:
        if _SECRET_NAME.search(name):
            raise ValueError(f"SandboxLimits.extra_env may not carry secrets, and {name!r} looks like one; drop it.")
    env = {
        k: v for k, v in os.environ.items() if (k in _ENV_ALLOW or k.startswith("LC_")) and not _SECRET_NAME.search(k)
    }
    env.setdefault("PATH", os.defpath)
    env.update(HOME=workdir, TMPDIR=workdir)
    env.update(extra)
    return env


def worker_command(config_path: str) -> list[str]:
    """``-I``: ignore PYTHON* variables and the user's site; ``-S``: skip site and its .pth files, which cost
    ~100 ms per start (the site-packages directories are added from the config instead)."""
    return [sys.executable or "python3", "-I", "-S", str(WORKER_PACKAGE), config_path]


@functools.cache
def _site_dirs() -> tuple[str, ...]:
    """The interpreter's site-packages (the venv's, in a venv), so model code can import numpy and co."""
    try:
        dirs = site.getsitepackages()
    except AttributeError:  # some embedded or frozen interpreters
        dirs = [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")]
    return tuple(d for d in dirs if os.path.isdir(d))


_SYSTEM_READ_PATHS = (
    # shared libraries, the dynamic loader and its cache, and the programs model code may run (os.system, subprocess)
    "/lib",
    "/lib32",
    "/lib64",
    "/usr/lib",
    "/usr/lib32",
    "/usr/lib64",
    "/usr/local/lib",
    "/bin",
    "/usr/bin",
    "/usr/local/bin",
    "/etc/ld.so.cache",
    # data the standard library or libc reads at run time: time zones (time, zoneinfo), locale aliases,
    # mime types (mimetypes), OpenSSL's config (hashlib), the CPU count (os.cpu_count)
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/usr/share/locale/locale.alias",
    "/etc/mime.types",
    "/etc/ssl/openssl.cnf",
    "/sys/devices/system/cpu",
    "/dev/null",
    "/dev/zero",
    "/dev/random",
    "/dev/urandom",
)
"""What a confined worker may read besides the Python installation, its work dir and (before confinement) its
context. Not /etc (passwd, hosts, ...), not /home or /root, not /tmp, not the project checkout."""


@functools.cache
def _python_read_paths() -> tuple[str, ...]:
    """The Python installation the worker runs: its executable, standard library (with lib-dynload), libpython,
    the venv's pyvenv.cfg and site-packages. Never the checkout of an editable install: the worker runs with
    ``-I -S``, so no ``.pth`` file puts it on ``sys.path``, and the worker takes its own directory off again."""
    paths = [sys.executable, os.path.realpath(sys.executable)] if sys.executable else []
    for key in ("stdlib", "platstdlib"):
        for prefix in {sys.prefix, sys.base_prefix}:
            path = sysconfig.get_path(key, vars={"base": prefix, "platbase": prefix, "installed_base": prefix})
            if path:
                paths.append(path)
    libdir, library = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if libdir and library and not library.endswith(".a"):
        paths.extend(os.path.join(libdir, name) for name in (library, sysconfig.get_config_var("INSTSONAME") or ""))
    paths.append(os.path.join(sys.prefix, "pyvenv.cfg"))
    paths.extend(_site_dirs())
    return tuple(dict.fromkeys(p for p in paths if p and os.path.exists(p)))


def read_paths() -> list[str]:
    """Every path a confined worker may read below (directories) or read (files), besides its work dir."""
    return [p for p in dict.fromkeys((*_python_read_paths(), *_SYSTEM_READ_PATHS)) if os.path.exists(p)]


@dataclass
class Workspace:
    """The temporary directory of one sandbox: the context file, the worker's config and its work dir."""

    base: str
    work: str
    config_path: str
    log_path: str
    context_bytes: int

    @classmethod
    def create(cls, context: Context, limits: SandboxLimits, *, sub_calls: bool, probe: bool = False) -> Workspace:
        """Write the context once (UTF-8, concatenated, with a span per document) for every worker of this sandbox.

        Blocking; the host calls it in a thread. Root hands the work dir to uid 65534, which the worker drops to;
        the context and config stay root-only because the worker opens them before dropping privileges.
        """
        base = tempfile.mkdtemp(prefix="recursa-")
        try:
            work = os.path.join(base, "work")
            os.mkdir(work, 0o700)
            if os.geteuid() == 0:
                os.chmod(base, 0o711)
                os.chown(work, NOBODY, NOBODY)
            context_path = os.path.join(base, "context.txt")
            spans = context.write_utf8(context_path)  # large files are copied file to file, never read into the host
            config = {
                "context_path": context_path,
                "spans": spans,
                "names": list(context.names),
                "metadata": list(context.metadata),
                "as_list": bool(context.as_list) or len(context.parts) != 1,
                "workdir": work,
                "site_dirs": list(_site_dirs()),
                "read_paths": read_paths(),
                "limits": {k: v for k, v in asdict(limits).items() if k != "extra_env"},
                "sub_calls": sub_calls,
                "probe": probe,
                "namespaces": _USE_NAMESPACES,
                "landlock": _USE_LANDLOCK,
            }
            config_path = os.path.join(base, "config.json")
            fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "w", encoding="utf-8") as f:
                json.dump(config, f, default=str)
            return cls(base, work, config_path, os.path.join(base, "worker.log"), spans[-1][1] if spans else 0)
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise

    def log_tail(self, chars: int = 2000) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-chars:].strip()
        except OSError:
            return ""

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


@functools.cache
def probe_mechanisms() -> tuple[str, ...]:
    """Start a worker once with a tiny context and ask which protections it managed to set up."""
    workspace = Workspace.create(Context(["probe"]), SandboxLimits(), sub_calls=False, probe=True)
    try:
        with open(workspace.log_path, "ab") as log:
            proc = subprocess.run(
                worker_command(workspace.config_path),
                input=b"",
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=workspace.work,
                env=worker_env(workspace.work, {}),
                start_new_session=True,
                timeout=60,
                check=False,
            )
        data = proc.stdout
        if len(data) < HEADER.size:
            return ("unavailable: the worker did not start (" + (workspace.log_tail(300) or "no output") + ")",)
        (size,) = HEADER.unpack(data[: HEADER.size])
        message = decode(data[HEADER.size : HEADER.size + size])
        return (*message.get("mechanisms", []), *HOST_MECHANISMS)
    finally:
        workspace.remove()

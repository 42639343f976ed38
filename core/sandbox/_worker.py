"""The REPL worker: a standalone, stdlib-only script the host starts as ``python -I -S _worker.py CONFIG``.

It never imports recursa, so nothing of the host (and none of its secrets) is loaded into the process
that runs model code. Where the kernel allows it, the worker arranges itself in three processes::

    launcher   the host's child; drops root to uid 65534, unshares user/mount/net/pid/ipc namespaces
     └─ init   pid 1 of the new pid namespace: mounts a private /proc, reaps, and when it dies the
        │      kernel kills every process of the namespace (no orphans, whatever model code forks)
        └─ repl  loads the context, applies rlimits, no_new_privs and Landlock, then runs model code

Without namespaces the launcher runs the REPL itself and reports the weaker protections honestly.
The host talks to the REPL over the launcher's stdin/stdout, which the REPL moves to private fds before
any model code runs; fds 1 and 2 then point at a memfd whose content is added to each step's output.
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import fcntl
import io
import json
import linecache
import mmap
import os
import resource
import select
import signal
import stat
import struct
import sys
import threading
import time
import traceback

HEADER = struct.Struct(">I")
OUTPUT_CAP = 1_000_000
"""Characters of output kept per step; the rest is counted and reported as dropped."""
ERROR_CAP = 20_000
NOBODY = 65534

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 0x4000, 1 << 18
MS_REMOUNT, MS_BIND, MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 32, 4096, 1024, 2048, 1 << 21
ST_RELATIME, MNT_DETACH = 4096, 2
PR_SET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 3, 4, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "loongarch64": 41, "ppc64le": 203, "s390x": 217}
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446

_WORKER_FILE = __file__
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


# --------------------------------------------------------------------------------------------------
# wire format (mirrors recursa/sandbox/_protocol.py)


def _encode(message: dict) -> bytes:
    text = json.dumps(message, ensure_ascii=False, default=str)
    try:
        payload = text.encode("utf-8")
    except UnicodeEncodeError:
        payload = text.encode("utf-8", "replace")
    return HEADER.pack(len(payload)) + payload


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            return None
        got += k
    return bytes(buf)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --------------------------------------------------------------------------------------------------
# launcher and init


def main(argv: list[str]) -> None:
    with open(argv[1], encoding="utf-8") as f:
        cfg = json.load(f)
    sys.path.extend(d for d in cfg.get("site_dirs", ()) if d not in sys.path)  # we run with -S
    ctx_fd = os.open(cfg["context_path"], os.O_RDONLY | os.O_CLOEXEC)  # opened before dropping privileges
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)

    info: dict = {"mechanisms": ["separate process (own session)"], "unprivileged": os.geteuid() != 0}
    # Handles on everything model code may read, taken while we can still reach it (as root: /root/.pyenv...):
    # rules for Landlock, or the mounts of a minimal root where the kernel has no Landlock.
    readable = [*cfg.get("read_paths", ()), *sys.path]
    minimal_root = False
    if cfg.get("landlock", True) and _landlock_abi() > 0:
        info["read_roots"] = _open_read_roots(readable)
    elif cfg.get("namespaces", True):
        minimal_root = True
    path_fds: dict[str, int] = {}
    if os.geteuid() == 0:
        if minimal_root:  # root builds it now, while it can reach /root/.pyenv and the like
            minimal_root = False
            try:
                _check(_libc.unshare(ctypes.c_int(CLONE_NEWNS)), "unshare the mount namespace")
                _enter_minimal_root(cfg["workdir"], readable, proc="mount")
                info["minimal_root"] = True
            except OSError as exc:
                info["no_root"] = str(exc)
        if not info.get("minimal_root"):
            path_fds = _open_path_fds()
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            info["unprivileged"] = True
            info["mechanisms"].append(f"uid/gid {NOBODY} (dropped from root)")
        except OSError as exc:
            info["mechanisms"].append(f"still root: dropping to uid {NOBODY} failed ({exc.strerror})")
    ids = os.geteuid(), os.getegid()  # in the new user namespace they read as the overflow id until mapped
    flags = _unshare() if cfg.get("namespaces", True) else 0
    info["flags"] = flags
    if minimal_root:  # not root: init builds it in the new user and mount namespaces
        try:
            if not flags & CLONE_NEWNS:
                raise OSError(0, "no mount namespace")
            _map_own_ids(*ids)  # so that we may create the mount points of the minimal root in a tmpfs
            info["build_root"] = readable
        except OSError as exc:
            info["no_root"] = exc.strerror
    if flags & CLONE_NEWUSER:
        info["mechanisms"].append("user namespace")
    if flags & CLONE_NEWNET:
        info["mechanisms"].append("network namespace (no network)")
    if flags & CLONE_NEWIPC:
        info["mechanisms"].append("ipc namespace")

    if not flags & CLONE_NEWPID:
        _run_repl(cfg, ctx_fd, proto_in, proto_out, info, path_fds)
        return

    init_pid: int | None = None

    def on_term(signum: int, frame: object) -> None:
        # The host asks us to stop: killing the namespace's init kills every process in it.
        if init_pid:
            os.kill(init_pid, signal.SIGKILL)
        else:
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    init_pid = os.fork()
    if init_pid == 0:
        _run_init(cfg, ctx_fd, proto_in, proto_out, info, path_fds)
    for fd in (ctx_fd, proto_in, proto_out, *path_fds.values()):
        os.close(fd)
    for _, fd, _ in info.get("read_roots", ()):
        os.close(fd)
    while True:
        try:
            _, status = os.waitpid(init_pid, 0)
            break
        except ChildProcessError:
            os._exit(1)
    os._exit(_exit_code(status))


def _exit_code(status: int) -> int:
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status) & 0xFF


def _open_path_fds() -> dict[str, int]:
    """Keep a handle on every import directory: after the drop to uid 65534 an ancestor such as /root
    may be closed to us, but /proc/self/fd/N still reaches the directory itself."""
    fds = {}
    for entry in dict.fromkeys(p for p in sys.path if p):
        try:
            fds[entry] = os.open(entry, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            pass
    return fds


def _open_read_roots(paths: list[str]) -> list[tuple[str, int, bool]]:
    """(path, O_PATH fd of what it resolves to, is a directory) for every path that exists. "/" is never one."""
    roots = []
    seen: set[tuple[int, int]] = set()
    for path in dict.fromkeys(p for p in paths if p and os.path.isabs(p)):
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) in seen or os.path.realpath(path) == "/":
            os.close(fd)
            continue
        seen.add((st.st_dev, st.st_ino))
        roots.append((path, fd, stat.S_ISDIR(st.st_mode)))
    return roots


def _landlock_abi() -> int:
    return _libc.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1))


def _plan_root(paths: list[str], workdir: str) -> tuple[dict[str, str], list[tuple[str, bool, bool]]]:
    """What a minimal root needs: the symlinks on the way to each path (recreated as they are) and the real
    paths to bind-mount, as (path, is a directory, writable). Paths below another bound directory are left
    out. Only the work dir and the /dev files are writable."""
    links: dict[str, str] = {}
    resolved: dict[str, bool] = {}
    for start, writable in [*((p, p.startswith("/dev/")) for p in paths if p and os.path.isabs(p)), (workdir, True)]:
        path = os.path.normpath(start)
        for _ in range(40):
            link = _first_link(path)
            if link is None:
                break
            at, rest = link
            links[at] = os.readlink(at)
            path = os.path.normpath(os.path.join(os.path.dirname(at), links[at], rest))
        else:
            continue  # a symlink loop
        if path != "/" and os.path.exists(path):
            resolved[path] = resolved.get(path, False) or writable
    mounts: list[tuple[str, bool, bool]] = []
    for path in sorted(resolved, key=lambda p: (p.count("/"), p)):
        if not any(d and path.startswith(m + "/") for m, d, _ in mounts):
            mounts.append((path, os.path.isdir(path), resolved[path]))
    return links, mounts


def _first_link(path: str) -> tuple[str, str] | None:
    """The first component of ``path`` that is a symlink, and what follows it."""
    parts = path.strip("/").split("/")
    for i in range(len(parts)):
        at = "/" + "/".join(parts[: i + 1])
        if os.path.islink(at):
            return at, "/".join(parts[i + 1 :])
    return None


def _map_own_ids(uid: int, gid: int) -> None:
    """Map our own uid/gid in the new user namespace (files we create in a tmpfs need an owner it knows).
    An undumpable process (after setuid) finds /proc/self/uid_map owned by root: be dumpable briefly."""
    dumpable = _libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    try:
        for name, text in (("setgroups", "deny"), ("gid_map", f"{gid} {gid} 1"), ("uid_map", f"{uid} {uid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    finally:
        _libc.prctl(PR_SET_DUMPABLE, max(dumpable, 0), 0, 0, 0)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    args = [None if x is None else os.fsencode(x) for x in (source, target, fstype)]
    _check(
        _libc.mount(args[0], args[1], args[2], ctypes.c_ulong(flags), None if data is None else data.encode()),
        f"mount {target}",
    )


def _enter_minimal_root(workdir: str, readable: list[str], *, proc: str | None) -> None:
    """pivot_root into a tmpfs holding only read-only binds of ``readable`` (the Python installation, system
    libraries), the work dir, a few /dev files and a /proc (``proc``: "mount" a new one, which init covers with
    the pid namespace's own, or "bind" init's); the old root is detached, so nothing else on the machine can be
    named any more. Needs a mount namespace of our own; whoever calls this must be able to reach every path."""
    links, mounts = _plan_root(readable, workdir)
    _mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing we mount may propagate to the host
    new = os.path.dirname(workdir)  # any directory will do as the mount point; the workspace's is ours
    sources = [os.open(path, os.O_PATH | os.O_CLOEXEC) for path, _, _ in mounts]  # the work dir is under `new`
    try:
        _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    except OSError:
        for fd in sources:
            os.close(fd)
        raise
    skeleton = [new]  # directories we make: traverse-only, so that no one lists /, /root or /home/you
    try:
        bound = [m for m, d, _ in mounts if d]
        for path, target in links.items():
            if any(path.startswith(m + "/") for m in bound):
                continue  # it is there already, inside a bound directory
            _makedirs(new, os.path.dirname(path), skeleton)
            os.symlink(target, new + path)
        for (path, is_dir, writable), fd in zip(mounts, sources, strict=True):
            dst = new + path
            _makedirs(new, path if is_dir else os.path.dirname(path), skeleton)
            if is_dir and dst in skeleton:
                skeleton.remove(dst)  # a mount point: the bind's own directory shows
            if not is_dir:
                os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            _mount(f"/proc/self/fd/{fd}", dst, None, MS_BIND | MS_REC)
            if not writable:
                _remount_read_only(dst)
        if proc:
            _makedirs(new, "/proc", [])
            if proc == "mount":
                _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            else:
                _mount("/proc", new + "/proc", None, MS_BIND | MS_REC)
        for path in skeleton:
            os.chmod(path, 0o111)
        number = SYS_PIVOT_ROOT.get(os.uname().machine)
        if number is None:
            raise OSError(0, f"pivot_root: unknown system call number on {os.uname().machine}")
        os.chdir(new)
        _check(_libc.syscall(ctypes.c_long(number), b".", b"."), "pivot_root")
    except BaseException:
        _libc.umount2(os.fsencode(new), MNT_DETACH)
        os.chdir(workdir)
        raise
    finally:
        for fd in sources:
            os.close(fd)
    _check(_libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")
    _remount_read_only("/")
    os.chdir(workdir)


def _makedirs(new: str, path: str, made: list[str]) -> None:
    """``new + path`` and its missing parents, noted in ``made``."""
    at = new
    for part in path.strip("/").split("/"):
        at = os.path.join(at, part)
        if not os.path.lexists(at):
            os.mkdir(at, 0o755)
            made.append(at)


def _remount_read_only(path: str) -> None:
    """Keep the flags a less privileged mount namespace may not clear (nosuid, nodev, noexec, atime)."""
    flags = os.statvfs(path).f_flag
    keep = flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep | (MS_RELATIME if flags & ST_RELATIME else 0))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> None:
    """Give up the capabilities unshare granted in the user namespace: model code may not remount anything."""
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data), "capset")


def _unshare() -> int:
    base = CLONE_NEWUSER | CLONE_NEWNET
    for flags in (
        base | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC,
        base | CLONE_NEWPID | CLONE_NEWIPC,
        base | CLONE_NEWPID,
        base,
    ):
        if _libc.unshare(ctypes.c_int(flags)) == 0:
            return flags
    return 0


def _run_init(cfg: dict, ctx_fd: int, proto_in: int, proto_out: int, info: dict, path_fds: dict) -> None:
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)  # as pid 1, default-handled signals from inside are ignored
        os.setsid()
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # launcher gone -> namespace gone
        info["mechanisms"].append("pid namespace (killing its init kills every descendant)")
        if info["flags"] & CLONE_NEWNS:
            try:
                _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
                _check(_libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount proc")
                info["mechanisms"].append("mount namespace with a private /proc (host processes invisible)")
                info["private_proc"] = True
            except OSError:
                pass
        readable = info.pop("build_root", None)
        if readable is not None:
            try:
                _enter_minimal_root(cfg["workdir"], readable, proc="bind" if info.get("private_proc") else None)
                info["minimal_root"] = True
            except OSError as exc:
                info["no_root"] = str(exc)
        repl_pid = os.fork()
        if repl_pid == 0:
            _run_repl(cfg, ctx_fd, proto_in, proto_out, info, path_fds)
            os._exit(0)
        for fd in (ctx_fd, proto_in, proto_out, *path_fds.values(), *(r[1] for r in info.get("read_roots", ()))):
            os.close(fd)
        while True:
            pid, status = os.wait()
            if pid == repl_pid:
                os._exit(_exit_code(status))
    except BaseException:
        traceback.print_exc()
        os._exit(70)


# --------------------------------------------------------------------------------------------------
# the REPL process: set-up


def _run_repl(cfg: dict, ctx_fd: int, proto_in: int, proto_out: int, info: dict, path_fds: dict) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too-big writes fail with EFBIG instead of killing
    mechanisms: list[str] = info["mechanisms"]
    pidns = bool(info["flags"] & CLONE_NEWPID)

    documents = _load_documents(cfg, ctx_fd)
    ctx_bytes = sum(sys.getsizeof(d) for d in documents)

    capture_fd = os.memfd_create("recursa-output", os.MFD_CLOEXEC)
    fcntl.fcntl(capture_fd, fcntl.F_SETFL, fcntl.fcntl(capture_fd, fcntl.F_GETFL) | os.O_APPEND)
    os.dup2(capture_fd, 1)
    os.dup2(capture_fd, 2)

    if info.get("minimal_root"):
        for fd in path_fds.values():  # handles on the old root: model code must not get one
            os.close(fd)
        _drop_capabilities()
        mechanisms.append(
            "minimal root in a mount namespace (reads: Python installation, system libraries, work dir; context "
            "loaded before; writes: work dir only)"
        )
    elif path_fds:
        _reroute_import_paths(path_fds)
    limits = cfg["limits"]
    mechanisms.append(_apply_rlimits(limits, ctx_bytes, enforce_nproc=info["unprivileged"]))
    try:
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        mechanisms.append("no_new_privs")
    except OSError:
        pass
    read_roots = info.pop("read_roots", None)
    if read_roots is not None:  # the kernel has Landlock
        if info.get("private_proc"):  # only the sandbox's own processes are in it
            read_roots.append(("/proc", os.open("/proc", os.O_PATH | os.O_CLOEXEC), True))
        try:
            mechanisms.append(_landlock(cfg["workdir"], read_roots))
        except OSError as exc:
            mechanisms.append(f"reads not confined (Landlock failed: {exc}; weaker: world-readable files are readable)")
        finally:
            for _, fd, _ in read_roots:
                os.close(fd)
    elif not info.get("minimal_root"):
        why = info.get("no_root") or "neither Landlock nor a private root is available"
        mechanisms.append(f"reads not confined ({why}; weaker: world-readable files are readable)")
    if not info["flags"] & CLONE_NEWNET:
        sys.addaudithook(_refuse_network)
        mechanisms.append("audit hook refusing sockets (weaker: native code and subprocesses bypass it)")

    host = _HostLink(proto_in, proto_out, enabled=cfg["sub_calls"])
    if cfg.get("probe"):
        host.send({"op": "ready", "mechanisms": mechanisms, "pid_namespace": pidns})
        os._exit(0)
    repl = _Repl(cfg, documents, host, capture_fd, pidns)
    del documents
    host.start()
    host.send({"op": "ready", "mechanisms": mechanisms, "pid_namespace": pidns})
    repl.serve()


def _load_documents(cfg: dict, fd: int) -> list[str]:
    """Decode every document straight from a read-only mapping: one copy of the text, in the str objects."""
    spans = cfg["spans"]
    size = os.fstat(fd).st_size
    documents = []
    if size:
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mm, memoryview(mm) as view:
            for start, end in spans:
                with view[start:end] as part:
                    documents.append(str(part, "utf-8", "surrogatepass"))
    else:
        documents = ["" for _ in spans]
    os.close(fd)
    return documents


def _reroute_import_paths(path_fds: dict[str, int]) -> None:
    """Point unreadable import directories at their pre-opened handles so ``import`` keeps working."""
    reroute = {}
    for entry, fd in path_fds.items():
        if os.access(entry, os.R_OK | os.X_OK):
            os.close(fd)
        else:
            reroute[entry] = f"/proc/self/fd/{fd}"

    def fix(path: str) -> str:
        for old, new in reroute.items():
            if path == old or path.startswith(old + os.sep):
                return new + path[len(old) :]
        return path

    if not reroute:
        return
    sys.path[:] = [fix(p) for p in sys.path]
    for module in list(sys.modules.values()):
        paths = getattr(module, "__path__", None)
        if isinstance(paths, list):
            paths[:] = [fix(p) for p in paths]
    sys.path_importer_cache.clear()


def _apply_rlimits(limits: dict, ctx_bytes: int, *, enforce_nproc: bool) -> str:
    with open("/proc/self/statm") as f:
        vm_now = int(f.read().split()[0]) * mmap.PAGESIZE
    mb = 1 << 20
    address_space = vm_now + 2 * ctx_bytes + limits["memory_mb"] * mb
    settings = [
        (resource.RLIMIT_AS, address_space, address_space, "AS"),
        (resource.RLIMIT_CPU, limits["cpu_seconds"], limits["cpu_seconds"] + 2, "CPU"),
        (resource.RLIMIT_NOFILE, limits["max_open_files"], limits["max_open_files"], "NOFILE"),
        (resource.RLIMIT_FSIZE, limits["max_file_size_mb"] * mb, limits["max_file_size_mb"] * mb, "FSIZE"),
        (resource.RLIMIT_CORE, 0, 0, None),
    ]
    if enforce_nproc:
        settings.append((resource.RLIMIT_NPROC, limits["max_processes"], limits["max_processes"], "NPROC"))
    applied = []
    for which, soft, hard, name in settings:
        try:
            _, old_hard = resource.getrlimit(which)
            if old_hard != resource.RLIM_INFINITY:
                soft, hard = min(soft, old_hard), min(hard, old_hard)
            resource.setrlimit(which, (soft, hard))
            if name:
                applied.append(name)
        except (OSError, ValueError):
            pass
    note = "" if enforce_nproc else "; NPROC not enforced because the worker runs as root"
    return f"rlimits ({', '.join(applied)}){note}"


# Landlock access rights (include/uapi/linux/landlock.h)
_LL_WRITE_FILE, _LL_READ_FILE, _LL_READ_DIR, _LL_TRUNCATE = 1 << 1, 1 << 2, 1 << 3, 1 << 14
_LL_FS_WRITE_V1 = (1 << 1) | sum(1 << b for b in range(4, 13))  # write, remove, make char/dir/reg/sock/fifo/block/sym
_LL_REFER = 1 << 13


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock(workdir: str, read_roots: list[tuple[str, int, bool]]) -> str:
    """Confine reads to ``read_roots`` and the work dir, writes to the work dir; from ABI 4 refuse TCP, from ABI 6
    refuse signals leaving the sandbox. The context was read before: its file is not readable afterwards."""
    syscall = _libc.syscall
    abi = _check(
        syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1)), "landlock"
    )
    fs = _LL_FS_WRITE_V1 | _LL_READ_FILE | _LL_READ_DIR | (_LL_REFER if abi >= 2 else 0)
    fs |= _LL_TRUNCATE if abi >= 3 else 0
    attr = _RulesetAttr(fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _check(
        syscall(
            ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
        ),
        "landlock ruleset",
    )

    def allow(fd: int, access: int) -> None:
        rule = _PathBeneath(access, fd)
        _check(
            syscall(
                ctypes.c_long(SYS_LANDLOCK_ADD_RULE),
                ctypes.c_int(ruleset),
                ctypes.c_int(1),
                ctypes.byref(rule),
                ctypes.c_uint32(0),
            ),
            "landlock rule",
        )

    try:
        for path, access in ((workdir, fs), ("/dev/null", _LL_READ_FILE | _LL_WRITE_FILE | (fs & _LL_TRUNCATE))):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                allow(fd, access)
            finally:
                os.close(fd)
        for _, fd, is_dir in read_roots:
            allow(fd, _LL_READ_FILE | _LL_READ_DIR if is_dir else _LL_READ_FILE)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(
            syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)),
            "landlock restrict",
        )
    finally:
        os.close(ruleset)
    parts = ["reads: Python installation, system libraries, work dir; context loaded before", "writes: work dir only"]
    if abi >= 4:
        parts.append("no TCP bind/connect")
    if abi >= 6:
        parts.append("no signals to processes outside the sandbox")
    return f"landlock ABI {abi} ({'; '.join(parts)})"


_AF_UNIX = 1  # socket.AF_UNIX on Linux, without importing socket
_NET_EVENTS = {
    "socket.connect",
    "socket.bind",
    "socket.sendto",
    "socket.sendmsg",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyaddr",
}


def _refuse_network(event: str, args: tuple) -> None:
    if event in _NET_EVENTS:
        if event.startswith("socket.get") or getattr(args[0], "family", None) != _AF_UNIX:
            raise PermissionError("network access is disabled in the recursa sandbox")


# --------------------------------------------------------------------------------------------------
# the REPL process: talking to the host


class _HostLink:
    """The pipe to the host, shared by every thread of the REPL.

    There is no reader thread (handing each message from one thread to another costs milliseconds of GIL
    ping-pong): whichever thread waits for a message reads for everyone, one at a time, and files messages
    meant for others (sub-call answers by id, requests for the main loop) in ``mail``. So model code may call
    ``llm_query`` from many threads at once. A watchdog thread, asleep in poll(), exits when the host is gone.
    """

    def __init__(self, fd_in: int, fd_out: int, *, enabled: bool) -> None:
        self.fd_in, self.fd_out, self.enabled = fd_in, fd_out, enabled
        self.cond = threading.Condition()
        self.reading = False
        self.mail: dict[object, list[dict]] = {}
        self.waiting: set[int] = set()
        self.send_lock = threading.Lock()
        self.next_id = 0
        self.pid = os.getpid()
        self.clock = _StepClock()

    def start(self) -> None:
        threading.Thread(target=self._watch_host, name="recursa-host-watchdog", daemon=True).start()

    def _watch_host(self) -> None:
        poller = select.poll()
        poller.register(self.fd_out, select.POLLERR | select.POLLHUP)  # the host closed its end: it is gone
        while not poller.poll():
            pass
        os._exit(0)

    def send(self, message: dict) -> None:
        data = _encode(message)
        with self.send_lock:
            _write_all(self.fd_out, data)

    def receive(self, key: object) -> dict:
        """The next message for ``key``: "request" (the main loop) or a sub-call id."""
        with self.cond:
            while True:
                box = self.mail.get(key)
                if box:
                    return box.pop(0)
                if not self.reading:
                    self.reading = True
                    break
                self.cond.wait()
        try:
            while True:
                header = _read_exact(self.fd_in, HEADER.size)
                payload = None if header is None else _read_exact(self.fd_in, HEADER.unpack(header)[0])
                if payload is None:
                    os._exit(0)  # the host closed the pipe: nobody is left to serve
                message = json.loads(payload)
                to = message.get("id") if message.get("op") == "sub_result" else "request"
                if to == key:
                    return message
                with self.cond:
                    if to == "request" or to in self.waiting:  # answers nobody waits for any more are dropped
                        self.mail.setdefault(to, []).append(message)
                        self.cond.notify_all()
        finally:
            with self.cond:
                self.reading = False
                self.cond.notify_all()

    def sub_call(self, prompts: list[str], recursive: bool) -> list[str]:
        if os.getpid() != self.pid:
            raise RuntimeError("llm_query works only in the REPL's own process, not in a forked child")
        if not self.enabled:
            raise RuntimeError("sub-calls are not available in this run")
        self.clock.pause()  # waiting for the host does not count against the step's time
        try:
            with self.cond:
                self.next_id += 1
                call_id = self.next_id
                self.waiting.add(call_id)
            try:
                self.send({"op": "sub_call", "id": call_id, "prompts": prompts, "recursive": recursive})
                reply = self.receive(call_id)
            finally:
                with self.cond:
                    self.waiting.discard(call_id)
                    self.mail.pop(call_id, None)
        finally:
            self.clock.resume()
        if not reply.get("ok"):
            raise RuntimeError(reply.get("error") or "sub-call failed")
        return list(reply["results"])


class StepTimeout(BaseException):
    """The step ran past its time limit (a BaseException so ``except Exception`` cannot swallow it)."""


class _StepClock:
    """The soft per-step timeout, an ITIMER_REAL that pauses while sub-calls are outstanding."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.armed = False
        self.outstanding = 0
        self.remaining = 0.0

    def arm(self, seconds: float) -> None:
        self.outstanding = 0
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))

    def disarm(self) -> None:
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def pause(self) -> None:
        with self.lock:
            self.outstanding += 1
            if self.outstanding == 1 and self.armed:
                left = signal.setitimer(signal.ITIMER_REAL, 0)[0]
                self.remaining = left if left > 0 else 0.001

    def resume(self) -> None:
        with self.lock:
            if self.outstanding == 0:
                return
            self.outstanding -= 1
            if self.outstanding == 0 and self.armed:
                signal.setitimer(signal.ITIMER_REAL, max(self.remaining, 0.001))

    def on_alarm(self, signum: int, frame: object) -> None:
        if self.armed and self.outstanding == 0:
            self.armed = False
            raise StepTimeout()


# --------------------------------------------------------------------------------------------------
# the REPL process: running model code


class FinalAnswer(BaseException):
    """Raised by FINAL/FINAL_VAR to end the step (a BaseException so model code cannot swallow it)."""


class _FinalVarMissing(BaseException):
    """FINAL_VAR named a variable that does not exist: the step ends with this as its error."""


class _Output:
    """Interleaved stdout+stderr of one step, capped, counting what was dropped."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def write(self, text: str) -> None:
        with self.lock:
            room = self.cap - self.size
            if len(text) <= room:
                self.parts.append(text)
                self.size += len(text)
            else:
                if room > 0:
                    self.parts.append(text[:room])
                    self.size = self.cap
                self.dropped += len(text) - max(room, 0)

    def text(self) -> str:
        out = "".join(self.parts)
        if self.dropped:
            out += f"\n[... {self.dropped:,} more characters of output were dropped]"
        return out


class _BinaryWriter(io.RawIOBase):
    def __init__(self, out: _Output) -> None:
        self._out = out

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._out.write(bytes(data).decode("utf-8", "replace"))
        return len(data)


class _TextWriter(io.TextIOBase):
    """What model code sees as sys.stdout / sys.stderr."""

    def __init__(self, out: _Output, name: str, fd: int) -> None:
        self._out, self._name, self._fd = out, name, fd
        self._buffer = _BinaryWriter(out)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self._name

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "strict"

    @property
    def buffer(self) -> _BinaryWriter:  # type: ignore[override]
        return self._buffer

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._out.write(text)
        return len(text)


with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_repl_tools.py"), encoding="utf-8") as _fh:
    _REPL_TOOLS = compile(_fh.read(), "<recursa-repl-tools>", "exec")
"""``search`` and the preloaded modules (``_repl_tools.py``), read at start-up, before the sandbox closes."""

_INJECTED = (
    "context",
    "search",
    "context_names",
    "context_metadata",
    "llm_query",
    "llm_query_batched",
    "rlm_query",
    "rlm_query_batched",
    "FINAL",
    "FINAL_VAR",
    "SHOW_VARS",
    "number",
)


class _Repl:
    def __init__(self, cfg: dict, documents: list[str], host: _HostLink, capture_fd: int, pidns: bool) -> None:
        self.host = host
        self.capture_fd = capture_fd
        self.pidns = pidns
        self.pid = os.getpid()
        self.step = 0
        self.final: str | None = None
        self.output = _Output(OUTPUT_CAP)
        sys.stdout = _TextWriter(self.output, "<stdout>", 1)
        sys.stderr = _TextWriter(self.output, "<stderr>", 2)
        sys.stdin = io.StringIO("")
        signal.signal(signal.SIGALRM, host.clock.on_alarm)
        tools: dict = {"__name__": "recursa_repl_tools", "__builtins__": builtins}
        exec(_REPL_TOOLS, tools)
        self.ns: dict = {
            **tools["preloaded_namespace"](),
            "__name__": "__main__",
            "__builtins__": builtins,
            "context": list(documents) if cfg["as_list"] else documents[0],
            "search": tools["make_search"](documents, list(cfg["names"]), as_list=cfg["as_list"]),
            "context_names": list(cfg["names"]),
            "context_metadata": list(cfg["metadata"]),
            "llm_query": self.llm_query,
            "llm_query_batched": self.llm_query_batched,
            "rlm_query": self.rlm_query,
            "rlm_query_batched": self.rlm_query_batched,
            "FINAL": self.FINAL,
            "FINAL_VAR": self.FINAL_VAR,
            "SHOW_VARS": self.SHOW_VARS,
        }

    # -- functions model code calls --------------------------------------------------------------

    def llm_query(self, prompt: str) -> str:
        """Ask a sub-model; returns its answer."""
        return self.host.sub_call([_as_prompt(prompt)], False)[0]

    def llm_query_batched(self, prompts: list[str]) -> list[str]:
        """Ask a sub-model several prompts at once (answered concurrently); answers in order."""
        return self.host.sub_call(_as_prompts(prompts), False) if prompts else []

    def rlm_query(self, prompt: str) -> str:
        """Ask a sub-RLM (with its own REPL when depth allows); returns its answer."""
        return self.host.sub_call([_as_prompt(prompt)], True)[0]

    def rlm_query_batched(self, prompts: list[str]) -> list[str]:
        """Ask several sub-RLM questions at once; answers in order."""
        return self.host.sub_call(_as_prompts(prompts), True) if prompts else []

    def FINAL(self, answer: object) -> None:  # noqa: N802 - the paper's name
        """End the run with this answer."""
        self.final = str(answer)
        raise FinalAnswer()

    def FINAL_VAR(self, name_or_value: object) -> None:  # noqa: N802 - the paper's name
        """End the run with the value of a REPL variable (given by name, or the variable itself)."""
        if isinstance(name_or_value, str):
            name = name_or_value.strip().strip("'\"")
            if name in self.ns and not name.startswith("__"):
                self.final = str(self.ns[name])
                raise FinalAnswer()
            if any(v is name_or_value for k, v in self.ns.items() if not k.startswith("__")):
                self.final = name_or_value  # the model passed the variable itself
                raise FinalAnswer()
            raise _FinalVarMissing(
                f"FINAL_VAR: no variable named {name!r} exists; define it first or use FINAL(...) with the text"
            )
        self.final = str(name_or_value)
        raise FinalAnswer()

    def SHOW_VARS(self) -> None:  # noqa: N802 - the paper's name
        """Print the variables defined so far, with their type and size."""
        lines = []
        for name, value in self.ns.items():
            if name.startswith("_") or name in _INJECTED or type(value).__name__ == "module" or isinstance(value, type):
                continue
            lines.append(f"  {name}: {_describe(value)}")
        print("Variables:\n" + "\n".join(lines) if lines else "No variables defined yet.")

    # -- the loop ----------------------------------------------------------------------------------

    def serve(self) -> None:
        while True:
            message = self.host.receive("request")
            op = message.get("op")
            if op == "exec":
                reply = self.run(message["code"], float(message["timeout"]))
                reply.update(op="result", id=message.get("id"))
            elif op == "get_var":
                reply = self.get_var(message["name"], float(message["timeout"]))
                reply.update(op="var", id=message.get("id"))
            elif op == "values":
                reply = self.values(float(message["timeout"]))
                reply.update(op="values", id=message.get("id"))
            else:
                os._exit(0)
            self.host.send(reply)

    def run(self, code: str, timeout: float) -> dict:
        self.step += 1
        filename = f"<repl-{self.step}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        if self.step > 1000:
            linecache.cache.pop(f"<repl-{self.step - 1000}>", None)
        self.final = None
        self.output.reset()
        error: str | None = None
        timed_out = False
        clock = self.host.clock
        try:
            try:
                body, last = _compile(code, filename)
                clock.arm(timeout)
                exec(body, self.ns)
                if last is not None:
                    value = eval(last, self.ns)
                    if value is not None:
                        print(repr(value))
            finally:
                clock.disarm()
                self._leave_if_forked()
        except FinalAnswer:
            pass
        except _FinalVarMissing as exc:
            error = str(exc)
        except StepTimeout:
            timed_out = True
            error = f"step timed out after {timeout:g}s; variables assigned before it stopped are kept"
        except BaseException as exc:  # noqa: B036 - model code may raise anything, SystemExit included
            self._leave_if_forked()
            error = _format_exception(exc)
        finally:
            self._leave_if_forked()
        self._end_of_step()
        return {"output": self.output.text(), "error": error, "final": self.final, "timed_out": timed_out}

    def get_var(self, name: str, timeout: float) -> dict:
        if name not in self.ns or name.startswith("__"):
            return {"value": None}
        try:
            self.host.clock.arm(timeout)
            try:
                value = str(self.ns[name])
            finally:
                self.host.clock.disarm()
        except BaseException as exc:  # noqa: B036
            return {"value": None, "error": _format_exception(exc)}
        return {"value": value}

    def values(self, timeout: float) -> dict:
        """Short text forms of the model's own variables (numbers, short strings, small lists): what the host
        checks a FINAL answer against besides printed output."""
        found: dict = {}
        try:
            self.host.clock.arm(timeout)
            try:
                for name, value in list(self.ns.items()):
                    if name.startswith("_") or name in _INJECTED or callable(value) or type(value).__name__ == "module":
                        continue
                    if isinstance(value, str | int | float) or (
                            isinstance(value, list | tuple | set | dict) and len(value) <= 50):
                        text = str(value)
                        if len(text) <= 2_000:
                            found[name] = text
            finally:
                self.host.clock.disarm()
        except BaseException:  # noqa: B036 - a hostile __str__ must not end the REPL
            pass
        return {"values": found}

    def _leave_if_forked(self) -> None:
        if os.getpid() != self.pid:  # a child model code forked must never speak for the REPL
            os._exit(0)

    def _kill_leftovers(self) -> None:
        """Processes a step started do not outlive it. kill(-1) reaches every process of our pid namespace
        but init and us; we reap our children, init the orphans. Until all are reaped kill(-1) succeeds
        (zombies count), so loop until it finds nobody, for at most a second."""
        deadline = time.monotonic() + 1.0
        while True:
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                return  # nobody left
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                pass
            if time.monotonic() > deadline:
                return
            time.sleep(0.002)

    def _end_of_step(self) -> None:
        if self.pidns:
            self._kill_leftovers()
        for stream in (sys.__stdout__, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        try:
            size = os.fstat(self.capture_fd).st_size
            if size:
                data = os.pread(self.capture_fd, min(size, OUTPUT_CAP * 4), 0)
                os.ftruncate(self.capture_fd, 0)
                self.output.write(data.decode("utf-8", "replace"))
                if size > len(data):
                    self.output.dropped += size - len(data)
        except OSError:
            pass


def _as_prompt(prompt: object) -> str:
    return prompt if isinstance(prompt, str) else str(prompt)


def _as_prompts(prompts: object) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("llm_query_batched takes a list of prompts, not a single string")
    return [_as_prompt(p) for p in prompts]  # type: ignore[union-attr]


def _describe(value: object) -> str:
    kind = type(value).__name__
    if isinstance(value, str):
        return f"str ({len(value):,} chars)"
    if isinstance(value, bytes | bytearray):
        return f"{kind} ({len(value):,} bytes)"
    if isinstance(value, list | tuple | dict | set | frozenset):
        return f"{kind} ({len(value):,} items)"
    if isinstance(value, bool | int | float | complex) or value is None:
        return f"{kind} = {value!r}"
    try:
        return f"{kind} (len {len(value):,})"  # type: ignore[arg-type]
    except Exception:
        return kind


def _compile(code: str, filename: str) -> tuple:
    """Compile a block; when it ends with an expression, compile that separately to show its value."""
    try:
        tree = ast.parse(code, filename, "exec")
    except SyntaxError as exc:
        repaired = _close_brackets(code, exc)
        if repaired is None:
            raise
        tree = ast.parse(repaired, filename, "exec")
        linecache.cache[filename] = (len(repaired), None, repaired.splitlines(True), filename)
        print(f"(note: added a missing {repaired.splitlines()[exc.lineno - 1][-1]!r} at the end of line {exc.lineno})")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = compile(ast.Expression(tree.body.pop().value), filename, "eval")
    return compile(tree, filename, "exec"), last


def _close_brackets(code: str, exc: SyntaxError) -> str | None:
    """The block with the bracket ``exc`` says was never closed closed at the end of its line, if that parses.

    Small models drop the last ``)`` of ``print(sum(...))``; one fix that makes the block valid beats a turn."""
    closers = {"(": ")", "[": "]", "{": "}"}
    opened = (exc.msg or "").split("'")
    if not (exc.msg or "").endswith("was never closed") or len(opened) < 2 or opened[1] not in closers:
        return None
    lines = code.splitlines()
    if not exc.lineno or exc.lineno > len(lines) or not exc.offset:
        return None
    if not lines[exc.lineno - 1][exc.offset:].strip():  # "x = (": nothing to close around
        return None
    lines[exc.lineno - 1] += closers[opened[1]]
    repaired = "\n".join(lines) + "\n"
    try:
        ast.parse(repaired)
    except SyntaxError:
        return None
    return repaired


def _format_exception(exc: BaseException) -> str:
    te = traceback.TracebackException.from_exception(exc, compact=True)
    seen: set[int] = set()
    todo = [te]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        item.stack = traceback.StackSummary.from_list([f for f in item.stack if f.filename != _WORKER_FILE])
        todo.extend(x for x in (item.__cause__, item.__context__) if x is not None)
        todo.extend(getattr(item, "exceptions", None) or ())
    text = "".join(te.format()).rstrip("\n")
    if len(text) > ERROR_CAP:
        text = "[... traceback shortened ...]\n" + text[-ERROR_CAP:]
    return text


if __name__ == "__main__":
    try:
        main(sys.argv)
    except BaseException:
        traceback.print_exc()
        os._exit(70)

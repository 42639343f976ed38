"""The worker's confinement: namespaces, a minimal root or Landlock, rlimits, capabilities and the network hook.

Stdlib only (ctypes for the system calls Python 3.11 lacks). ``_launch`` calls these in order; each mechanism that
takes effect is named in the ``mechanisms`` list the host reports, and each that cannot is named as weaker.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import resource
import stat
import sys

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

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def check(ret: int, what: str) -> int:
    """Raise OSError, with errno and ``what``, when a libc call failed."""
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def drop_root(mechanisms: list[str]) -> bool:
    """Become uid/gid 65534 (root is not limited by RLIMIT_NPROC and can signal the host); True when it worked."""
    try:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    except OSError as exc:
        mechanisms.append(f"still root: dropping to uid {NOBODY} failed ({exc.strerror})")
        return False
    mechanisms.append(f"uid/gid {NOBODY} (dropped from root)")
    return True


def unshare_mounts() -> None:
    """A mount namespace of our own (as root, to build the minimal root before dropping privileges)."""
    check(libc.unshare(ctypes.c_int(CLONE_NEWNS)), "unshare the mount namespace")


def mount_private_proc() -> None:
    """Mount the new pid namespace's own /proc: the host's processes become invisible."""
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    check(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount proc")


def confine(cfg: dict, info: dict, path_fds: dict[str, int], ctx_bytes: int) -> None:
    """The REPL process's last steps before model code runs (the context is loaded): capabilities, import paths,
    rlimits, no_new_privs, Landlock and the network hook, each noted in ``info["mechanisms"]``."""
    mechanisms: list[str] = info["mechanisms"]
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
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
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


def open_path_fds() -> dict[str, int]:
    """Keep a handle on every import directory: after the drop to uid 65534 an ancestor such as /root
    may be closed to us, but /proc/self/fd/N still reaches the directory itself."""
    fds = {}
    for entry in dict.fromkeys(p for p in sys.path if p):
        try:
            fds[entry] = os.open(entry, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            pass
    return fds


def open_read_roots(paths: list[str]) -> list[tuple[str, int, bool]]:
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


def landlock_abi() -> int:
    return libc.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1))


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


def map_own_ids(uid: int, gid: int) -> None:
    """Map our own uid/gid in the new user namespace (files we create in a tmpfs need an owner it knows).
    An undumpable process (after setuid) finds /proc/self/uid_map owned by root: be dumpable briefly."""
    dumpable = libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    try:
        for name, text in (("setgroups", "deny"), ("gid_map", f"{gid} {gid} 1"), ("uid_map", f"{uid} {uid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    finally:
        libc.prctl(PR_SET_DUMPABLE, max(dumpable, 0), 0, 0, 0)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    args = [None if x is None else os.fsencode(x) for x in (source, target, fstype)]
    check(
        libc.mount(args[0], args[1], args[2], ctypes.c_ulong(flags), None if data is None else data.encode()),
        f"mount {target}",
    )


def enter_minimal_root(workdir: str, readable: list[str], *, proc: str | None) -> None:
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
        check(libc.syscall(ctypes.c_long(number), b".", b"."), "pivot_root")
    except BaseException:
        libc.umount2(os.fsencode(new), MNT_DETACH)
        os.chdir(workdir)
        raise
    finally:
        for fd in sources:
            os.close(fd)
    check(libc.umount2(b".", MNT_DETACH), "detach the old root")
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
    check(libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data), "capset")


def unshare_namespaces() -> int:
    base = CLONE_NEWUSER | CLONE_NEWNET
    for flags in (
        base | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC,
        base | CLONE_NEWPID | CLONE_NEWIPC,
        base | CLONE_NEWPID,
        base,
    ):
        if libc.unshare(ctypes.c_int(flags)) == 0:
            return flags
    return 0



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
    syscall = libc.syscall
    abi = check(
        syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1)), "landlock"
    )
    fs = _LL_FS_WRITE_V1 | _LL_READ_FILE | _LL_READ_DIR | (_LL_REFER if abi >= 2 else 0)
    fs |= _LL_TRUNCATE if abi >= 3 else 0
    attr = _RulesetAttr(fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = check(
        syscall(
            ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
        ),
        "landlock ruleset",
    )

    def allow(fd: int, access: int) -> None:
        rule = _PathBeneath(access, fd)
        check(
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
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        check(
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


"""The worker's processes (launcher, init, REPL) and the order of their steps, from the config to serving the host.

Each step that must happen while something is still reachable happens before what closes it: the context file and
the import directories are opened before root is dropped, the context is read before reads are confined.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback

from ._confine import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    PR_SET_PDEATHSIG,
    confine,
    drop_root,
    enter_minimal_root,
    landlock_abi,
    libc,
    map_own_ids,
    mount_private_proc,
    open_path_fds,
    open_read_roots,
    unshare_mounts,
    unshare_namespaces,
)
from ._repl import HostLink, Repl, capture_output, load_documents

__all__ = ["main"]


def main(argv: list[str]) -> None:
    """The launcher: ``argv[1]`` is the config the host wrote; stdin/stdout are the pipe to the host."""
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
    if cfg.get("landlock", True) and landlock_abi() > 0:
        info["read_roots"] = open_read_roots(readable)
    elif cfg.get("namespaces", True):
        minimal_root = True
    path_fds: dict[str, int] = {}
    if os.geteuid() == 0:
        if minimal_root:  # root builds it now, while it can reach /root/.pyenv and the like
            minimal_root = False
            try:
                unshare_mounts()
                enter_minimal_root(cfg["workdir"], readable, proc="mount")
                info["minimal_root"] = True
            except OSError as exc:
                info["no_root"] = str(exc)
        if not info.get("minimal_root"):
            path_fds = open_path_fds()
        if drop_root(info["mechanisms"]):
            info["unprivileged"] = True
    ids = os.geteuid(), os.getegid()  # in the new user namespace they read as the overflow id until mapped
    flags = unshare_namespaces() if cfg.get("namespaces", True) else 0
    info["flags"] = flags
    if minimal_root:  # not root: init builds it in the new user and mount namespaces
        try:
            if not flags & CLONE_NEWNS:
                raise OSError(0, "no mount namespace")
            map_own_ids(*ids)  # so that we may create the mount points of the minimal root in a tmpfs
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


def _run_init(cfg: dict, ctx_fd: int, proto_in: int, proto_out: int, info: dict, path_fds: dict) -> None:
    """Pid 1 of the new pid namespace: a private /proc, the minimal root when it is built here, then the REPL."""
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)  # as pid 1, default-handled signals from inside are ignored
        os.setsid()
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # launcher gone -> namespace gone
        info["mechanisms"].append("pid namespace (killing its init kills every descendant)")
        if info["flags"] & CLONE_NEWNS:
            try:
                mount_private_proc()
                info["mechanisms"].append("mount namespace with a private /proc (host processes invisible)")
                info["private_proc"] = True
            except OSError:
                pass
        readable = info.pop("build_root", None)
        if readable is not None:
            try:
                enter_minimal_root(cfg["workdir"], readable, proc="bind" if info.get("private_proc") else None)
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


def _run_repl(cfg: dict, ctx_fd: int, proto_in: int, proto_out: int, info: dict, path_fds: dict) -> None:
    """The REPL process: load the context, capture fds 1/2, confine, then tell the host it is ready and serve."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too-big writes fail with EFBIG instead of killing
    pidns = bool(info["flags"] & CLONE_NEWPID)

    documents = load_documents(cfg, ctx_fd)
    capture_fd = capture_output()
    confine(cfg, info, path_fds, ctx_bytes=sum(sys.getsizeof(d) for d in documents))

    host = HostLink(proto_in, proto_out, enabled=cfg["sub_calls"])
    ready = {"op": "ready", "mechanisms": info["mechanisms"], "pid_namespace": pidns}
    if cfg.get("probe"):
        host.send(ready)
        os._exit(0)
    repl = Repl(cfg, documents, host, capture_fd, pidns)
    del documents
    host.start()
    host.send(ready)
    repl.serve()

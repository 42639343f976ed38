"""The host side of the REPL sandbox: starts the worker, runs code blocks in it, answers its sub-calls,
and kills and restarts it when model code hangs, crashes or the caller gives up."""

from __future__ import annotations

import math
import os
import signal
import time
import weakref
from dataclasses import dataclass, field
from subprocess import PIPE
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from .._context import Context
from .._exceptions import SandboxError
from ._api import ExecResult, SandboxLimits, SubCallHandler, SubCallRequest
from ._isolation import HOST_MECHANISMS, Workspace, probe_mechanisms, worker_command, worker_env
from ._worker._protocol import HEADER, ProtocolError, decode, encode

__all__ = ["ReplSandbox", "sandbox_mechanisms"]

GRACE_S = 2.0
"""How long a timed-out step may take to stop by itself before the worker is killed."""
RESTART_NOTICE = "The REPL was restarted: all variables were lost; `context` was reloaded."
_NO_SUB_CALLS = "sub-calls are not available in this run"


def sandbox_mechanisms() -> list[str]:
    """The protections a worker gets on this machine, for ``recursa doctor`` and the README.

    Probed once per process by starting a worker (about a third of a second, blocking), then cached.
    """
    return list(probe_mechanisms())


class _WorkerGone(Exception):
    """The worker's pipe closed: it died."""


class _HardTimeout(Exception):
    """The worker did not answer within the step's time plus the grace period."""


@dataclass
class _Live:
    """What a finalizer needs to clean up if the sandbox is dropped without ``aclose`` (no reference to it)."""

    pid: int | None = None
    pid_namespace: bool = False
    workspaces: list[Workspace] = field(default_factory=list)


def _signal_worker(pid: int, pid_namespace: bool, *, force: bool = False) -> None:
    """Stop a worker. In a pid namespace the launcher (which model code cannot reach) kills the namespace's
    init on SIGTERM, so everything is reaped in order; otherwise, or when forced, SIGKILL the process group."""
    try:
        if pid_namespace and not force:
            os.kill(pid, signal.SIGTERM)
        else:
            os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _finalize(live: _Live) -> None:
    if live.pid is not None:
        _signal_worker(live.pid, live.pid_namespace)
    for workspace in live.workspaces:
        workspace.remove()


class _PausableDeadline:
    """A step's hard deadline that stands still while sub-calls are outstanding."""

    def __init__(self, scope: anyio.CancelScope, budget: float) -> None:
        self.scope, self.remaining, self.outstanding = scope, budget, 0

    def pause(self) -> None:
        if self.outstanding == 0:
            self.remaining = max(self.scope.deadline - anyio.current_time(), 0.0)
            self.scope.deadline = math.inf
        self.outstanding += 1

    def resume(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0:
            self.scope.deadline = anyio.current_time() + self.remaining


class ReplSandbox:
    """A persistent Python REPL in an isolated worker process, with ``context`` loaded as a variable.

    Model code never runs in the host. Steps are serialised; a hung, crashed or cancelled step kills the
    worker, which restarts with ``context`` reloaded (the result says so). Processes a step starts do not
    outlive it (where a pid namespace is available). Output of subprocesses and of C code writing to fds 1/2
    is appended after the step's Python-level output. Use as an async context manager, or call ``aclose()``.
    """

    def __init__(
        self,
        context: Context,
        *,
        on_sub_call: SubCallHandler | None = None,
        limits: SandboxLimits = SandboxLimits(),  # noqa: B008 - frozen dataclass
    ) -> None:
        self._context = context
        self._on_sub_call = on_sub_call
        self._limits = limits
        worker_env("/", limits.extra_env)  # refuse secret-looking extra_env now, not at first use
        self.mechanisms: list[str] = []
        """Protections active for this worker (filled in when it starts)."""
        self.pid: int | None = None
        """The worker's process id as the host sees it (its process group id too)."""
        self._workspace: Workspace | None = None
        self._proc: Process | None = None
        self._stream: BufferedByteReceiveStream | None = None
        self._pid_namespace = False
        self._lock: anyio.Lock | None = None
        self._send_lock: anyio.Lock | None = None
        self._next_id = 0
        self._generation = 0
        self._live = _Live()
        self._finalizer = weakref.finalize(self, _finalize, self._live)

    # -- public API ---------------------------------------------------------------------------------

    async def __aenter__(self) -> ReplSandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the worker and load the context; does nothing when it is already running."""
        async with self._get_lock():
            try:
                await self._ensure_started()
            except BaseException:
                await self._kill()
                raise

    async def execute(self, code: str, *, timeout_s: float | None = None) -> ExecResult:
        """Run one code block in the REPL (starting the worker if needed) and report what happened.

        Model misbehaviour (errors, timeouts, crashes) comes back in the ``ExecResult``; only a worker that
        cannot start raises ``SandboxError``. Cancelling the caller kills the worker at once.
        """
        timeout = self._limits.step_timeout_s if timeout_s is None else timeout_s
        async with self._get_lock():
            try:
                await self._ensure_started()
                return await self._execute(code, timeout)
            except BaseException:
                await self._kill()
                raise

    async def get_variable(self, name: str) -> str | None:
        """``str()`` of a REPL variable, or None when it does not exist (used for a ``FINAL_VAR`` in a reply)."""
        value = (await self._query("get_var", "var", name=name)).get("value")
        return value if isinstance(value, str) else None

    async def variable_values(self) -> dict[str, str]:
        """Short ``str()`` forms of the model's variables (numbers, short strings, small collections)."""
        values = (await self._query("values", "values")).get("values")
        return {k: v for k, v in values.items() if isinstance(v, str)} if isinstance(values, dict) else {}

    async def _query(self, op: str, expect: str, **fields: Any) -> dict[str, Any]:
        """Ask the worker something that runs no model code; a worker that hangs or dies is restarted."""
        async with self._get_lock():
            try:
                await self._ensure_started()
                request = self._request(op, timeout=self._limits.step_timeout_s, **fields)
                try:
                    return await self._exchange(request, expect, self._limits.step_timeout_s + GRACE_S)
                except (_HardTimeout, _WorkerGone, ProtocolError):
                    await self._restart()
                    return {}
            except BaseException:
                await self._kill()
                raise

    async def aclose(self) -> None:
        """Kill the worker (its whole process tree) and remove the temporary directory; idempotent."""
        self._generation += 1
        await self._kill()
        workspace, self._workspace = self._workspace, None
        if workspace is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(workspace.remove)
            if workspace in self._live.workspaces:
                self._live.workspaces.remove(workspace)

    # -- worker life --------------------------------------------------------------------------------

    def _get_lock(self) -> anyio.Lock:
        if self._lock is None:
            self._lock = anyio.Lock()
            self._send_lock = anyio.Lock()
        return self._lock

    async def _ensure_started(self) -> None:
        if self._proc is not None:
            return
        if self._workspace is None:
            self._workspace = await anyio.to_thread.run_sync(
                lambda: Workspace.create(self._context, self._limits, sub_calls=self._on_sub_call is not None)
            )
            self._live.workspaces.append(self._workspace)
        await self._spawn(self._workspace)

    async def _spawn(self, workspace: Workspace) -> None:
        env = worker_env(workspace.work, self._limits.extra_env)
        with open(workspace.log_path, "ab") as log:
            try:
                proc = await anyio.open_process(
                    worker_command(workspace.config_path),
                    stdin=PIPE,
                    stdout=PIPE,
                    stderr=log,
                    cwd=workspace.work,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise SandboxError(f"The REPL worker could not be started: {exc}.") from None
        self._proc, self._stream = proc, BufferedByteReceiveStream(proc.stdout)  # type: ignore[arg-type]
        self.pid = self._live.pid = proc.pid
        self._pid_namespace = self._live.pid_namespace = False
        startup_s = 60.0 + workspace.context_bytes / 20e6
        try:
            with anyio.fail_after(startup_s):
                ready = await self._receive()
            if ready.get("op") != "ready":
                raise ProtocolError(f"expected 'ready', got {ready.get('op')!r}")
        except (TimeoutError, _WorkerGone, ProtocolError) as exc:
            await self._kill()
            detail = workspace.log_tail() or str(exc) or type(exc).__name__
            raise SandboxError(f"The REPL worker could not start: {detail}") from None
        self._pid_namespace = self._live.pid_namespace = bool(ready.get("pid_namespace"))
        self.mechanisms = [*ready.get("mechanisms", []), *HOST_MECHANISMS]

    async def _kill(self) -> None:
        """Stop the worker now and wait (briefly, shielded from cancellation) until it is gone."""
        proc, self._proc, self._stream = self._proc, None, None
        self.pid = self._live.pid = None
        if proc is None:
            return
        with anyio.CancelScope(shield=True):
            if proc.returncode is None:
                _signal_worker(proc.pid, self._pid_namespace)
                with anyio.move_on_after(2.0):
                    await proc.wait()
            if proc.returncode is None:
                _signal_worker(proc.pid, self._pid_namespace, force=True)
                with anyio.move_on_after(5.0):
                    await proc.wait()
            with anyio.move_on_after(1.0):
                await proc.aclose()

    async def _restart(self) -> None:
        generation = self._generation
        await self._kill()
        if generation == self._generation and self._workspace is not None:
            await self._spawn(self._workspace)

    # -- steps --------------------------------------------------------------------------------------

    async def _execute(self, code: str, timeout: float) -> ExecResult:
        started = time.perf_counter()
        request = self._request("exec", code=code, timeout=timeout)
        try:
            reply = await self._exchange(request, "result", timeout + GRACE_S)
        except _HardTimeout:
            await self._restart()
            return ExecResult(
                output="",
                error=f"step timed out after {timeout:g}s and did not stop within {GRACE_S:g}s more; "
                "the worker was killed",
                duration_s=time.perf_counter() - started,
                timed_out=True,
                crashed=True,
                notice=RESTART_NOTICE,
            )
        except (_WorkerGone, ProtocolError) as exc:
            how = await self._death(exc)
            await self._restart()
            return ExecResult(
                output="", error=how, duration_s=time.perf_counter() - started, crashed=True, notice=RESTART_NOTICE
            )
        return ExecResult(
            output=str(reply.get("output") or ""),
            error=reply.get("error"),
            final=reply.get("final"),
            duration_s=time.perf_counter() - started,
            timed_out=bool(reply.get("timed_out")),
        )

    def _request(self, op: str, **fields: Any) -> dict[str, Any]:
        self._next_id += 1
        return {"op": op, "id": self._next_id, **fields}

    async def _exchange(self, request: dict[str, Any], expect: str, budget: float) -> dict[str, Any]:
        """Send a request and wait for its reply, answering the worker's sub-calls meanwhile."""
        await self._send(request)
        reply: dict[str, Any] | None = None
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope(deadline=anyio.current_time() + budget) as scope:
                deadline = _PausableDeadline(scope, budget)
                try:
                    while reply is None:
                        message = await self._receive()
                        if message["op"] == "sub_call":
                            deadline.pause()
                            tg.start_soon(self._answer, message, deadline)
                        elif message["op"] == expect and message.get("id") == request["id"]:
                            reply = message
                except (_WorkerGone, ProtocolError) as exc:
                    failure = exc  # raised below, outside the task group, so it is not wrapped in a group
            tg.cancel_scope.cancel()  # sub-calls still open when the step ended are abandoned
        if failure is not None:
            raise failure
        if reply is None:
            raise _HardTimeout()
        return reply

    async def _answer(self, message: dict[str, Any], deadline: _PausableDeadline) -> None:
        try:
            prompts = [str(p) for p in message.get("prompts") or []]
            if self._on_sub_call is None:
                raise RuntimeError(_NO_SUB_CALLS)
            results = list(
                await self._on_sub_call(SubCallRequest(prompts=prompts, recursive=bool(message.get("recursive"))))
            )
            if len(results) != len(prompts):
                raise RuntimeError(f"the sub-call handler returned {len(results)} answers for {len(prompts)} prompts")
            reply = {"op": "sub_result", "id": message.get("id"), "ok": True, "results": [str(r) for r in results]}
        except Exception as exc:
            reply = {"op": "sub_result", "id": message.get("id"), "ok": False, "error": str(exc) or type(exc).__name__}
        try:
            await self._send(reply)
        except _WorkerGone:
            pass
        finally:
            deadline.resume()

    async def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise _WorkerGone()
        data = encode(message)
        assert self._send_lock is not None
        async with self._send_lock:
            try:
                await proc.stdin.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, BrokenPipeError, ConnectionResetError):
                raise _WorkerGone() from None

    async def _receive(self) -> dict[str, Any]:
        stream = self._stream
        if stream is None:
            raise _WorkerGone()
        try:
            (size,) = HEADER.unpack(await stream.receive_exactly(HEADER.size))
            payload = await stream.receive_exactly(size)
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise _WorkerGone() from None
        return decode(payload)

    async def _death(self, exc: Exception) -> str:
        """Describe how the worker died, from its exit status."""
        proc = self._proc
        if proc is None:
            return "the sandbox was closed while the step ran"
        if isinstance(exc, ProtocolError):
            return f"the worker broke the protocol ({exc}) and was killed"
        with anyio.move_on_after(2.0):
            await proc.wait()
        code = proc.returncode
        if code is None:
            return "the worker stopped answering and was killed"
        signum = -code if code < 0 else code - 128 if self._pid_namespace and code > 128 else None
        if signum is None:
            return f"the worker exited with code {code} (os._exit, sys.exit in a thread, or a fatal error)"
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        hint = {
            "SIGKILL": " (killed by the code itself, the out-of-memory killer or a hard limit)",
            "SIGXCPU": f" (its CPU time limit of {self._limits.cpu_seconds}s was reached)",
            "SIGSEGV": " (a crash in native code)",
        }.get(name, "")
        return f"worker died with signal {name}{hint}"

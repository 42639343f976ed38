"""The REPL process's work: running model code block by block, and its end of the pipe to the host.

Model code sees ``context``, ``search``, ``llm_query`` and the rest of the injected names; its output is captured and
capped, its errors come back as tracebacks without the worker's own frames, and ``FINAL`` cannot be swallowed.
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import fcntl
import io
import linecache
import mmap
import os
import select
import signal
import sys
import threading
import time
import traceback
import types

from ._protocol import encode, read_message, write_all

__all__ = ["HostLink", "Repl", "capture_output", "load_documents"]

OUTPUT_CAP = 1_000_000
"""Characters of output kept per step; the rest is counted and reported as dropped."""
ERROR_CAP = 20_000
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
"""Frames of these files are left out of the tracebacks model code sees."""


class HostLink:
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
        data = encode(message)
        with self.send_lock:
            write_all(self.fd_out, data)

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
                message = read_message(self.fd_in)
                if message is None:
                    os._exit(0)  # the host closed the pipe: nobody is left to serve
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
# running model code


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


with open(os.path.join(os.path.dirname(_PACKAGE_DIR), "_repl_tools.py"), encoding="utf-8") as _fh:
    _REPL_TOOLS = compile(_fh.read(), "<recursa-repl-tools>", "exec")
"""``search`` and the preloaded modules (``_repl_tools.py``), read at start-up, before the sandbox closes."""


def _load_tools() -> dict:
    """Run ``_repl_tools`` as a module registered in ``sys.modules`` (dataclasses look their module up there)."""
    module = types.ModuleType("recursa_repl_tools")
    module.__dict__["__builtins__"] = builtins
    sys.modules[module.__name__] = module
    exec(_REPL_TOOLS, module.__dict__)
    return module.__dict__

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


class Repl:
    def __init__(self, cfg: dict, documents: list[str], host: HostLink, capture_fd: int, pidns: bool) -> None:
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
        tools = _load_tools()
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
        ours = [f for f in item.stack if os.path.dirname(f.filename) != _PACKAGE_DIR]
        item.stack = traceback.StackSummary.from_list(ours)
        todo.extend(x for x in (item.__cause__, item.__context__) if x is not None)
        todo.extend(getattr(item, "exceptions", None) or ())
    text = "".join(te.format()).rstrip("\n")
    if len(text) > ERROR_CAP:
        text = "[... traceback shortened ...]\n" + text[-ERROR_CAP:]
    return text



def load_documents(cfg: dict, fd: int) -> list[str]:
    """Load every document once. An ASCII one (most logs and code) is read straight into its str, so loading it
    takes its own size and no more; any other is decoded from a read-only mapping, whose pages and the str then
    coexist until the mapping closes (twice the size, briefly)."""
    size = os.fstat(fd).st_size
    documents = []
    for start, end in cfg["spans"]:
        text = _read_ascii(fd, start, end - start)
        if text is None:
            with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mm, memoryview(mm) as view, view[start:end] as part:
                text = str(part, "utf-8", "surrogatepass")
        documents.append(text)
    os.close(fd)
    return documents


def _read_ascii(fd: int, start: int, length: int) -> str | None:
    """``length`` bytes of ``fd`` from ``start`` as a new str filled in place, or None if they are not all ASCII.

    CPython keeps an ASCII str's characters right after its header (the size of "" less its NUL), so a str made
    with ``PyUnicode_New`` and not yet seen by anyone can be read into like a buffer.
    """
    if length == 0:
        return ""
    new = ctypes.pythonapi.PyUnicode_New
    new.restype, new.argtypes = ctypes.py_object, (ctypes.c_ssize_t, ctypes.c_uint32)
    text = new(length, 127)
    buffer = (ctypes.c_char * length).from_address(id(text) + sys.getsizeof("") - 1)
    with memoryview(buffer).cast("B") as view:
        done = 0
        while done < length:
            with view[done : done + _ASCII_CHUNK] as chunk:
                got = os.preadv(fd, [chunk], start + done)
                if got == 0 or not chunk[:got].tobytes().isascii():
                    return None  # not ASCII (or shorter than its span): decode it instead
            done += got
    return text


_ASCII_CHUNK = 4 * 2**20


def capture_output() -> int:
    """Point fds 1 and 2 at a memfd (the host's pipe was moved away): output of C code and subprocesses is kept."""
    capture_fd = os.memfd_create("recursa-output", os.MFD_CLOEXEC)
    fcntl.fcntl(capture_fd, fcntl.F_SETFL, fcntl.fcntl(capture_fd, fcntl.F_GETFL) | os.O_APPEND)
    os.dup2(capture_fd, 1)
    os.dup2(capture_fd, 2)
    return capture_fd

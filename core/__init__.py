"""recursa: Recursive Language Models for the agent frameworks you already use.

Hand over a context far larger than any model's window and a question; a root model explores it with
code in a sandboxed REPL, calls sub-models on the pieces, and returns the answer.
"""

from ._budget import Budget
from ._cache import CacheStats, LMCache
from ._context import Context
from ._defaults import default_lm
from ._exceptions import (
    ContextError,
    ContextTooLargeError,
    LMConnectionError,
    LMError,
    LMResponseError,
    LMTimeoutError,
    ModelInstallError,
    ModelNotFoundError,
    PathNotAllowedError,
    RecursaError,
    SandboxError,
    TraceFormatError,
)
from ._files import load_context
from ._lm import LM, Completion, HasWindow, Message, TakesGrammar, Usage
from ._local import LocalLlama
from ._loop import RLM, Result, RunStream, Session
from ._openai import OpenAIChat
from ._pricing import Price
from ._prompts import PromptTemplates
from ._scripted import ScriptedLM
from ._trace import (
    CodeExecuted,
    Event,
    IterationStarted,
    LMCalled,
    Notice,
    RunFinished,
    RunStarted,
    SubCallsStarted,
    read_trace,
)
from .sandbox import ReplSandbox, SandboxLimits

__version__ = "0.1.0"

__all__ = [
    "LM",
    "RLM",
    "Budget",
    "CacheStats",
    "CodeExecuted",
    "Completion",
    "Context",
    "ContextError",
    "ContextTooLargeError",
    "Event",
    "HasWindow",
    "IterationStarted",
    "LMCache",
    "LMCalled",
    "LMConnectionError",
    "LMError",
    "LMResponseError",
    "LMTimeoutError",
    "LocalLlama",
    "Message",
    "ModelInstallError",
    "ModelNotFoundError",
    "Notice",
    "OpenAIChat",
    "Price",
    "PathNotAllowedError",
    "PromptTemplates",
    "RecursaError",
    "ReplSandbox",
    "Result",
    "RunFinished",
    "RunStarted",
    "RunStream",
    "SandboxError",
    "SandboxLimits",
    "ScriptedLM",
    "Session",
    "SubCallsStarted",
    "TakesGrammar",
    "TraceFormatError",
    "Usage",
    "default_lm",
    "load_context",
    "read_trace",
]


"""The REPL sandbox: model code runs in a separate, isolated worker process, never in the host."""

from ._api import ExecResult, SandboxLimits, SubCallHandler, SubCallRequest
from ._host import ReplSandbox, sandbox_mechanisms

__all__ = ["ExecResult", "ReplSandbox", "SandboxLimits", "SubCallHandler", "SubCallRequest", "sandbox_mechanisms"]

"""The one place that imports the ``mcp`` SDK, so the rest of the server is written once for 2.x and 1.x.

mcp 2.x calls the high-level server ``mcp.server.mcpserver.MCPServer``; 1.x called it
``mcp.server.fastmcp.FastMCP``. Both take ``@server.tool()`` functions, inject a ``Context`` and turn
a raised ``ToolError`` into a tool result with ``isError: true``.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

try:
    from mcp.server.mcpserver import Context  # mcp >= 2
    from mcp.server.mcpserver import MCPServer as Server
    from mcp.server.mcpserver.exceptions import ResourceError, ToolError

    try:
        from mcp.server.mcpserver.exceptions import ResourceNotFoundError
    except ImportError:  # pragma: no cover - early 2.x
        ResourceNotFoundError = ResourceError  # type: ignore[misc,assignment]
    SDK_MAJOR = 2
except ImportError:  # pragma: no cover - exercised only where mcp 1.x is installed
    try:
        from mcp.server.fastmcp import Context  # type: ignore[no-redef]
        from mcp.server.fastmcp import FastMCP as Server
        from mcp.server.fastmcp.exceptions import (  # type: ignore[no-redef]
            ResourceError,
            ToolError,
        )
    except ImportError:
        raise ImportError(
            "recursa's MCP server needs the 'mcp' package, which is not installed. "
            "Install it with: pip install 'recursa[mcp]'"
        ) from None
    ResourceNotFoundError = ResourceError  # type: ignore[misc,assignment]
    SDK_MAJOR = 1

from mcp import types

__all__ = [
    "SDK_MAJOR",
    "Context",
    "ResourceError",
    "ResourceNotFoundError",
    "Server",
    "ToolError",
    "call_quietly",
    "can_send_request",
    "client_capabilities",
    "types",
]

T = TypeVar("T")


def client_capabilities(ctx: Context) -> types.ClientCapabilities | None:
    """What the connected client declared it supports (``None`` when it declared nothing)."""
    session = ctx.session
    caps = getattr(session, "client_capabilities", None)  # 2.x
    if caps is not None:
        return caps
    params = getattr(session, "client_params", None)  # 1.x
    return params.capabilities if params is not None else None


def can_send_request(ctx: Context) -> bool:
    """Whether the server may send a request (sampling, roots) to the client in the middle of a tool call.

    Connections on the 2026-07-28 protocol (per-request envelope) forbid it; the handshake-era
    protocol versions every shipping client speaks today allow it.
    """
    return bool(getattr(ctx.session, "can_send_request", True))


def call_quietly(make: Callable[[], Awaitable[T]]) -> Awaitable[T]:
    """Start an SDK call that is marked deprecated (sampling, roots: SEP-2577) without the warning.

    The warning fires when the coroutine is created, so only that moment is wrapped.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*deprecated as of 2026-07-28.*")
        return make()


def run_streamable_http(server: Any, *, host: str, port: int) -> None:
    """Serve streamable HTTP on ``host:port`` (the endpoint is ``/mcp``)."""
    if SDK_MAJOR >= 2:
        server.run("streamable-http", host=host, port=port)
    else:  # pragma: no cover - mcp 1.x reads host and port from its settings
        server.settings.host = host
        server.settings.port = port
        server.run("streamable-http")

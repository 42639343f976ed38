"""recursa as an MCP server: answer questions over files too big for the client's context window.

    recursa mcp                      # stdio, for Claude Desktop, Claude Code, Cursor, VS Code
    recursa mcp --http --port 8000   # streamable HTTP at http://127.0.0.1:8000/mcp
    python -m recursa.mcp_server     # the same command, run as a module

Tools: ``rlm_answer``, ``load_context``, ``ask``, ``close_context``. Resources:
``recursa://trace/{trace_id}`` and ``recursa://context/{context_id}``. Needs ``pip install 'recursa[mcp]'``.
"""

from ._paths import Limits, PathError
from ._server import create_server, serve

__all__ = ["Limits", "PathError", "create_server", "serve"]

"""Start recursa's MCP server over stdio and call its tools with the official ``mcp`` SDK client.

    pip install 'recursa[mcp]'
    export OPENAI_API_KEY=sk-...            # or OPENAI_BASE_URL=..., or nothing for the local model
    python examples/mcp_client.py --root ~/src/myrepo "Where is the retry logic?" src docs

This is what Claude Desktop, Claude Code and IDEs do when they start ``recursa mcp``: spawn the
server, list its tools, call ``rlm_answer`` with paths (never file contents), then open a warm
context with ``load_context`` and ask a follow-up with ``ask``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from mcp import Client, StdioServerParameters

# The server reads its model settings from its own environment; pass them on explicitly.
FORWARDED = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RECURSA_MODEL", "RECURSA_SUB_MODEL", "HOME", "PATH")


async def main(root: str, question: str, paths: list[str]) -> None:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "recursa.mcp_server", "--root", root],
        env={k: os.environ[k] for k in FORWARDED if k in os.environ},
    )
    async with Client(server, mode="legacy") as client:  # the initialize handshake, as today's IDE clients
        tools = (await client.list_tools()).tools
        print("tools:", ", ".join(t.name for t in tools), file=sys.stderr)

        async def show_progress(progress: float, total: float | None, message: str | None) -> None:
            print(f"  [{progress:g}/{total:g}] {message}", file=sys.stderr)

        result = await client.call_tool(
            "rlm_answer", {"question": question, "paths": paths, "max_iterations": 20},
            progress_callback=show_progress,
        )
        if result.is_error:
            sys.exit(f"rlm_answer failed: {result.content[0].text}")
        answer = result.structured_content
        print(answer["answer"])
        print(f"({answer['stopped_reason']}, {answer['iterations']} iterations, {answer['sub_calls']} sub-calls, "
              f"{answer['tokens']:,} tokens, ${answer['cost_usd']:.4f}; trace: recursa://trace/{answer['trace_id']})",
              file=sys.stderr)

        # A warm context: the second question sees the variables the first one created.
        loaded = (await client.call_tool("load_context", {"paths": paths})).structured_content
        print(f"loaded {loaded['documents']} documents, {loaded['chars']:,} characters", file=sys.stderr)
        follow_up = await client.call_tool(
            "ask", {"context_id": loaded["context_id"], "question": question, "max_iterations": 20},
            progress_callback=show_progress,
        )
        print("follow-up:", follow_up.structured_content["answer"] if not follow_up.is_error else follow_up.content)
        await client.call_tool("close_context", {"context_id": loaded["context_id"]})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.getcwd(), help="Directory the server may read under.")
    parser.add_argument("question")
    parser.add_argument("paths", nargs="+", help="Files or directories, relative to --root or absolute.")
    args = parser.parse_args()
    asyncio.run(main(os.path.abspath(args.root), args.question, args.paths))

"""``python -m recursa.mcp_server``: run the MCP server with the same options as ``recursa mcp``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recursa.mcp_server",
        description="Serve recursa's tools (rlm_answer, load_context, ask, close_context) over MCP.",
    )
    parser.add_argument("--http", action="store_true", help="Serve streamable HTTP instead of stdio.")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1).")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000).")
    parser.add_argument("--root", action="append", dest="roots", metavar="DIR",
                        help="Directory tools may read under; repeatable (default: the working directory).")
    parser.add_argument("--no-client-roots", action="store_true",
                        help="Ignore the directories the MCP client offers as roots.")
    parser.add_argument("--model", help="Root model name, or 'local'. Env: RECURSA_MODEL.")
    parser.add_argument("--sub-model", help="Sub-call model. Env: RECURSA_SUB_MODEL.")
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint. Env: OPENAI_BASE_URL.")
    parser.add_argument("--api-key", help="API key; prefer the OPENAI_API_KEY environment variable.")
    parser.add_argument("--sampling", action="store_true",
                        help="Use the MCP client's own model (MCP sampling) for root and sub calls.")
    parser.add_argument("--max-inline-chars", type=int, help="Longest inline text a tool accepts (default 200,000).")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from recursa import RecursaError

    try:
        from . import Limits, PathError, serve
    except ImportError as exc:  # the mcp SDK is missing; the message says how to install it
        print(f"recursa: error: {exc}", file=sys.stderr)
        sys.exit(1)

    options = {"log_level": args.log_level, "use_client_roots": not args.no_client_roots}
    if args.max_inline_chars:
        options["limits"] = Limits(max_inline_chars=args.max_inline_chars)
    try:
        serve(
            transport="http" if args.http else "stdio", host=args.host, port=args.port, roots=args.roots,
            model=args.model, sub_model=args.sub_model, base_url=args.base_url, api_key=args.api_key,
            use_client_sampling=args.sampling, **options,
        )
    except (PathError, RecursaError) as exc:
        print(f"recursa: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

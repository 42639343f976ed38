"""Options several ``recursa`` commands share (ask, serve, mcp, bench): one definition, one help text.

Typer reads an option from its ``Annotated`` type, so a shared option is a type alias; ``cache_choice`` turns the
two cache flags into what ``RLM(cache=...)`` takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = [
    "ApiKeyOption",
    "BaseUrlOption",
    "CacheDirOption",
    "CacheOption",
    "MaxCostOption",
    "MaxDepthOption",
    "MaxIterationsOption",
    "MaxSubCallsOption",
    "MaxTokensOption",
    "ModelOption",
    "SubModelOption",
    "TimeoutOption",
    "cache_choice",
]

ModelOption = Annotated[
    str | None, typer.Option("--model", metavar="NAME", help="Root model name, or 'local'. Env: RECURSA_MODEL.")
]
SubModelOption = Annotated[
    str | None, typer.Option("--sub-model", metavar="NAME", help="Sub-call model. Env: RECURSA_SUB_MODEL.")
]
BaseUrlOption = Annotated[
    str | None, typer.Option("--base-url", metavar="URL", help="OpenAI-compatible endpoint. Env: OPENAI_BASE_URL.")
]
ApiKeyOption = Annotated[str | None, typer.Option("--api-key", metavar="KEY", help="API key. Env: OPENAI_API_KEY.")]
# Budget flags, shared by `ask` and `serve` (for `serve` they cap what each request may ask for).
MaxIterationsOption = Annotated[int | None, typer.Option(metavar="N", help="Root turns (default 30).")]
MaxDepthOption = Annotated[int | None, typer.Option(metavar="N", help="Recursion depth (1 = plain sub-calls).")]
MaxSubCallsOption = Annotated[int | None, typer.Option(metavar="N", help="Sub-calls in all (default 500).")]
MaxTokensOption = Annotated[int | None, typer.Option(metavar="N", help="Tokens in all, root and sub.")]
MaxCostOption = Annotated[float | None, typer.Option(metavar="USD", help="US dollars in all.")]
TimeoutOption = Annotated[float | None, typer.Option(metavar="SECONDS", help="Wall-clock seconds (default 900).")]
# The model-call cache: `ask` and `bench`.
CacheOption = Annotated[bool | None, typer.Option(
    "--cache/--no-cache", show_default=False,
    help="Reuse answers to identical model calls. Default: greedy (temperature 0) calls only; --cache: every call.")]
CacheDirOption = Annotated[Path | None, typer.Option(
    # No envvar= here: RECURSA_CACHE_DIR is read where the default folder is chosen (recursa._cache), and as an
    # option value it would make the cache explicit, so RECURSA_CACHE=off could no longer turn it off.
    metavar="DIR", help="Folder of the cache. Env: RECURSA_CACHE_DIR.")]


def cache_choice(cache: bool | None, cache_dir: Path | None) -> Any:
    """What ``RLM(cache=...)`` gets from ``--cache/--no-cache`` and ``--cache-dir``: ``None`` (neither given) is
    the default cache, which ``RECURSA_CACHE`` and ``RECURSA_CACHE_DIR`` may change."""
    if cache is False:
        return False
    if cache_dir is None and cache is None:
        return None
    from ._cache import LMCache

    return LMCache(cache_dir, sampled=bool(cache))

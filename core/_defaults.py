"""Choosing a model when the user did not pass one: the configured endpoint, else the embedded model."""

from __future__ import annotations

import os
import sys

from ._lm import LM

__all__ = ["DEFAULT_OPENAI_MODEL", "LOCAL_MODEL_NAME", "default_lm", "uses_local_model"]

DEFAULT_OPENAI_MODEL = "gpt-5-mini"
LOCAL_MODEL_NAME = "local"
_announced = False


def uses_local_model(model: str | None = None, base_url: str | None = None, api_key: str | None = None) -> bool:
    """True when no endpoint is configured (no base URL, no API key) or ``model == "local"``."""
    if model == LOCAL_MODEL_NAME:
        return True
    base_url = base_url or os.environ.get("OPENAI_BASE_URL")
    api_key = api_key or os.environ.get("OPENAI_API_KEY")
    return not base_url and not api_key


def default_lm(
    model: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    announce: bool = True,
) -> LM:
    """The model recursa uses when none is given.

    ``model`` falls back to ``$RECURSA_MODEL``. With an endpoint configured (``base_url``/``api_key`` or
    ``$OPENAI_BASE_URL``/``$OPENAI_API_KEY``) that is an ``OpenAIChat``; otherwise, or for
    ``model="local"``, the embedded ``LocalLlama`` (said once on stderr).
    """
    global _announced
    model = model or os.environ.get("RECURSA_MODEL")
    if uses_local_model(model, base_url, api_key):
        from ._local import LocalLlama

        if announce and not _announced:
            _announced = True
            print("recursa: no OPENAI_API_KEY or OPENAI_BASE_URL set; using the embedded local model "
                  "(Qwen2.5-Coder-1.5B). Set one to use a hosted model.", file=sys.stderr)
        return LocalLlama()
    from ._openai import OpenAIChat

    return OpenAIChat(model or DEFAULT_OPENAI_MODEL, base_url=base_url, api_key=api_key)

"""Choosing a model when the user did not pass one: the configured endpoint, else the embedded model."""

from __future__ import annotations

import os
import sys

from ._exceptions import LMError
from ._lm import LM

__all__ = ["DEFAULT_OPENAI_MODEL", "LOCAL_MODEL_NAME", "default_lm", "make_models", "uses_local_model"]

DEFAULT_OPENAI_MODEL = "gpt-5-mini"
LOCAL_MODEL_NAME = "local"
_announced = False


def uses_local_model(model: str | None = None, base_url: str | None = None, api_key: str | None = None) -> bool:
    """True when ``default_lm`` picks the embedded model: ``model == "local"``, or no model named and no
    endpoint configured (no base URL, no API key). A named hosted model never falls back to it."""
    if model == LOCAL_MODEL_NAME:
        return True
    if model:
        return False
    return not _endpoint_configured(base_url, api_key)


def default_lm(
    model: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    announce: bool = True,
) -> LM:
    """The model recursa uses when none is given.

    ``model`` falls back to ``$RECURSA_MODEL``. With an endpoint configured (``base_url``/``api_key`` or
    ``$OPENAI_BASE_URL``/``$OPENAI_API_KEY``) that is an ``OpenAIChat``; for ``model="local"``, or no model
    and no endpoint, the embedded ``LocalLlama`` (said once on stderr). A model the user named that no
    endpoint can serve raises ``LMError`` at once: silently answering with another model would mislead.
    """
    global _announced
    model = model or os.environ.get("RECURSA_MODEL") or None
    if uses_local_model(model, base_url, api_key):
        from ._local import LocalLlama

        if announce and not _announced:
            _announced = True
            print("recursa: no OPENAI_API_KEY or OPENAI_BASE_URL set; using the embedded local model "
                  "(Qwen2.5-Coder-1.5B). Set one to use a hosted model.", file=sys.stderr)
        return LocalLlama()
    if not _endpoint_configured(base_url, api_key):
        raise LMError(
            f"model {model!r} cannot be reached: no OPENAI_API_KEY or OPENAI_BASE_URL is set; set one "
            f"(--api-key/--base-url), or use the model '{LOCAL_MODEL_NAME}' (--model local) for the embedded model",
            model=model,
        )
    from ._openai import OpenAIChat

    return OpenAIChat(model or DEFAULT_OPENAI_MODEL, base_url=base_url, api_key=api_key)


def _endpoint_configured(base_url: str | None, api_key: str | None) -> bool:
    return bool(base_url or os.environ.get("OPENAI_BASE_URL") or api_key or os.environ.get("OPENAI_API_KEY"))


def make_models(
    model: str | None, sub_model: str | None, base_url: str | None, api_key: str | None
) -> tuple[LM, LM]:
    """Root and sub model from CLI options and the environment (the same rules for every command).

    A model the user named (option or ``RECURSA_MODEL``/``RECURSA_SUB_MODEL``) that no endpoint can serve is
    an ``LMError`` naming the fix; only when no model is named does the embedded model stand in.
    """
    model = model or os.environ.get("RECURSA_MODEL") or None
    sub_model = sub_model or os.environ.get("RECURSA_SUB_MODEL") or None
    root = default_lm(model, base_url=base_url, api_key=api_key)
    if not sub_model or sub_model == model or (uses_local_model(sub_model, base_url, api_key) and
                                                 uses_local_model(model, base_url, api_key)):
        return root, root
    return root, default_lm(sub_model, base_url=base_url, api_key=api_key, announce=False)

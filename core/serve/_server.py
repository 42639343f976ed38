"""Running the app: the start-up checks that protect a server on a network, then uvicorn."""

from __future__ import annotations

import ipaddress
import sys

from .._lm import LM
from ._app import ServeConfig, create_app

__all__ = ["check_binding", "serve"]

SHUTDOWN_GRACE_S = 10
"""Seconds a stopping server waits for runs in flight before cancelling them (and their workers)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname may resolve anywhere


def check_binding(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token: anyone who reached it could spend the model budget
    and read every file under ``--root``. Raises ``ValueError`` naming the two ways out."""
    if not token and not is_loopback(host):
        raise ValueError(
            f"refusing to serve on {host} without a token: anyone who can reach it could spend your model budget "
            "and read files under --root; pass --token (or set RECURSA_SERVE_TOKEN), or bind to 127.0.0.1"
        )


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model: str | LM | None = None,
    sub_model: str | LM | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    config: ServeConfig | None = None,
    log_level: str = "info",
) -> None:
    """Serve the RLM at ``http://HOST:PORT/v1`` until the process is stopped.

    ``model``/``sub_model`` are names (as for ``recursa ask``; none and no endpoint configured means the
    embedded model) or ``LM`` objects. The binding check runs before any model is built or port bound.
    """
    import uvicorn

    config = config or ServeConfig()
    check_binding(host, config.token)
    root, sub = _models(model, sub_model, base_url, api_key)
    app = create_app(root, sub, config=config)
    auth = "bearer token required" if config.token else "no token (loopback only)"
    roots = ", ".join(config.roots) if config.roots else "none (file paths are refused)"
    print(f"recursa: serving model '{config.name}' (root {root.model}, sub {sub.model}) at http://{host}:{port}/v1; "
          f"{auth}; at most {config.max_concurrent_runs} runs at once; file roots: {roots}", file=sys.stderr,
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=SHUTDOWN_GRACE_S)


def _models(model: str | LM | None, sub_model: str | LM | None, base_url: str | None,
            api_key: str | None) -> tuple[LM, LM]:
    if not isinstance(model, str | None):
        sub = sub_model if not isinstance(sub_model, str | None) else model
        return model, sub
    from .._defaults import make_models

    root, sub = make_models(model, sub_model if isinstance(sub_model, str) else None, base_url, api_key)
    return root, sub_model if not isinstance(sub_model, str | None) else sub

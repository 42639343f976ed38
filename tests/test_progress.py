"""The CLI's live status line reads trace events; with display off it is a true no-op."""

from __future__ import annotations

import io
import time

from recursa import IterationStarted, LMCalled, SubCallsStarted
from recursa._progress import RunProgress


def test_status_line_counts_iterations_sub_calls_tokens_and_cost() -> None:
    clock = iter([0.0, 12.0]).__next__
    progress = RunProgress(file=io.StringIO(), enabled=False, get_time=clock)
    progress.update(IterationStarted(run_id="r", iteration=3, remaining={}))
    progress.update(SubCallsStarted(run_id="r", iteration=3, count=4))
    progress.update(LMCalled(run_id="r", role="sub", model="m", iteration=3, prompt="p", response="x",
                             input_tokens=1000, output_tokens=234, cost_usd=0.0123))
    line = progress.render().plain
    assert "iteration 3" in line and "sub-calls 4" in line and "tokens 1,234" in line
    assert "$0.0123" in line and "12s" in line


def test_disabled_progress_writes_nothing() -> None:
    out = io.StringIO()
    with RunProgress(file=out, enabled=False) as progress:
        progress.update(IterationStarted(run_id="r", iteration=1, remaining={}))
    assert out.getvalue() == ""


def test_clock_ticks_between_events() -> None:
    """During a model call no event arrives for a minute; the line must still show time passing."""
    from rich.console import Console

    now = [0.0]
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with RunProgress(console=console, get_time=lambda: now[0], refresh_per_second=50) as progress:
        progress.update(IterationStarted(run_id="r", iteration=1, remaining={}))
        assert "0s · thinking" in out.getvalue()
        now[0] = 42.0  # no event: only the display's own timer can redraw the line
        deadline = time.monotonic() + 5
        while "42s · thinking" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert "42s · thinking" in out.getvalue()


def test_cache_hits_are_counted_and_shown() -> None:
    progress = RunProgress(file=io.StringIO(), enabled=False, get_time=iter([0.0, 1.0]).__next__)
    progress.update(LMCalled(run_id="r", role="root", model="m", iteration=1, prompt="p", response="x", cached=True))
    assert progress.tally.cached == 1 and "tokens 0 · 1 cached" in progress.render().plain

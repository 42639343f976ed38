"""A live one-line progress display of a run (iteration, sub-calls, tokens, cost) for terminals."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ._trace import Event, IterationStarted, LMCalled, RunFinished, SubCallsStarted, Tally

__all__ = ["RunProgress"]


class RunProgress:
    """Feeds trace events to a ``Tally`` and shows its counts as a status line; ``enabled=False`` makes it a no-op.

    The line is redrawn ``refresh_per_second`` times a second, not only on events, so its clock keeps
    ticking through a model call that takes a minute. ``console`` (else one on ``file``, else stderr)
    and ``get_time`` are injectable for tests.
    """

    def __init__(
        self,
        *,
        file: IO[str] | None = None,
        enabled: bool = True,
        get_time: Callable[[], float] = time.monotonic,
        console: Console | None = None,
        refresh_per_second: float = 4,
    ) -> None:
        self.enabled = enabled
        self._console = console or Console(file=file, stderr=file is None)
        self._refresh_per_second = refresh_per_second
        self._get_time = get_time
        self._started = get_time()
        self.tally = Tally()
        self.last = "starting"
        """What the run is doing now, in a word or two."""
        self._live: Live | None = None

    def __enter__(self) -> RunProgress:
        if self.enabled:
            # get_renderable: every automatic refresh re-renders, so the elapsed time moves between events.
            self._live = Live(get_renderable=self.render, console=self._console,
                              refresh_per_second=self._refresh_per_second, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def update(self, event: Event) -> None:
        self.tally.update(event)
        if isinstance(event, IterationStarted) and event.depth == 0:
            self.last = "thinking"
        elif isinstance(event, SubCallsStarted):
            self.last = f"{event.count} sub-call(s)"
        elif isinstance(event, LMCalled) and event.role == "root":
            self.last = "running code"
        elif isinstance(event, RunFinished) and event.depth == 0:
            self.last = event.stopped_reason
        if self._live is not None:
            self._live.refresh()

    def render(self) -> Text:
        elapsed = self._get_time() - self._started
        tally = self.tally
        cached = f" · {tally.cached} cached" if tally.cached else ""
        return Text(
            f"recursa · iteration {tally.iteration} · sub-calls {tally.sub_calls} · tokens {tally.tokens:,}{cached} · "
            f"${tally.cost_usd:.4f} · {elapsed:.0f}s · {self.last}",
            style="dim",
        )

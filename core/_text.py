"""Text shortened for display (stream events, summaries, result rows, the trace page), saying how much was cut."""

from __future__ import annotations

from typing import overload

__all__ = ["clip"]


@overload
def clip(text: str, limit: int, *, note: str | None = None, end: bool = False) -> str: ...
@overload
def clip(text: None, limit: int, *, note: str | None = None, end: bool = False) -> None: ...
def clip(text: str | None, limit: int, *, note: str | None = None, end: bool = False) -> str | None:
    """``text`` cut to its first ``limit`` characters (its last, with ``end``: where a traceback's message is).

    ``note`` marks the cut; ``{cut}`` in it becomes the number of characters left out. By default it is
    ``"... [N more characters]"`` after the start, or ``"[N characters before] ..."`` before the end.
    ``None`` and texts within the limit come back unchanged.
    """
    if text is None or len(text) <= limit:
        return text
    if note is None:
        note = "[{cut:,} characters before] ..." if end else "... [{cut:,} more characters]"
    said = note.format(cut=len(text) - limit)
    return said + text[-limit:] if end else text[:limit] + said

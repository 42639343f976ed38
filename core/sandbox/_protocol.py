"""Host side of the wire format between the host and the REPL worker.

Every message is a JSON object preceded by its length as 4 big-endian bytes. The worker
(``_worker.py``) is a stdlib-only script and carries its own copy of these few lines; keep both in step.

Messages (``op``):

- host -> worker: ``exec`` {id, code, timeout}, ``get_var`` {id, name, timeout},
  ``sub_result`` {id, ok, results | error}
- worker -> host: ``ready`` {mechanisms, pid_namespace}, ``result`` {id, output, error, final, timed_out},
  ``var`` {id, value, error}, ``sub_call`` {id, prompts, recursive}
"""

from __future__ import annotations

import json
import struct
from typing import Any

__all__ = ["HEADER", "MAX_MESSAGE", "ProtocolError", "decode", "encode"]

HEADER = struct.Struct(">I")
MAX_MESSAGE = 2**32 - 1


class ProtocolError(Exception):
    """The worker sent bytes that are not a valid message (it crashed mid-write or model code wrote to the pipe)."""


def encode(message: dict[str, Any]) -> bytes:
    """Frame one message; lone surrogates are replaced so a strange string never breaks the pipe."""
    text = json.dumps(message, ensure_ascii=False, default=str)
    try:
        payload = text.encode("utf-8")
    except UnicodeEncodeError:
        payload = text.encode("utf-8", "replace")
    if len(payload) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(payload)} bytes is larger than the protocol allows")
    return HEADER.pack(len(payload)) + payload


def decode(payload: bytes) -> dict[str, Any]:
    """Parse one message body; anything but a JSON object with an ``op`` is a protocol error."""
    try:
        message = json.loads(payload.decode("utf-8", "replace"))
    except ValueError as exc:
        raise ProtocolError(f"worker sent invalid JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("worker sent a message without an 'op'")
    return message

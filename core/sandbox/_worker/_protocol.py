"""The wire format between the host and the REPL worker, one module that both sides import.

Every message is a JSON object preceded by its length as 4 big-endian bytes. Stdlib only: the worker imports it
as ``_worker._protocol`` (it runs with ``-I -S`` and never imports recursa), the host as
``recursa.sandbox._worker._protocol``.

Messages (``op``):

- host -> worker: ``exec`` {id, code, timeout}, ``get_var`` {id, name, timeout}, ``values`` {id, timeout},
  ``sub_result`` {id, ok, results | error}
- worker -> host: ``ready`` {mechanisms, pid_namespace}, ``result`` {id, output, error, final, timed_out},
  ``var`` {id, value, error}, ``values`` {id, values}, ``sub_call`` {id, prompts, recursive}
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

__all__ = ["HEADER", "MAX_MESSAGE", "ProtocolError", "decode", "encode", "read_message", "write_all"]

HEADER = struct.Struct(">I")
MAX_MESSAGE = 2**32 - 1


class ProtocolError(Exception):
    """The other side sent bytes that are not a valid message (it crashed mid-write or model code wrote to the pipe)."""


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


def read_message(fd: int) -> dict[str, Any] | None:
    """The next message from a blocking file descriptor (the worker's end), or None when the pipe closed."""
    header = _read_exact(fd, HEADER.size)
    payload = None if header is None else _read_exact(fd, HEADER.unpack(header)[0])
    return None if payload is None else decode(payload)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` (an encoded message) to a blocking file descriptor."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            return None
        got += k
    return bytes(buf)

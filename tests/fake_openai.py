"""A real OpenAI-compatible HTTP server for tests, so clients are tested over the wire, not mocked.

    with FakeOpenAIServer(responder=lambda request: "hello") as server:
        chat = OpenAIChat("fake-model", base_url=server.base_url)

It serves ``POST /v1/chat/completions`` (OpenAI's JSON shape, usage included) and ``GET /v1/models``
from a background thread, one thread per connection, so concurrent requests really overlap. The
test decides every reply through ``responder(request_json) -> str | dict``:

- a ``str`` is the assistant's text;
- a ``dict`` may hold ``text`` (``None`` gives ``"content": null``), ``usage`` (``None`` omits it),
  ``finish_reason``, ``status`` with ``error`` / ``code`` / ``type`` (an OpenAI-style error body),
  ``json`` (any body, sent as JSON), ``raw`` (str/bytes body sent as-is, with ``content_type``),
  ``headers``, ``delay`` (seconds, overrides the server's ``delay_s``), ``drop`` (close the
  connection without answering) and ``cut_after`` (send the headers, announcing the full length, and
  only that many bytes of the body, then hang up: a connection lost mid-body; with ``reset: True`` the
  hang-up is a TCP reset instead of an orderly close).

Counters are thread-safe: ``request_count``, ``requests_per_model``, ``in_flight``,
``max_in_flight`` and ``bodies``. A request is in flight from the moment its body is read until
just before its response bytes are written, so a client that allows N concurrent calls can never
be observed with more than N in flight.

Run ``python tests/fake_openai.py`` to serve by hand (echoes the last user message).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOpenAIServer", "Reply", "Responder", "closed_port_url", "echo", "scripted", "sequence"]

Reply = str | dict[str, Any]
Responder = Callable[[dict[str, Any]], Reply]


def echo(request: dict[str, Any]) -> Reply:
    """Default responder: answer with the last user message, prefixed by ``echo: ``."""
    user = [m.get("content") for m in request.get("messages", []) if m.get("role") == "user"]
    return f"echo: {user[-1] if user else ''}"


def sequence(*replies: Reply, then: Reply | None = None) -> Responder:
    """A responder that gives ``replies`` in order (one per request), then ``then`` forever.

    Handy for retry tests: ``sequence({"status": 429}, {"status": 500}, "ok")``.
    """
    pending = list(replies)
    lock = threading.Lock()

    def respond(request: dict[str, Any]) -> Reply:
        with lock:
            if pending:
                return pending.pop(0)
        if then is None:
            raise RuntimeError("sequence() ran out of scripted replies")
        return then

    return respond


def scripted(messages: list[dict[str, Any]], scripts: Mapping[str, Sequence[Reply]]) -> Reply:
    """A scripted root model's reply: the script whose tag is in the question, one reply per turn taken so far
    (the last again once they run out); ``"FINAL(no script)"`` when no tag is."""
    question = next(m["content"] for m in messages if m["role"] == "user")
    turn = sum(1 for m in messages if m["role"] == "assistant")
    for tag, replies in scripts.items():
        if tag in question:
            return replies[min(turn, len(replies) - 1)]
    return "FINAL(no script)"


def closed_port_url() -> str:
    """A ``base_url`` on 127.0.0.1 where nothing listens, for connection-refused tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _count_words(text: object) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _error_body(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class FakeOpenAIServer:
    """An OpenAI-compatible chat server on 127.0.0.1 (random free port) in a background thread."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        models: Iterable[str] | None = None,
        delay_s: float = 0.0,
        port: int = 0,
    ) -> None:
        self.responder: Responder = responder or echo
        """Decides each reply; may be swapped between requests."""
        self.models: set[str] | None = set(models) if models is not None else None
        """Served model names; ``None`` serves any name. Unknown names get OpenAI's 404."""
        self.delay_s = delay_s
        """Seconds to wait before every reply (a reply's own ``delay`` wins)."""
        self._port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._bound_port: int | None = None
        self._thread: threading.Thread | None = None
        self.reset_counters()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        """Bind and start serving; returns ``self``."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", self._port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._bound_port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port; delayed replies still pending are abandoned."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port; still readable after ``stop()`` (then nothing listens there)."""
        if self._bound_port is None:
            raise RuntimeError("FakeOpenAIServer was never started; use it as a context manager or start()")
        return self._bound_port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, ready for ``base_url=`` or ``OPENAI_BASE_URL``."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- counters ------------------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero every counter and forget received bodies."""
        with self._lock:
            self._request_count = 0
            self._per_model: Counter[str] = Counter()
            self._in_flight = 0
            self._max_in_flight = 0
            self._bodies: list[dict[str, Any]] = []

    @property
    def request_count(self) -> int:
        """Chat-completion requests received (including rejected ones)."""
        with self._lock:
            return self._request_count

    @property
    def requests_per_model(self) -> dict[str, int]:
        with self._lock:
            return dict(self._per_model)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most chat-completion requests that were being handled at the same moment."""
        with self._lock:
            return self._max_in_flight

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """A copy of the JSON bodies received, in arrival order."""
        with self._lock:
            return list(self._bodies)

    def _enter(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._request_count += 1
            self._per_model[str(body.get("model"))] += 1
            self._bodies.append(body)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    # -- replies -------------------------------------------------------------------------------

    def _reply(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes | None, dict[str, Any]]:
        """Status, headers, body bytes (``None``: drop the connection) and how to send them for one request."""
        status, headers, payload, spec = self._reply_spec(body)
        how = {k: spec[k] for k in ("cut_after", "reset") if k in spec}
        return status, headers, payload, how

    def _reply_spec(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes | None, dict[str, Any]]:
        model = body.get("model")
        if self.models is not None and model not in self.models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            return (*_json_reply(404, _error_body(message, "invalid_request_error", "model_not_found")), {})
        if body.get("stream"):
            return (*_json_reply(400, _error_body("streaming is not faked", "invalid_request_error", None)), {})
        try:
            reply = self.responder(body)
        except Exception as exc:  # a broken responder should fail the test loudly, not hang it
            return (*_json_reply(500, _error_body(f"responder raised {exc!r}", "server_error", None)), {})
        spec: dict[str, Any] = {"text": reply} if isinstance(reply, str) else dict(reply)
        delay = float(spec.get("delay", self.delay_s))
        if delay > 0:
            self._stopping.wait(delay)
        if spec.get("drop"):
            return 0, {}, None, spec
        status = int(spec.get("status", 200))
        headers = {str(k): str(v) for k, v in spec.get("headers", {}).items()}
        if "raw" in spec:
            raw = spec["raw"]
            headers.setdefault("Content-Type", spec.get("content_type", "application/json"))
            return status, headers, raw.encode() if isinstance(raw, str) else bytes(raw), spec
        if "json" in spec:
            status, base, payload = _json_reply(status, spec["json"])
            return status, {**base, **headers}, payload, spec
        if status >= 400:
            message = spec.get("error", f"fake error {status}")
            type_ = spec.get("type", "server_error" if status >= 500 else "invalid_request_error")
            status, base, payload = _json_reply(status, _error_body(message, type_, spec.get("code")))
            return status, {**base, **headers}, payload, spec
        status, base, payload = _json_reply(status, self._completion(body, spec))
        return status, {**base, **headers}, payload, spec

    def _completion(self, body: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        text = spec.get("text", "")
        completion: dict[str, Any] = {
            "id": f"chatcmpl-fake{self.request_count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": spec.get("model", body.get("model")),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": spec.get("finish_reason", "stop"),
                }
            ],
        }
        if "usage" in spec:
            if spec["usage"] is not None:
                completion["usage"] = spec["usage"]
        else:
            prompt = sum(_count_words(m.get("content")) for m in body.get("messages", []))
            answer = _count_words(text)
            completion["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": answer,
                "total_tokens": prompt + answer,
            }
        return completion

    def _models_list(self) -> dict[str, Any]:
        names = sorted(self.models) if self.models is not None else ["fake-model"]
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in names]
        return {"object": "list", "data": data}


def _json_reply(status: int, body: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a burst of concurrent connects must not hit the listen backlog
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out hang up mid-reply; that is expected, not worth a traceback.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(*_json_reply(200, self.server.fake._models_list()))
        else:
            self._send(*_json_reply(404, _error_body(f"no route {self.path}", "invalid_request_error", None)))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send(*_json_reply(404, _error_body(f"no route {self.path}", "invalid_request_error", None)))
            return
        try:
            body = json.loads(data)
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as exc:
            error = _error_body(f"invalid JSON body: {exc}", "invalid_request_error", None)
            self._send(*_json_reply(400, error))
            return
        fake = self.server.fake
        fake._enter(body)
        try:
            status, headers, payload, how = fake._reply(body)
        finally:
            fake._leave()  # before any byte is written: the client cannot have its answer yet
        if payload is None:
            self._hang_up(reset=bool(how.get("reset")))
            return
        self._send(status, headers, payload, cut_after=how.get("cut_after"), reset=bool(how.get("reset")))

    def _send(
        self, status: int, headers: dict[str, str], payload: bytes, *, cut_after: int | None = None,
        reset: bool = False,
    ) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if cut_after is None:
            self.wfile.write(payload)
            self.close_connection = True
            return
        self.wfile.write(payload[: int(cut_after)])
        self.wfile.flush()
        self._hang_up(reset=reset)

    def _hang_up(self, *, reset: bool) -> None:
        """Close the connection now: an orderly shutdown, or a TCP reset (RST) when ``reset``."""
        self.close_connection = True
        if reset:  # linger on, timeout 0: close() sends RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        self.connection.shutdown(socket.SHUT_RDWR)


if __name__ == "__main__":
    with FakeOpenAIServer() as server:
        print(f"serving on {server.base_url} (Ctrl-C to stop)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass

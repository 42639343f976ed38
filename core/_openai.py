"""The default LM client: any OpenAI-compatible chat-completions endpoint.

One class covers OpenAI itself and the servers that speak its protocol (vLLM, llama.cpp server,
Ollama, LM Studio, OpenRouter) through ``base_url``. The retry policy lives here, explicit and
tested: 408, 429, 5xx, timeouts
and connection failures are retried with exponential backoff and jitter, honouring ``Retry-After``;
every other 4xx, a host name that does not resolve and a reply that is not a chat completion fail at
once, since waiting cannot fix them. Each retry is logged on the ``recursa.retries`` logger at INFO
(silent in a library unless the application shows it; the CLI prints it on stderr). Failures become
recursa's ``LMError`` family with one-sentence, actionable messages that never contain the API key.

Requests go out through ``httpx`` directly rather than the ``openai`` SDK: a chat completion is one JSON
POST, and importing the SDK (its hundreds of type modules) took half a second, twice everything else
between ``recursa ask`` and its first request. The wire format is the SDK's: the same JSON body
(``extra_body`` merged into it), ``Authorization: Bearer``, and OpenAI's error bodies read the same way.
``httpx`` itself is imported on the first request, so ``import recursa`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from ._exceptions import LMConnectionError, LMError, LMResponseError, LMTimeoutError, ModelNotFoundError
from ._lm import Completion, Message, Usage
from ._pricing import Price, price_for

if TYPE_CHECKING:
    import httpx

__all__ = ["OpenAIChat"]

logger = logging.getLogger("recursa")
retry_logger = logging.getLogger("recursa.retries")
"""One INFO record per retry, e.g. ``gpt-5-mini: HTTP 503 from http://host/v1, retry 2/4 in 1.2s``."""

OPENAI_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "no-key-needed"
"""Sent to a custom ``base_url`` when no key is set: some servers want the header, local ones ignore its value."""

_RETRY_STATUSES = frozenset({408, 429})
_NO_RETRY_CODES = frozenset({"insufficient_quota"})  # a 429 that waiting will not fix
_KEEPALIVE = 64
"""Idle connections kept open per client: a wave of concurrent sub-calls finds them warm instead of each
opening a new one (the run's concurrency limit, not the pool, decides how many are in flight)."""


class _StatusError(Exception):
    """The endpoint answered with an HTTP error status; ``body`` is its JSON (or text), ``code`` OpenAI's code."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.body = body
        self.headers = headers
        inner = body.get("error") if isinstance(body, Mapping) else None
        code = inner.get("code") if isinstance(inner, Mapping) else None
        self.code = str(code) if code else None


class OpenAIChat:
    """A chat model behind an OpenAI-compatible endpoint, usable as recursa's root or sub model.

    ``OpenAIChat("gpt-5-mini")`` talks to OpenAI with ``OPENAI_API_KEY``;
    ``OpenAIChat("qwen3-8b", base_url="http://localhost:8000/v1")`` talks to a local server and
    needs no key. ``default_params`` (``temperature=0``, ``max_tokens=512``, ...) go with every
    request; parameters OpenAI does not define (``top_k``, ``min_p``) are sent in the request body
    as-is, which is what vLLM and llama.cpp expect.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120,
        max_retries: int = 4,
        prices: Mapping[str, Price] | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        **default_params: Any,
    ) -> None:
        """Configure the client; nothing connects until the first ``complete``.

        ``base_url`` and ``api_key`` fall back to ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``.
        ``max_retries`` counts retries after the first attempt. The n-th retry waits about
        ``backoff_s * 2**n`` seconds (jittered), or the server's ``Retry-After``, never more than
        ``max_backoff_s``. ``prices`` overrides the built-in price table used for ``cost_usd``.
        """
        if not model:
            raise ValueError("OpenAIChat needs a model name, e.g. OpenAIChat('gpt-5-mini')")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.model = model
        resolved_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        if resolved_url is not None:
            _check_base_url(resolved_url, model)
        self.base_url: str | None = resolved_url.rstrip("/") if resolved_url else None
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if self._api_key is None and self.base_url is not None:
            self._api_key = PLACEHOLDER_KEY
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.prices: dict[str, Price] | None = dict(prices) if prices is not None else None
        self.default_params: dict[str, Any] = default_params
        self._client: httpx.AsyncClient | None = None
        self._client_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def __repr__(self) -> str:
        return f"OpenAIChat(model={self.model!r}, base_url={self.url!r})"

    @property
    def url(self) -> str:
        """The endpoint requests go to, for messages and traces."""
        return self.base_url or OPENAI_URL

    def sampling_defaults(self) -> dict[str, Any]:
        """Parameters sent with every request unless a call overrides them; part of a cached call's key.

        No ``temperature`` here means the server's default, which samples (OpenAI's is 1): such calls are
        cached only when the cache is asked to cache sampled calls too.
        """
        return dict(self.default_params)

    @property
    def price(self) -> Price | None:
        """This model's price, or ``None`` when unknown (then ``cost_usd`` is always 0.0)."""
        return price_for(self.model, self.prices)

    async def complete(self, messages: list[Message], **params: Any) -> Completion:
        """Answer ``messages``, retrying transient failures; raise an ``LMError`` subclass otherwise.

        ``params`` override ``default_params`` for this call only.
        """
        client = self._get_client()
        request = self._build_request(messages, {**self.default_params, **params})
        body = _encode(request)
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                response = await self._post(client, body)
            except json.JSONDecodeError as exc:
                raise LMResponseError(
                    f"model {request['model']!r} at {self.url} sent a reply that is not valid JSON ({exc}); "
                    "is base_url pointing at an OpenAI-compatible API?",
                    model=request["model"],
                ) from exc
            except Exception as exc:
                if not _is_transport_error(exc):
                    raise
                delay = self._retry_delay(exc, attempt)
                if delay is None:
                    raise self._to_lm_error(exc, request["model"], attempt + 1) from exc
                retry_logger.info(
                    "%s: %s, retry %d/%d in %.1fs",
                    request["model"], self._describe(exc), attempt + 1, self.max_retries, delay,
                )
                await anyio.sleep(delay)
                attempt += 1
                continue
            logger.debug("%s answered in %.2fs", request["model"], time.monotonic() - started)
            try:
                return self._to_completion(response, request["model"], messages)
            except LMError:
                raise
            except Exception as exc:  # a shape no check above foresaw: still an LMResponseError, never a crash
                raise LMResponseError(
                    f"model {request['model']!r} at {self.url} sent a reply recursa could not read "
                    f"({type(exc).__name__}: {self._redact(str(exc))[:200]})",
                    model=request["model"],
                ) from exc

    async def aclose(self) -> None:
        """Close the underlying HTTP connections; the client reopens them if used again."""
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> OpenAIChat:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- helpers -------------------------------------------------------------------------------

    def _get_client(self) -> httpx.AsyncClient:
        """The HTTP client, created on first use and again whenever the event loop changes.

        Connection pools belong to the loop that opened them; sync wrappers that run each call in a
        fresh loop would otherwise reuse dead connections.
        """
        loop = _running_loop()
        if self._client is not None and (self._client_loop is None or self._client_loop() is loop):
            return self._client
        if self._api_key is None:
            raise LMError(
                f"no API key for model {self.model!r} at {self.url}: set OPENAI_API_KEY, pass api_key=, "
                "or pass base_url= for a local server that needs none",
                model=self.model,
            )
        import httpx

        self._client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json",
                     "Accept": "application/json", "User-Agent": "recursa"},
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=_KEEPALIVE),
            # Plain http needs no TLS: skip loading the CA bundle (~50 ms); https verifies as always.
            verify=not self.url.startswith("http://"),
        )
        self._client_loop = weakref.ref(loop) if loop is not None else None
        return self._client

    async def _post(self, client: httpx.AsyncClient, body: bytes) -> Any:
        """One attempt: the parsed JSON reply, or ``_StatusError`` / an ``httpx`` transport error."""
        response = await client.post(f"{self.url}/chat/completions", content=body)
        if response.status_code >= 400:
            try:
                detail: Any = response.json()
            except ValueError:
                detail = response.text
            raise _StatusError(response.status_code, detail, response.headers)
        if "json" not in response.headers.get("content-type", "application/json"):
            return response.text  # an HTML error page or the like: "not a chat completion", showing its start
        return json.loads(response.content)

    def _build_request(self, messages: list[Message], params: dict[str, Any]) -> dict[str, Any]:
        """The JSON body of a chat-completions request: model, messages, the parameters, ``extra_body`` merged in."""
        if params.get("stream"):
            raise ValueError("OpenAIChat.complete does not stream; drop stream=True")
        params.pop("stream", None)
        model = params.pop("model", self.model)
        if self.base_url is None or "api.openai.com" in self.base_url:
            # OpenAI's reasoning models reject max_tokens; max_completion_tokens works for every model.
            if "max_tokens" in params and "max_completion_tokens" not in params:
                params["max_completion_tokens"] = params.pop("max_tokens")
        extra_body = dict(params.pop("extra_body", None) or {})
        return {"model": model, "messages": messages, **params, **extra_body}

    def _retry_delay(self, exc: Exception, attempt: int) -> float | None:
        """Seconds to wait before retrying ``exc``, or ``None`` when it must not be retried."""
        if attempt >= self.max_retries or not _is_retryable(exc):
            return None
        headers = exc.headers if isinstance(exc, _StatusError) else None
        return backoff_delay(
            attempt, base_s=self.backoff_s, max_s=self.max_backoff_s, retry_after_s=_retry_after(headers)
        )

    def _to_lm_error(self, exc: Exception, model: str, attempts: int) -> LMError:
        """Translate a failed attempt into recursa's error family, with the key redacted."""
        import httpx

        tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        if isinstance(exc, httpx.TimeoutException):
            return LMTimeoutError(
                f"model {model!r} at {self.url} did not answer within {self.timeout_s:g}s ({tries}); "
                "raise timeout_s= or check that the server is not overloaded",
                model=model,
            )
        if isinstance(exc, httpx.TransportError):
            if (host := _unresolved_host(exc, self.url)) is not None:
                return LMConnectionError(
                    f"could not resolve the host {host!r} of {self.url} for model {model!r}: check the "
                    "spelling of base_url (or OPENAI_BASE_URL) and your network's DNS",
                    model=model,
                )
            cause = self._redact(str(exc.__cause__ or exc))
            return LMConnectionError(
                f"could not connect to {self.url} for model {model!r} ({tries}): {cause}; "
                "is the server running and is base_url right?",
                model=model,
            )
        if isinstance(exc, _StatusError):
            status, detail, code = exc.status_code, self._redact(_error_message(exc)), exc.code
            if status == 404 or code == "model_not_found":
                return ModelNotFoundError(
                    f"model {model!r} is not served by {self.url}: {detail} "
                    "(check the model name, and that base_url ends in /v1)",
                    model=model,
                )
            if status in (401, 403):
                return LMError(
                    f"{self.url} refused the credentials for model {model!r} (HTTP {status}): {detail}; "
                    "check OPENAI_API_KEY or the api_key= argument",
                    model=model,
                )
            if status == 429:
                hint = "check your plan and billing" if code in _NO_RETRY_CODES else "lower the concurrency"
                return LMError(
                    f"{self.url} rate-limited model {model!r} (HTTP 429, {tries}): {detail}; {hint}",
                    model=model,
                )
            if status >= 500:
                return LMError(
                    f"{self.url} failed on model {model!r} with HTTP {status} ({tries}): {detail}",
                    model=model,
                )
            return LMError(
                f"{self.url} rejected the request for model {model!r} (HTTP {status}): {detail}",
                model=model,
            )
        return LMError(f"model {model!r} at {self.url} failed: {self._redact(str(exc))}", model=model)

    def _to_completion(self, response: Any, model: str, messages: list[Message]) -> Completion:
        """Check that ``response`` (the parsed JSON) is a usable chat completion and turn it into a ``Completion``."""
        where = f"model {model!r} at {self.url}"
        if not isinstance(response, Mapping):
            raise LMResponseError(
                f"{where} sent a reply that is not a chat completion: {self._redact(str(response))[:200]!r}",
                model=model,
            )
        choices = response.get("choices")
        if not isinstance(choices, list) or not choices:
            error = response.get("error")  # some servers put an error in a 200 reply
            said = f": {self._redact(str(error.get('message', error)))[:300]}" if isinstance(error, Mapping) else ""
            raise LMResponseError(f"{where} sent a completion with no choices{said}", model=model)
        choice = choices[0] if isinstance(choices[0], Mapping) else {}
        message = choice.get("message") if isinstance(choice.get("message"), Mapping) else {}
        content = message.get("content")
        if isinstance(content, list):  # some servers send content parts
            content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        if not isinstance(content, str):
            finish = choice.get("finish_reason")
            refusal = message.get("refusal")
            if refusal:
                reason = f"the model refused: {refusal}"
            elif finish == "length":
                reason = "it ran out of tokens before answering (finish_reason=length); raise max_tokens"
            else:
                reason = f"finish_reason={finish}"
            raise LMResponseError(f"{where} sent a completion without text content: {reason}", model=model)
        # Some servers send no usage, or nonsense: estimate it then, so token budgets still hold.
        usage = _usage(response.get("usage")) or Usage.estimate(messages, content)
        served = response.get("model")
        served = served if isinstance(served, str) and served else model
        price = price_for(model, self.prices) or price_for(served, self.prices)
        cost = price.cost(usage) if price is not None else 0.0
        return Completion(text=content, usage=usage, cost_usd=cost, model=served)

    def _describe(self, exc: Exception) -> str:
        """What went wrong, in a few words, for a retry notice."""
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return f"no answer from {self.url} within {self.timeout_s:g}s"
        if isinstance(exc, _StatusError):
            return f"HTTP {exc.status_code} from {self.url}"
        cause = self._redact(str(exc.__cause__ or exc)) or type(exc).__name__
        return f"connection to {self.url} failed ({cause})"

    def _redact(self, text: str) -> str:
        key = self._api_key
        if key and key != PLACEHOLDER_KEY and len(key) >= 4:
            text = text.replace(key, "***")
        return text


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rand: float | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt + 1``.

    A server's ``Retry-After`` wins (it knows when it will be ready), capped at ``max_s`` so a
    hostile or confused header cannot stall a run. Otherwise exponential backoff with "equal
    jitter": between half and all of ``base_s * 2**attempt``, capped at ``max_s``; the jitter keeps
    a burst of concurrent sub-calls from retrying in lockstep.
    """
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), max_s)
    ceiling = min(base_s * 2.0**attempt, max_s)
    fraction = random.random() if rand is None else rand
    return ceiling * (0.5 + fraction / 2)


def _is_transport_error(exc: Exception) -> bool:
    """An attempt that failed on the way: an error status, or a request that did not get through."""
    import httpx

    return isinstance(exc, _StatusError | httpx.RequestError)


def _is_retryable(exc: Exception) -> bool:
    import httpx

    if isinstance(exc, httpx.TransportError):  # includes timeouts
        return not any(isinstance(cause, socket.gaierror) for cause in _causes(exc))
    if isinstance(exc, _StatusError):
        if exc.code in _NO_RETRY_CODES:
            return False
        return exc.status_code in _RETRY_STATUSES or exc.status_code >= 500
    return False


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """The delay a ``retry-after-ms`` / ``retry-after`` header asks for (seconds or HTTP date)."""
    if not headers:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) / divisor
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        import email.utils

        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(when.timestamp() - time.time(), 0.0)
    return None


def _error_message(exc: _StatusError) -> str:
    """The server's own words: ``error.message`` from the JSON body, else the start of the body."""
    body = exc.body
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, Mapping) else inner
        if message:
            return str(message)
    if isinstance(body, str) and body.strip():
        return body.strip()[:300]
    return f"HTTP {exc.status_code} with no explanation"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the chain of exceptions behind it (httpx -> httpcore -> socket)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _unresolved_host(exc: BaseException, url: str) -> str | None:
    """The host name of ``url`` when ``exc`` comes from DNS resolution failing, else ``None``."""
    from urllib.parse import urlsplit

    if not any(isinstance(cause, socket.gaierror) for cause in _causes(exc)):
        return None
    return urlsplit(url).hostname or url


def _check_base_url(url: str, model: str) -> None:
    """Refuse a base URL no request could reach (no scheme, no host) before the first call, not after retries."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        message = f"base_url {url!r} for model {model!r} is not a valid URL: {exc}"
        raise LMConnectionError(message, model=model) from None
    if parts.scheme in ("http", "https") and host:
        return
    if parts.scheme in ("http", "https"):
        fix = "it has no host name"
    elif "://" in url:
        fix = "only http:// and https:// are supported"
    else:
        fix = f"it needs a scheme: 'http://{url}'"
    raise LMConnectionError(f"base_url {url!r} for model {model!r} is not an http(s) URL: {fix}", model=model)


def _usage(usage: Any) -> Usage | None:
    """The token counts the server reported, or ``None`` when it sent none or ones that cannot be true."""
    if usage is None:
        return None
    values = [usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
              for name in ("prompt_tokens", "completion_tokens")]
    if values == [None, None]:
        return None
    counts = []
    for value in (v or 0 for v in values):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e12:
            return None
        counts.append(int(value))
    return Usage(input_tokens=counts[0], output_tokens=counts[1])


def _encode(request: dict[str, Any]) -> bytes:
    """The request as UTF-8 JSON; text with lone surrogates (undecodable bytes a REPL read) goes as ``\\u`` escapes."""
    try:
        return json.dumps(request, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(request).encode()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (trio): one client for the object's lifetime
        return None

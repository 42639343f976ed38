"""OpenAIChat against a real HTTP server: the wire format, the retry policy and the error mapping."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from fake_openai import FakeOpenAIServer, closed_port_url, sequence
from recursa._exceptions import (
    LMConnectionError,
    LMError,
    LMResponseError,
    LMTimeoutError,
    ModelNotFoundError,
)
from recursa._lm import LM, Usage
from recursa._openai import OpenAIChat, backoff_delay
from recursa._pricing import DEFAULT_PRICES, Price, cost_of, price_for

SECRET = "sk-test-0123456789abcdefSECRET"
HI = [{"role": "user", "content": "say hi"}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def chat(server: FakeOpenAIServer | str, model: str = "gpt-5-mini", **kwargs: Any) -> OpenAIChat:
    """A client with test-sized backoff, pointed at ``server``."""
    url = server if isinstance(server, str) else server.base_url
    kwargs.setdefault("backoff_s", 0.001)
    kwargs.setdefault("max_backoff_s", 0.05)
    return OpenAIChat(model, base_url=url, api_key=SECRET, **kwargs)


# -- round trip ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_round_trip_text_usage_and_cost() -> None:
    reply = {"text": "hi there", "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}
    with FakeOpenAIServer(lambda request: reply) as server:
        async with chat(server) as lm:
            assert isinstance(lm, LM)
            completion = await lm.complete(HI)
    assert completion.text == "hi there"
    assert completion.usage == Usage(input_tokens=1000, output_tokens=500)
    assert completion.cost_usd == pytest.approx((1000 * 0.25 + 500 * 2.00) / 1e6)
    assert completion.model == "gpt-5-mini"
    assert server.bodies == [{"model": "gpt-5-mini", "messages": HI}]


@pytest.mark.anyio
async def test_base_url_is_honoured_and_key_is_sent() -> None:
    with FakeOpenAIServer(models=["local-model"]) as server:
        lm = chat(server, model="local-model")
        completion = await lm.complete(HI)
        await lm.aclose()
    assert completion.text == "echo: say hi"
    assert server.requests_per_model == {"local-model": 1}
    assert completion.cost_usd == 0.0 and lm.price is None


@pytest.mark.anyio
async def test_env_base_url_and_placeholder_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        lm = OpenAIChat("whatever")  # no key anywhere: a local server needs none
        assert (await lm.complete(HI)).text == "echo: say hi"
        await lm.aclose()
    assert server.request_count == 1


@pytest.mark.anyio
async def test_missing_key_without_base_url_explains_the_fix() -> None:
    with pytest.raises(LMError, match="OPENAI_API_KEY"):
        await OpenAIChat("gpt-5-mini").complete(HI)


@pytest.mark.anyio
async def test_default_params_merge_and_unknown_params_go_in_the_body() -> None:
    with FakeOpenAIServer() as server:
        lm = chat(server, temperature=0.0, max_tokens=64, top_k=20)
        await lm.complete(HI, temperature=0.7, seed=3)
        await lm.aclose()
    (body,) = server.bodies
    assert body["temperature"] == 0.7
    assert body["max_tokens"] == 64  # a custom server gets max_tokens unchanged
    assert body["top_k"] == 20 and body["seed"] == 3


def test_max_tokens_becomes_max_completion_tokens_on_openai() -> None:
    lm = OpenAIChat("gpt-5-mini", api_key=SECRET, max_tokens=64)
    request = lm._build_request(HI, dict(lm.default_params))
    assert request["max_completion_tokens"] == 64 and "max_tokens" not in request


@pytest.mark.anyio
async def test_usage_missing_is_estimated_so_token_budgets_hold() -> None:
    reply = {"text": "x" * 400, "usage": None}
    with FakeOpenAIServer(lambda request: reply) as server:
        completion = await chat(server, model="unpriced").complete([{"role": "user", "content": "y" * 800}])
    assert completion.usage == Usage(input_tokens=200, output_tokens=100)  # about 4 characters a token
    assert completion.cost_usd == 0.0


@pytest.mark.parametrize(
    "usage",
    ["garbage", {"prompt_tokens": "abc", "completion_tokens": 1}, {"prompt_tokens": -5, "completion_tokens": 1e30}],
    ids=["not-an-object", "not-a-number", "impossible"],
)
@pytest.mark.anyio
async def test_nonsense_usage_is_estimated_and_nonsense_model_ignored(usage: Any) -> None:
    reply = {"text": "x" * 400, "usage": usage, "model": 5}
    with FakeOpenAIServer(lambda request: reply) as server:
        completion = await chat(server, model="unpriced").complete([{"role": "user", "content": "y" * 800}])
    assert completion.usage == Usage(input_tokens=200, output_tokens=100)
    assert completion.model == "unpriced"


@pytest.mark.anyio
async def test_dated_model_in_reply_is_priced() -> None:
    usage = {"prompt_tokens": 10**6, "completion_tokens": 0}
    reply = {"text": "ok", "model": "gpt-4o-mini-2024-07-18", "usage": usage}
    with FakeOpenAIServer(lambda request: reply) as server:
        completion = await chat(server, model="my-alias").complete(HI)
    assert completion.model == "gpt-4o-mini-2024-07-18"
    assert completion.cost_usd == pytest.approx(0.15)


@pytest.mark.anyio
async def test_concurrent_calls_share_one_client() -> None:
    with FakeOpenAIServer(delay_s=0.1) as server:
        lm = chat(server)
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(lm.complete, HI)
        await lm.aclose()
    assert server.request_count == 8
    assert server.max_in_flight == 8


def test_client_survives_a_new_event_loop_per_call() -> None:
    """Sync wrappers may run each call in a fresh loop; pooled connections must not leak across."""
    with FakeOpenAIServer() as server:
        lm = chat(server)
        for _ in range(3):
            assert anyio.run(lm.complete, HI).text == "echo: say hi"
    assert server.request_count == 3


# -- retries -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_retries_429_and_500_then_succeeds() -> None:
    with FakeOpenAIServer(sequence({"status": 429}, {"status": 500}, {"status": 503}, "finally")) as server:
        completion = await chat(server).complete(HI)
    assert completion.text == "finally"
    assert server.request_count == 4


@pytest.mark.anyio
async def test_gives_up_after_max_retries() -> None:
    with FakeOpenAIServer(lambda request: {"status": 500, "error": "boom"}) as server:
        with pytest.raises(LMError, match=r"HTTP 500 \(after 3 attempts\): boom") as caught:
            await chat(server, max_retries=2).complete(HI)
    assert server.request_count == 3
    assert type(caught.value) is LMError


@pytest.mark.anyio
async def test_no_retry_on_400() -> None:
    with FakeOpenAIServer(lambda request: {"status": 400, "error": "bad temperature"}) as server:
        with pytest.raises(LMError, match="HTTP 400.*bad temperature"):
            await chat(server).complete(HI)
    assert server.request_count == 1


@pytest.mark.anyio
async def test_no_retry_when_quota_is_exhausted() -> None:
    reply = {"status": 429, "error": "You exceeded your current quota", "code": "insufficient_quota"}
    with FakeOpenAIServer(lambda request: reply) as server:
        with pytest.raises(LMError, match="billing"):
            await chat(server).complete(HI)
    assert server.request_count == 1


@pytest.mark.anyio
async def test_retry_after_is_honoured() -> None:
    responder = sequence({"status": 429, "headers": {"Retry-After": "0.3"}}, "ok")
    with FakeOpenAIServer(responder) as server:
        started = time.monotonic()
        await chat(server, max_backoff_s=5).complete(HI)
    assert time.monotonic() - started >= 0.3
    assert server.request_count == 2


@pytest.mark.anyio
async def test_retry_after_is_capped() -> None:
    responder = sequence({"status": 429, "headers": {"retry-after": "3600"}}, "ok")
    with FakeOpenAIServer(responder) as server:
        started = time.monotonic()
        await chat(server, max_backoff_s=0.05).complete(HI)
    assert time.monotonic() - started < 2


def test_backoff_grows_exponentially_with_jitter_and_cap() -> None:
    assert backoff_delay(0, base_s=1, max_s=30, rand=1.0) == 1.0
    assert backoff_delay(3, base_s=1, max_s=30, rand=1.0) == 8.0
    assert backoff_delay(3, base_s=1, max_s=30, rand=0.0) == 4.0  # jitter: half to all
    assert backoff_delay(10, base_s=1, max_s=30, rand=1.0) == 30.0
    assert backoff_delay(0, base_s=1, max_s=30, retry_after_s=7) == 7.0
    assert backoff_delay(0, base_s=1, max_s=30, retry_after_s=99) == 30.0
    assert all(0.5 <= backoff_delay(0, base_s=1, max_s=30) <= 1.0 for _ in range(100))


# -- error mapping -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_unknown_model_is_model_not_found() -> None:
    with FakeOpenAIServer(models=["served-model"]) as server:
        with pytest.raises(ModelNotFoundError) as caught:
            await chat(server, model="nope-model").complete(HI)
    message = str(caught.value)
    assert f"model 'nope-model' is not served by {server.base_url}" in message
    assert "does not exist" in message
    assert caught.value.model == "nope-model"
    assert server.request_count == 1


@pytest.mark.anyio
async def test_auth_failure_hints_at_the_key_without_showing_it() -> None:
    reply = {"status": 401, "error": f"Incorrect API key provided: {SECRET}", "code": "invalid_api_key"}
    with FakeOpenAIServer(lambda request: reply) as server:
        lm = chat(server)
        with pytest.raises(LMError, match="OPENAI_API_KEY") as caught:
            await lm.complete(HI)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(lm) and SECRET not in str(lm)
    assert server.request_count == 1


@pytest.mark.parametrize(
    "reply",
    [
        {"raw": "<html>not json</html>"},
        {"raw": "<html>not json</html>", "content_type": "text/html"},
        {"json": {"id": "x", "choices": []}},
        {"json": {"unexpected": True}},
        {"json": ["a", "list"]},
        {"text": None},
        {"text": None, "finish_reason": "length"},
    ],
    ids=["bad-json", "html", "no-choices", "no-choices-key", "list-body", "null-content", "null-length"],
)
@pytest.mark.anyio
async def test_unusable_reply_is_response_error(reply: dict[str, Any]) -> None:
    with FakeOpenAIServer(lambda request: reply) as server:
        with pytest.raises(LMResponseError, match="model 'gpt-5-mini' at"):
            await chat(server).complete(HI)
    assert server.request_count == 1  # a malformed reply is not retried


@pytest.mark.anyio
async def test_length_without_content_says_to_raise_max_tokens() -> None:
    with FakeOpenAIServer(lambda request: {"text": None, "finish_reason": "length"}) as server:
        with pytest.raises(LMResponseError, match="max_tokens"):
            await chat(server).complete(HI)


@pytest.mark.anyio
async def test_server_down_is_connection_error_naming_the_url() -> None:
    url = closed_port_url()
    started = time.monotonic()
    with pytest.raises(LMConnectionError) as caught:
        await chat(url, max_retries=2).complete(HI)
    assert time.monotonic() - started < 5
    assert url in str(caught.value) and "after 3 attempts" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.anyio
async def test_dropped_connection_is_retried() -> None:
    with FakeOpenAIServer(sequence({"drop": True}, "ok")) as server:
        assert (await chat(server).complete(HI)).text == "ok"
    assert server.request_count == 2


@pytest.mark.anyio
async def test_timeout_is_timeout_error_after_retries() -> None:
    with FakeOpenAIServer(delay_s=2.0) as server:
        started = time.monotonic()
        with pytest.raises(LMTimeoutError, match=r"within 0.2s \(after 2 attempts\)"):
            await chat(server, timeout_s=0.2, max_retries=1).complete(HI)
        elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert server.request_count == 2


@pytest.mark.parametrize(
    ("url", "hint"),
    [("localhost:8000/v1", "'http://localhost:8000/v1'"), ("ftp://host/v1", "http:// and https://"),
     ("http:///v1", "no host name")],
)
def test_malformed_base_url_fails_before_any_request(url: str, hint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LMConnectionError, match=f"base_url {url!r}.*{hint}"):
        OpenAIChat("m", base_url=url)
    monkeypatch.setenv("OPENAI_BASE_URL", url)  # the environment is held to the same rule
    with pytest.raises(LMConnectionError, match="is not an http"):
        OpenAIChat("m")


@pytest.mark.anyio
async def test_unresolvable_host_is_not_retried() -> None:
    started = time.monotonic()
    with pytest.raises(LMConnectionError, match="could not resolve the host 'no-such-host.invalid'") as caught:
        await OpenAIChat("m", base_url="http://no-such-host.invalid/v1", backoff_s=2.0).complete(HI)
    assert time.monotonic() - started < 1.0  # one retry would wait at least 1 s
    assert "check the spelling of base_url" in str(caught.value)


@pytest.mark.anyio
async def test_each_retry_is_logged_and_the_library_stays_quiet(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeOpenAIServer(sequence({"status": 503}, {"drop": True}, "ok")) as server:
        with caplog.at_level("INFO", logger="recursa.retries"):
            assert (await chat(server, model="gpt-5-mini").complete(HI)).text == "ok"
    notices = [r.getMessage() for r in caplog.records if r.name == "recursa.retries"]
    assert len(notices) == 2
    assert notices[0].startswith(f"gpt-5-mini: HTTP 503 from {server.base_url}, retry 1/4 in ")
    assert notices[1].startswith(f"gpt-5-mini: connection to {server.base_url} failed (")
    assert "retry 2/4 in " in notices[1]
    caplog.clear()
    with FakeOpenAIServer(sequence({"status": 503}, "ok")) as server:
        await chat(server).complete(HI)
    assert capsys.readouterr().err == ""  # no handler configured: INFO records print nothing


def test_repr_shows_model_and_url_not_key() -> None:
    lm = OpenAIChat("gpt-5-mini", api_key=SECRET)
    assert repr(lm) == "OpenAIChat(model='gpt-5-mini', base_url='https://api.openai.com/v1')"


# -- prices --------------------------------------------------------------------------------------


def test_price_lookup_prefix_vendor_and_overrides() -> None:
    assert price_for("gpt-5-mini-2025-08-07") == DEFAULT_PRICES["gpt-5-mini"]
    assert price_for("GPT-4o-2024-08-06") == DEFAULT_PRICES["gpt-4o"]
    assert price_for("openai/gpt-5-nano") == DEFAULT_PRICES["gpt-5-nano"]
    assert price_for("anthropic/claude-sonnet-4.5") == Price(3.0, 15.0)
    assert price_for("gpt-5-pro") is None  # not a snapshot of gpt-5: unknown, not mispriced
    assert price_for("llama-3-8b") is None
    mine = {"gpt-5-mini": Price(1.0, 1.0), "llama-3-8b": Price(0.0, 0.1)}
    assert price_for("gpt-5-mini", mine) == Price(1.0, 1.0)
    assert price_for("gpt-5", mine) == DEFAULT_PRICES["gpt-5"]
    assert cost_of("llama-3-8b", Usage(10, 10**6), mine) == pytest.approx(0.1)
    assert cost_of("unknown", Usage(10**6, 10**6)) == 0.0


@pytest.mark.anyio
async def test_client_uses_custom_prices() -> None:
    reply = {"text": "ok", "usage": {"prompt_tokens": 2 * 10**6, "completion_tokens": 0}}
    with FakeOpenAIServer(lambda request: reply) as server:
        lm = chat(server, model="local", prices={"local": Price(0.5, 1.0)})
        completion = await lm.complete(HI)
    assert completion.cost_usd == pytest.approx(1.0)

"""One concurrency limit for every LM request, at every depth: measured at a real HTTP server."""

from __future__ import annotations

from typing import Any

import pytest
from fake_openai import FakeOpenAIServer
from recursa import RLM, Budget, OpenAIChat

pytestmark = pytest.mark.anyio

BATCH = "```repl\nanswers = llm_query_batched([f'item {i}' for i in range(32)])\nprint(len(answers))\n```"


def reply(request: dict[str, Any]) -> dict[str, Any] | str:
    messages = request["messages"]
    if request["model"] == "sub":
        return {"text": "ok", "delay": 0.15}
    answered = sum(1 for m in messages if m["role"] == "assistant")
    top = messages[1]["content"].startswith("Question: top")
    if top:
        code = "```repl\nr = rlm_query('please fan out')\nprint(r)\n```" if answered == 0 else "FINAL_VAR(r)"
        return code if request.get("_depth2") else (BATCH if answered == 0 else "FINAL_VAR(answers)")
    return BATCH if answered == 0 else "FINAL(fanned out)"


async def test_batched_sub_calls_never_exceed_the_limit() -> None:
    with FakeOpenAIServer(responder=reply) as server:
        root, sub = OpenAIChat("root", base_url=server.base_url), OpenAIChat("sub", base_url=server.base_url)
        result = await RLM(root, sub, concurrency=8).arun("top question", "ctx")
        assert result.sub_calls == 32
        assert server.requests_per_model["sub"] == 32
        assert server.max_in_flight == 8


async def test_the_limit_is_shared_from_depth_two() -> None:
    def depth2(request: dict[str, Any]) -> dict[str, Any] | str:
        return reply({**request, "_depth2": True})

    with FakeOpenAIServer(responder=depth2) as server:
        root, sub = OpenAIChat("root", base_url=server.base_url), OpenAIChat("sub", base_url=server.base_url)
        rlm = RLM(root, sub, concurrency=8, budget=Budget(max_depth=2))
        result = await rlm.arun("top question", "ctx")
        assert result.answer == "fanned out"
        assert server.requests_per_model["sub"] == 32
        assert server.max_in_flight == 8
        assert any(e.type == "run_started" and e.depth == 1 for e in result.trace)

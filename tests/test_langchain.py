"""recursa for LangChain: LangChainLM, and the tools inside a real agent graph with scripted models."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypedDict

import pytest

for needed in ("langchain_core", "langchain", "langgraph"):
    pytest.importorskip(needed, reason="the LangChain adapter needs pip install 'recursa[langgraph]'")

from langchain.agents import AgentState, create_agent  # noqa: E402
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from langchain_core.utils.function_calling import convert_to_openai_tool  # noqa: E402
from pydantic import Field  # noqa: E402
from recursa import RLM, LMError, ScriptedLM  # noqa: E402
from recursa.integrations.langchain import LangChainLM, create_rlm_file_tool, create_rlm_tool  # noqa: E402

SECRET = "NEEDLE-77c2e1"
LOG = "\n".join(f"host{i % 7} {'FAIL' if i % 5 == 0 else 'ok'} request {i}" for i in range(2_000))
LOG = LOG + f"\nhost3 ok session {SECRET}\n"
FAILS = str(LOG.count("FAIL"))


def code(src: str) -> str:
    return f"```repl\n{src}\n```"


def counting_rlm() -> tuple[RLM, ScriptedLM]:
    def reply(messages: list[dict[str, str]]) -> str:
        if not any(m["role"] == "assistant" for m in messages):
            return code("text = context if isinstance(context, str) else ''.join(context)\n"
                        "n = text.count('FAIL')\nprint(n)")
        return "FINAL_VAR(n)"

    root = ScriptedLM(reply)
    return RLM(root), root


Reply = AIMessage | Callable[[list[BaseMessage]], AIMessage]


class AgentModel(BaseChatModel):
    """The agent's own model: scripted replies, and a record of every request and every tool schema."""

    replies: list[Any] = Field(default_factory=list)
    requests: list[list[BaseMessage]] = Field(default_factory=list)
    tool_schemas: list[list[dict[str, Any]]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-agent"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> AgentModel:
        self.tool_schemas.append([convert_to_openai_tool(t) for t in tools])
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        self.requests.append(list(messages))
        reply = self.replies.pop(0)
        message = reply(messages) if callable(reply) else reply
        return ChatResult(generations=[ChatGeneration(message=message)])


def ask_then_relay(question: str, tool: str = "query_large_context", **extra: Any) -> AgentModel:
    """Calls the tool with ``question``, then answers with whatever the tool returned."""
    call = AIMessage("", tool_calls=[{"name": tool, "args": {"question": question, **extra}, "id": "call-1"}])

    def relay(messages: list[BaseMessage]) -> AIMessage:
        return AIMessage(f"The tool says: {messages[-1].content}")

    return AgentModel(replies=[call, relay])


class LogState(AgentState):
    context: str


class LogContext(TypedDict):
    logs: str


# -- LangChainLM -------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_langchain_lm_maps_usage_and_cost() -> None:
    reply = AIMessage("hello", usage_metadata={"input_tokens": 1_000_000, "output_tokens": 500_000,
                                               "total_tokens": 1_500_000},
                      response_metadata={"model_name": "gpt-5-mini-2025-08-07"})
    lm = LangChainLM(GenericFakeChatModel(messages=iter([reply])))
    done = await lm.complete([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    assert done.text == "hello" and done.usage.input_tokens == 1_000_000 and done.usage.output_tokens == 500_000
    assert done.cost_usd == pytest.approx(0.25 + 1.0) and done.model == "gpt-5-mini-2025-08-07"


@pytest.mark.anyio
async def test_langchain_lm_estimates_missing_usage_and_wraps_errors() -> None:
    lm = LangChainLM(GenericFakeChatModel(messages=iter([AIMessage("x" * 40)])), model="mine")
    done = await lm.complete([{"role": "user", "content": "y" * 400}])
    assert (done.usage.input_tokens, done.usage.output_tokens, done.cost_usd) == (100, 10, 0.0)
    with pytest.raises(LMError, match="'mine' failed"):
        await lm.complete([{"role": "user", "content": "again"}])  # the fake has no reply left


def test_langchain_lm_as_root_and_sub_of_an_rlm() -> None:
    root = LangChainLM(GenericFakeChatModel(messages=iter([
        AIMessage(code("print(llm_query('say hi'))")), AIMessage("FINAL(done)")])))
    sub = LangChainLM(GenericFakeChatModel(messages=iter([AIMessage("hi")])))
    result = RLM(root, sub).run("q", LOG)
    assert result.answer == "done" and result.sub_calls == 1 and result.usage.total_tokens > 0


# -- the state tool in a real agent ---------------------------------------------------------------------------


def test_tool_in_an_agent_never_shows_the_context_to_the_agent_model() -> None:
    rlm, root = counting_rlm()
    model = ask_then_relay("How many requests failed?")
    agent = create_agent(model, tools=[create_rlm_tool(rlm)], state_schema=LogState)
    out = agent.invoke({"messages": [("user", "How many requests failed?")], "context": LOG})
    assert out["messages"][-1].content == f"The tool says: {FAILS}"
    tool_message = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert tool_message.status == "success" and tool_message.artifact["stopped_reason"] == "final"
    # What the agent's model was sent: neither the context nor any slice of it, prompts or tool schema.
    sent = json.dumps([[m.model_dump() for m in request] for request in model.requests], default=str)
    sent += json.dumps(model.tool_schemas)
    assert SECRET not in sent and "request 1999" not in sent
    assert list(model.tool_schemas[0][0]["function"]["parameters"]["properties"]) == ["question"]
    assert "Question: How many requests failed?" in root.calls[0][1]["content"]


@pytest.mark.anyio
async def test_tool_async_with_runtime_context_and_custom_events() -> None:
    rlm, _ = counting_rlm()
    agent = create_agent(ask_then_relay("How many failed?"), tools=[create_rlm_tool(rlm, context_key="logs")],
                         context_schema=LogContext)
    chunks = [c async for c in agent.astream({"messages": [("user", "How many failed?")]}, context={"logs": LOG},
                                             stream_mode=["custom", "values"])]
    events = [data for mode, data in chunks if mode == "custom"]
    assert {"run_started", "iteration_started", "run_finished"} <= {e["type"] for e in events}
    assert SECRET not in json.dumps(events)
    assert chunks[-1][1]["messages"][-1].content == f"The tool says: {FAILS}"


def test_failing_model_becomes_a_tool_error_message() -> None:
    rlm = RLM(ScriptedLM([LMError("the endpoint is down")]))
    model = ask_then_relay("How many failed?")
    agent = create_agent(model, tools=[create_rlm_tool(rlm)], state_schema=LogState)
    out = agent.invoke({"messages": [("user", "How many failed?")], "context": LOG})
    tool_message = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert tool_message.status == "error"
    assert tool_message.content == "recursa could not answer: LMError: the endpoint is down"
    assert out["messages"][-1].content.startswith("The tool says: recursa could not answer")  # the agent goes on


def test_missing_context_becomes_a_tool_error_message() -> None:
    rlm, _ = counting_rlm()
    agent = create_agent(ask_then_relay("q"), tools=[create_rlm_tool(rlm)], state_schema=LogState)
    out = agent.invoke({"messages": [("user", "q")]})
    tool_message = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert tool_message.status == "error" and "no 'context'" in tool_message.content


def test_budget_cut_answer_says_so() -> None:
    rlm = RLM(ScriptedLM(lambda messages: code("print(1)") if messages[-1]["content"].find("No more code") < 0
                         else "FINAL(maybe 3)"))
    agent = create_agent(ask_then_relay("q"), tools=[create_rlm_tool(rlm)], state_schema=LogState)
    out = agent.invoke({"messages": [("user", "q")], "context": LOG},
                       config={"configurable": {"recursa_budget": {"max_iterations": 1}}})
    tool_message = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert tool_message.content.startswith("maybe 3\n\n(recursa stopped early: its max_iterations budget")


# -- the file tool --------------------------------------------------------------------------------------------


def test_file_tool_reads_paths_and_globs_inside_its_base_dir(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text(LOG[:20_000])
    (tmp_path / "logs" / "b.log").write_text(LOG[20_000:])
    rlm, root = counting_rlm()
    tool = create_rlm_file_tool(rlm, base_dir=tmp_path)
    assert tool.invoke({"question": "How many failed?", "paths": ["logs/*.log"]}) == FAILS
    assert "context_names" in root.calls[0][0]["content"]  # a list of documents
    outside = tool.invoke({"question": "q", "paths": ["../../etc/passwd"]})
    assert outside.startswith("recursa could not answer: PathNotAllowedError")
    assert "outside the allowed roots" in outside
    missing = tool.invoke({"question": "q", "paths": ["nope/*.log"]})
    assert missing.startswith("recursa could not answer: ContextError")


def test_file_tool_in_an_agent(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text(LOG)
    rlm, _ = counting_rlm()
    model = ask_then_relay("How many failed?", tool="query_files", paths=["app.log"])
    agent = create_agent(model, tools=[create_rlm_file_tool(rlm, base_dir=tmp_path)])
    out = agent.invoke({"messages": [("user", "How many requests failed in app.log?")]})
    assert out["messages"][-1].content == f"The tool says: {FAILS}"


# -- without LangGraph ------------------------------------------------------------------------------------------

_HIDE = textwrap.dedent("""
    import importlib.abc, sys
    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in {'langgraph', 'langchain', 'langchain_core'}:
                raise ModuleNotFoundError(f"No module named {name!r}")
    sys.meta_path.insert(0, Hide())
""")


def test_recursa_imports_without_langgraph_and_the_integration_says_what_to_install() -> None:
    script = _HIDE + textwrap.dedent("""
        import recursa, recursa.integrations
        assert not any(m.split('.')[0] in {'langgraph', 'langchain', 'langchain_core'} for m in sys.modules)
        for name in ('recursa.integrations.langgraph', 'recursa.integrations.langchain'):
            try:
                __import__(name)
            except ImportError as exc:
                assert "pip install 'recursa[langgraph]'" in str(exc), exc
                assert exc.__cause__ is None and exc.__suppress_context__
            else:
                raise AssertionError(name + ' imported without langgraph')
        print('ok')
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr

"""recursa as a LangGraph graph: real LangGraph objects, the real sandbox, scripted models at the edge."""

from __future__ import annotations

import json
import operator
from typing import Annotated, Any, TypedDict

import pytest

for needed in ("langchain_core", "langgraph"):
    pytest.importorskip(needed, reason="the LangGraph adapter needs pip install 'recursa[langgraph]'")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.language_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.graph.message import add_messages  # noqa: E402
from recursa import RLM, Budget, LMError, ScriptedLM  # noqa: E402
from recursa.integrations.langgraph import (  # noqa: E402
    REPLAY_KEY,
    RESULT_KEY,
    TRACE_KEY,
    LangChainLM,
    create_rlm_graph,
    create_rlm_node,
    event_payload,
)

SECRET = "NEEDLE-4b1d"
LOG = "\n".join(f"2024-05-0{i % 9 + 1} {'ERROR' if i % 3 == 0 else 'INFO'} job {i}" for i in range(300))
LOG_WITH_SECRET = LOG + f"\n2024-05-09 INFO token {SECRET}\n"
ERRORS = str(LOG.count("ERROR"))


def code(src: str) -> str:
    return f"Let me look.\n```repl\n{src}\n```"


def counting_root() -> ScriptedLM:
    """Counts ERROR lines, asks one sub-call batch, then answers with the count."""

    def reply(messages: list[dict[str, str]]) -> str:
        turns = sum(m["role"] == "assistant" for m in messages)
        if turns == 0:
            return code("n = context.count('ERROR')\nnotes = llm_query_batched(['a', 'b'])\nprint(n, len(notes))")
        return "FINAL_VAR(n)"

    return ScriptedLM(reply, model="root-model")


def sub_lm() -> ScriptedLM:
    return ScriptedLM(lambda messages: "ok", model="sub-model")


def make_rlm() -> tuple[RLM, ScriptedLM, ScriptedLM]:
    root, sub = counting_root(), sub_lm()
    return RLM(root, sub), root, sub


def customs(chunks: list[Any]) -> list[dict[str, Any]]:
    """The recursa payloads among (mode, data) or (ns, mode, data) stream chunks."""
    out = []
    for chunk in chunks:
        mode, data = chunk[-2], chunk[-1]
        if mode == "custom" and isinstance(data, dict) and data.get("source") == "recursa":
            out.append(data)
    return out


# -- standalone --------------------------------------------------------------------------------------------


def test_standalone_invoke_answers_and_reports_usage() -> None:
    rlm, root, sub = make_rlm()
    out = create_rlm_graph(rlm).invoke({"question": "How many errors?", "context": LOG})
    assert out["answer"] == ERRORS and out["stopped_reason"] == "final"
    assert out["usage"]["total_tokens"] > 0 and out["cost_usd"] == 0.0
    assert out[RESULT_KEY]["iterations"] == 2 and out[RESULT_KEY]["sub_calls"] == 2
    assert out[TRACE_KEY][0]["code_blocks"] == 1 and out[TRACE_KEY][0]["sub_calls"] == 2
    assert "context" not in out and REPLAY_KEY not in out  # the context is not echoed back
    assert len(sub.calls) == 2


@pytest.mark.anyio
async def test_standalone_ainvoke() -> None:
    rlm, _, _ = make_rlm()
    out = await create_rlm_graph(rlm).ainvoke({"question": "How many errors?", "context": LOG})
    assert out["answer"] == ERRORS and out["stopped_reason"] == "final"


def test_custom_stream_events_are_small_and_never_hold_the_context() -> None:
    rlm, _, _ = make_rlm()
    chunks = list(create_rlm_graph(rlm).stream({"question": "How many errors?", "context": LOG_WITH_SECRET},
                                               stream_mode=["custom", "updates"]))
    events = customs(chunks)
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("iteration_started") == 2 and "sub_calls_started" in types
    batch = next(e for e in events if e["type"] == "sub_calls_started")
    assert batch["count"] == 2 and batch["iteration"] == 1
    assert events[-1]["answer"] == ERRORS and events[-1]["stopped_reason"] == "final"
    dumped = json.dumps(events)
    assert SECRET not in dumped and "job 17" not in dumped
    assert max(len(json.dumps(e)) for e in events) < 1_000
    assert any(mode == "updates" and "rlm" in data for mode, data in chunks)


@pytest.mark.anyio
async def test_astream_custom_events() -> None:
    rlm, _, _ = make_rlm()
    graph = create_rlm_graph(rlm)
    chunks = [c async for c in graph.astream({"question": "q", "context": LOG}, stream_mode=["custom"])]
    assert [e["type"] for e in customs(chunks)].count("iteration_started") == 2


def test_documents_and_lists_become_named_documents() -> None:
    root = ScriptedLM([code("print(context_names, len(context))"), "FINAL(seen)"])
    docs = [Document(page_content="alpha " * 50, metadata={"source": "a.txt"}),
            Document(page_content="beta " * 50, metadata={"source": "b.txt"})]
    out = create_rlm_graph(RLM(root)).invoke({"question": "q", "context": docs})
    assert out["answer"] == "seen"
    observation = root.calls[1][-1]["content"]
    assert "['a.txt', 'b.txt'] 2" in observation


def test_budget_from_config_configurable() -> None:
    root = ScriptedLM(lambda messages: code("print(1)"))
    graph = create_rlm_graph(RLM(root))
    out = graph.invoke({"question": "q", "context": LOG},
                       config={"configurable": {"recursa_budget": {"max_iterations": 2}}})
    assert out["stopped_reason"] == "max_iterations" and out[RESULT_KEY]["iterations"] == 2
    out = graph.invoke({"question": "q", "context": LOG},
                       config={"configurable": {"recursa_budget": Budget(max_iterations=1)}})
    assert out[RESULT_KEY]["iterations"] == 1
    with pytest.raises(ValueError, match="max_iteration"):
        graph.invoke({"question": "q", "context": LOG},
                     config={"configurable": {"recursa_budget": {"max_iteration": 2}}})


def test_missing_question_is_a_clear_error() -> None:
    graph = create_rlm_graph(RLM(ScriptedLM([])))
    with pytest.raises(ValueError, match="no question"):
        graph.invoke({"context": LOG})


# -- inside a parent graph ---------------------------------------------------------------------------------


class Parent(TypedDict, total=False):
    topic: str
    question: str
    context: str
    answer: str
    stopped_reason: str
    log: Annotated[list[str], operator.add]


def parent_graph(rlm_step: Any) -> Any:
    builder = StateGraph(Parent)
    builder.add_node("ask", lambda s: {"question": f"How many {s['topic']}?", "log": ["ask"]})
    builder.add_node("rlm", rlm_step)
    builder.add_node("report", lambda s: {"log": [f"{s['answer']} ({s['stopped_reason']})"]})
    builder.add_edge(START, "ask")
    builder.add_edge("ask", "rlm")
    builder.add_edge("rlm", "report")
    builder.add_edge("report", END)
    return builder.compile()


def test_as_subgraph_of_a_parent_graph() -> None:
    rlm, _, _ = make_rlm()
    parent = parent_graph(create_rlm_graph(rlm))
    out = parent.invoke({"topic": "errors", "context": LOG})
    assert out["answer"] == ERRORS and out["log"] == ["ask", f"{ERRORS} (final)"]
    assert "rlm_result" not in out  # keys the parent does not have stay in the subgraph
    chunks = list(parent.stream({"topic": "errors", "context": LOG}, stream_mode=["custom"], subgraphs=True))
    assert [e["type"] for e in customs(chunks)].count("iteration_started") == 2


@pytest.mark.anyio
async def test_as_plain_node_streams_custom_events_to_the_parent() -> None:
    rlm, _, _ = make_rlm()
    parent = parent_graph(create_rlm_node(rlm))
    chunks = [c async for c in parent.astream({"topic": "errors", "context": LOG}, stream_mode=["custom", "values"])]
    assert "sub_calls_started" in [e["type"] for e in customs(chunks)]
    assert chunks[-1][1]["answer"] == ERRORS


# -- messages mode and token isolation ---------------------------------------------------------------------


class Chat(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    context: str


def test_messages_mode_answers_the_last_human_message() -> None:
    rlm, root, _ = make_rlm()
    graph = create_rlm_graph(rlm, messages_key="messages")
    out = graph.invoke({"messages": [HumanMessage("hi"), AIMessage("hello"), HumanMessage("How many errors?")],
                        "context": LOG})
    reply = out["messages"][-1]
    assert isinstance(reply, AIMessage) and reply.content == ERRORS and reply.name == "recursa"
    assert reply.usage_metadata["total_tokens"] > 0
    assert reply.response_metadata["recursa"]["stopped_reason"] == "final"
    assert len(out["messages"]) == 4 and out["question"] == "How many errors?"
    assert "Question: How many errors?" in root.calls[0][1]["content"]


def fake_chat(replies: list[str], model: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(r, response_metadata={"model_name": model}) for r in replies]))


def chat_graph_with_an_rlm_inside() -> Any:
    """A chat graph whose own model streams, then an RLM subgraph whose models are LangChain fakes."""
    root_code = "n = context.count('ERROR')\nprint(llm_query('zebra-sub-call'))\nprint(n)"
    root = LangChainLM(fake_chat([code(root_code), "FINAL_VAR(n)"], "fake-root"))
    sub = LangChainLM(fake_chat(["giraffe-sub-answer"], "fake-sub"))
    control = fake_chat(["parent-model-speaks"], "parent")
    builder = StateGraph(Chat)
    builder.add_node("chat", lambda s: {"messages": [control.invoke(s["messages"])]})
    builder.add_node("rlm", create_rlm_graph(RLM(root, sub), messages_key="messages"))
    builder.add_edge(START, "chat")
    builder.add_edge("chat", "rlm")
    builder.add_edge("rlm", END)
    return builder.compile()


CHAT_INPUT = {"messages": [HumanMessage("How many errors?")], "context": LOG}
STREAM = {"stream_mode": ["messages", "custom"], "subgraphs": True}


def streamed_text(chunks: list[Any]) -> str:
    return json.dumps([data[0].content for _, mode, data in chunks if mode == "messages"])


def assert_only_the_parent_model_and_the_answer_streamed(chunks: list[Any]) -> None:
    text = streamed_text(chunks)
    assert "parent-model-speaks" in text  # the parent's own model does stream its tokens
    assert json.dumps(ERRORS) in text  # and the final answer message shows up
    assert "context.count" not in text and "giraffe" not in text and "FINAL_VAR" not in text
    assert "iteration_started" in [e["type"] for e in customs(chunks)]


def test_inner_tokens_stay_out_of_the_parents_messages_stream() -> None:
    chunks = list(chat_graph_with_an_rlm_inside().stream(CHAT_INPUT, **STREAM))
    assert_only_the_parent_model_and_the_answer_streamed(chunks)


@pytest.mark.anyio
async def test_inner_tokens_stay_out_of_the_parents_messages_astream() -> None:
    chunks = [c async for c in chat_graph_with_an_rlm_inside().astream(CHAT_INPUT, **STREAM)]
    assert_only_the_parent_model_and_the_answer_streamed(chunks)


def test_the_nostream_tag_is_what_keeps_inner_tokens_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import recursa.integrations.langchain as module

    monkeypatch.setattr(module, "TAG_NOSTREAM", "some-other-tag")
    chunks = list(chat_graph_with_an_rlm_inside().stream(CHAT_INPUT, **STREAM))
    assert "context.count" in streamed_text(chunks) and "giraffe" in streamed_text(chunks)


# -- checkpointing ---------------------------------------------------------------------------------------------


def test_checkpointed_state_holds_the_result_and_a_finished_run_is_reused() -> None:
    rlm, root, _ = make_rlm()
    graph = create_rlm_graph(rlm, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}}
    first = graph.invoke({"question": "How many errors?", "context": LOG}, config)
    saved = graph.get_state(config).values
    assert saved["answer"] == ERRORS and saved[RESULT_KEY]["stopped_reason"] == "final"
    assert saved[TRACE_KEY][0]["sub_calls"] == 2 and saved[REPLAY_KEY] is None
    calls = len(root.calls)
    again = graph.invoke({"question": "How many errors?", "context": LOG}, config)
    assert len(root.calls) == calls and again["answer"] == first["answer"]
    other = graph.invoke({"question": "How many errors, really?", "context": LOG}, config)
    assert len(root.calls) == calls + 2 and other["answer"] == ERRORS


def test_messages_mode_reuse_appends_the_answer_once_per_question() -> None:
    rlm, root, _ = make_rlm()
    graph = create_rlm_graph(rlm, messages_key="messages", checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "chat"}}
    graph.invoke({"messages": [HumanMessage("How many errors?")], "context": LOG}, config)
    out = graph.invoke({"messages": [HumanMessage("How many errors?")], "context": LOG}, config)
    assert len(root.calls) == 2  # the second, identical question was answered from the saved result
    assert [type(m).__name__ for m in out["messages"]] == ["HumanMessage", "AIMessage"] * 2
    out = graph.invoke({"context": LOG}, config)  # nothing new asked: nothing appended
    assert len(out["messages"]) == 4 and len(root.calls) == 2


class FlakyRoot:
    """A root model whose second turn fails until ``fixed`` is set."""

    model = "flaky"

    def __init__(self) -> None:
        self.fixed = False
        self.inner = counting_root()

    async def complete(self, messages: list[dict[str, str]], **params: Any) -> Any:
        if not self.fixed and any(m["role"] == "assistant" for m in messages):
            raise LMError("connection reset by peer", model=self.model)
        return await self.inner.complete(messages, **params)


def test_failure_is_kept_in_state_and_a_retry_does_not_repeat_paid_calls() -> None:
    root, sub = FlakyRoot(), sub_lm()
    saver = InMemorySaver()
    config = {"configurable": {"thread_id": "t2"}}
    out = create_rlm_graph(RLM(root, sub), checkpointer=saver).invoke({"question": "q", "context": LOG}, config)
    assert out["stopped_reason"] == "error" and out["answer"] is None
    assert "connection reset" in out[RESULT_KEY]["error"]
    assert out[TRACE_KEY][0]["code_blocks"] == 1  # the partial trace
    replay = create_rlm_graph(RLM(root, sub), checkpointer=saver).get_state(config).values[REPLAY_KEY]
    assert replay["calls"]
    root_calls, sub_calls = len(root.inner.calls), len(sub.calls)

    root.fixed = True  # a new graph object: only the checkpoint remembers the first attempt
    out = create_rlm_graph(RLM(root, sub), checkpointer=saver).invoke({"question": "q", "context": LOG}, config)
    assert out["answer"] == ERRORS and out["stopped_reason"] == "final"
    assert out[RESULT_KEY]["replayed_calls"] == 3  # the first root turn and both sub-calls
    assert len(root.inner.calls) == root_calls + 1 and len(sub.calls) == sub_calls


def test_raise_errors_raises_and_retries_in_process_replay() -> None:
    root, sub = FlakyRoot(), sub_lm()
    graph = create_rlm_graph(RLM(root, sub), raise_errors=True)
    with pytest.raises(LMError, match="connection reset"):
        graph.invoke({"question": "q", "context": LOG})
    root.fixed = True
    sub_calls = len(sub.calls)
    out = graph.invoke({"question": "q", "context": LOG})
    assert out["answer"] == ERRORS and out[RESULT_KEY]["replayed_calls"] == 3 and len(sub.calls) == sub_calls


def test_messages_mode_error_becomes_an_ai_message() -> None:
    root = ScriptedLM([LMError("quota exceeded")])
    out = create_rlm_graph(RLM(root), messages_key="messages").invoke(
        {"messages": [HumanMessage("q")], "context": LOG})
    assert out["messages"][-1].content.startswith("recursa could not answer: LMError: quota exceeded")


def test_event_payload_keeps_no_big_fields() -> None:
    rlm, _, _ = make_rlm()
    events: list[Any] = []
    rlm.run("q", LOG_WITH_SECRET, on_event=events.append)
    payloads = [event_payload(e) for e in events]
    assert SECRET not in json.dumps(payloads)
    assert {p["type"] for p in payloads} >= {"run_started", "lm_called", "code_executed", "run_finished"}

"""The LlamaIndex query engine with real LlamaIndex objects, scripted models and the real sandboxed REPL."""

from __future__ import annotations

import asyncio
import json
import random
import string
import subprocess
import sys
import time
from typing import Any

import pytest

pytest.importorskip("llama_index.core", reason="the LlamaIndex adapter needs pip install 'recursa[llamaindex]'")

import recursa._defaults  # noqa: E402
from llama_index.core import Document, Settings, VectorStoreIndex  # noqa: E402
from llama_index.core.agent.workflow import FunctionAgent  # noqa: E402
from llama_index.core.base.llms.types import (  # noqa: E402
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response  # noqa: E402
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler  # noqa: E402
from llama_index.core.embeddings import MockEmbedding  # noqa: E402
from llama_index.core.instrumentation import get_dispatcher  # noqa: E402
from llama_index.core.instrumentation.event_handlers import BaseEventHandler  # noqa: E402
from llama_index.core.llms import CustomLLM  # noqa: E402
from llama_index.core.llms.mock import MockFunctionCallingLLM  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index.core.schema import NodeWithScore  # noqa: E402
from llama_index.core.tools import QueryEngineTool  # noqa: E402
from pydantic import Field  # noqa: E402
from recursa import RLM, LMError, ScriptedLM  # noqa: E402
from recursa._sources import SourceFinder  # noqa: E402
from recursa.integrations.llamaindex import (  # noqa: E402
    LlamaIndexLM,
    RLMQueryEngine,
    RLMStreamingResponse,
)

NEEDLE = "The access code for the east vault is 4417-XJ, issued by the night shift supervisor on duty."
FIND_NEEDLE = """import re
for i, doc in enumerate(context):
    m = re.search(r'access code', doc)
    if m:
        print(i, context_names[i], repr(doc[max(0, m.start() - 40):m.end() + 60]))"""


def code(src: str) -> str:
    return f"Let me look.\n```repl\n{src}\n```"


def corpus(n: int = 50, needle_at: int = 7) -> list[Document]:
    """n reports of ordinary text, each distinct; the needle sits in the middle of report ``needle_at``."""
    docs = []
    for i in range(n):
        body = " ".join(f"Report {i}, line {j}: the {i}-{j} shipment arrived on schedule." for j in range(12))
        if i == needle_at:
            body = body[: len(body) // 2] + " " + NEEDLE + " " + body[len(body) // 2:]
        docs.append(Document(text=body, id_=f"report-{i}", metadata={"region": "north" if i % 2 else "south"}))
    return docs


def needle_engine(**kwargs: Any) -> RLMQueryEngine:
    root = ScriptedLM([code(FIND_NEEDLE), "FINAL(4417-XJ)"])
    return RLMQueryEngine.from_documents(corpus(), rlm=RLM(root), **kwargs)


def ids(response: Any) -> list[str]:
    return [n.node.node_id for n in response.source_nodes]


# -- import guard -----------------------------------------------------------------------------------------


def test_recursa_imports_without_llama_index_and_the_integration_says_how_to_install() -> None:
    script = (
        "import sys\n"
        "import recursa, recursa.integrations\n"
        "assert not any(m.startswith('llama_index') for m in sys.modules), 'recursa imported llama_index'\n"
        "sys.modules['llama_index'] = None\n"
        "try:\n"
        "    import recursa.integrations.llamaindex\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'recursa[llamaindex]'" in out.stdout


# -- building the engine ----------------------------------------------------------------------------------


def test_from_documents_answers_with_metadata_trace_and_the_used_document() -> None:
    engine = needle_engine()
    response = engine.query("What is the access code of the east vault?")
    assert isinstance(response, Response)
    assert response.response == "4417-XJ" and str(response) == "4417-XJ"
    meta = response.metadata
    assert meta["stopped_reason"] == "final" and meta["iterations"] == 2 and meta["sub_calls"] == 0
    assert meta["usage"]["total_tokens"] > 0 and meta["cost_usd"] == 0.0 and meta["error"] is None
    assert [e.type for e in meta["trace"]][0] == "run_started" and meta["trace"][-1].type == "run_finished"
    assert ids(response) == ["report-7"]


def test_the_repl_sees_texts_ids_and_metadata() -> None:
    root = ScriptedLM([
        code("print(type(context).__name__, len(context), context_names[3], context_metadata[3]['region'])\n"
             "info = f'{len(context)} {context_names[3]} {context_metadata[3][\"region\"]}'"),
        "FINAL_VAR(info)",
    ])
    response = RLMQueryEngine.from_documents(corpus(), rlm=RLM(root)).query("Describe the corpus")
    assert response.response == "50 report-3 north"
    assert "list 50 report-3 north" in root.calls[-1][-1]["content"]


def test_answer_in_document_7_of_50_returns_that_node_and_no_untouched_one() -> None:
    response = needle_engine().query("What is the access code?")
    assert ids(response) == ["report-7"]
    assert 0.0 < response.source_nodes[0].score < 1.0  # a window of it was printed, not all of it


def test_a_node_sent_to_a_sub_call_is_a_source() -> None:
    root = ScriptedLM([
        code("hits = [i for i, d in enumerate(context) if 'vault' in d]\n"
             "answer = llm_query('Which code is given here?\\n' + context[hits[0]])\nprint(answer)"),
        "FINAL_VAR(answer)",
    ])
    sub = ScriptedLM(lambda messages: "4417-XJ" if "4417-XJ" in messages[-1]["content"] else "none")
    response = RLMQueryEngine.from_documents(corpus(), rlm=RLM(root, sub)).query("Which code?")
    assert response.response == "4417-XJ" and response.metadata["sub_calls"] == 1
    assert ids(response) == ["report-7"] and response.source_nodes[0].score == 1.0


def test_a_printed_node_id_makes_a_source_with_score_zero() -> None:
    root = ScriptedLM([
        code("hits = [context_names[i] for i, d in enumerate(context) if '4417' in d]\nprint(hits)"),
        "FINAL(report-7)",
    ])
    response = RLMQueryEngine.from_documents(corpus(), rlm=RLM(root)).query("Which report?")
    assert ids(response) == ["report-7"] and response.source_nodes[0].score == 0.0


def test_printing_every_name_is_a_listing_not_a_use() -> None:
    root = ScriptedLM([code("print(context_names)"), "FINAL(50 reports)"])
    response = RLMQueryEngine.from_documents(corpus(), rlm=RLM(root)).query("How many reports?")
    assert response.response == "50 reports" and response.source_nodes == []


def test_from_nodes_takes_chunks_and_nodes_with_scores() -> None:
    chunks = SentenceSplitter(chunk_size=64, chunk_overlap=0).get_nodes_from_documents(corpus(10))
    assert len(chunks) > 10
    wrapped = [NodeWithScore(node=n, score=0.5) for n in chunks]
    root = ScriptedLM([code(FIND_NEEDLE + "\nprint(context_metadata[0]['ref_doc_id'])"), "FINAL(4417-XJ)"])
    engine = RLMQueryEngine.from_nodes(wrapped, rlm=RLM(root))
    response = engine.query("What is the access code?")
    assert len(engine.context.documents) == len(chunks)
    used = [n.node for n in response.source_nodes]
    assert any("access code" in n.get_content() for n in used)
    assert {n.ref_doc_id for n in used} == {"report-7"} and len(used) <= 2
    assert "report-0" in root.calls[-1][-1]["content"]


def test_from_index_reads_every_node_of_the_docstore_not_a_top_k() -> None:
    docs = corpus(30)
    splitter = SentenceSplitter(chunk_size=128, chunk_overlap=16)
    index = VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8), transformations=[splitter])
    root = ScriptedLM([code(FIND_NEEDLE + "\nn = len(context)\nprint(n)"), "FINAL_VAR(n)"])
    engine = RLMQueryEngine.from_index(index, rlm=RLM(root))
    response = engine.query("How many chunks, and the code?")
    assert int(response.response) == len(index.docstore.docs) > 30
    assert {n.node.ref_doc_id for n in response.source_nodes} == {"report-7"}


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        RLMQueryEngine.from_documents([])
    with pytest.raises(ValueError, match="either rlm= or llm="):
        RLMQueryEngine.from_documents(corpus(2), rlm=RLM(ScriptedLM([])), llm=ScriptedLM([]))
    with pytest.raises(ValueError, match="no nodes in its docstore"):
        RLMQueryEngine.from_index(VectorStoreIndex([], embed_model=MockEmbedding(embed_dim=8)))
    with pytest.raises(TypeError, match="LlamaIndex LLM or a recursa LM"):
        RLMQueryEngine.from_documents(corpus(2), llm="gpt-5-mini")  # type: ignore[arg-type]


def test_a_failing_model_raises_with_the_partial_result() -> None:
    root = ScriptedLM([code("print(len(context))"), LMError("endpoint down", model="scripted")])
    with pytest.raises(LMError, match="endpoint down") as caught:
        RLMQueryEngine.from_documents(corpus(3), rlm=RLM(root)).query("Anything?")
    assert caught.value.result.stopped_reason == "error" and caught.value.result.iterations == 2
    root = ScriptedLM([code("print(len(context))"), LMError("endpoint down", model="scripted")])
    response = RLMQueryEngine.from_documents(corpus(3), rlm=RLM(root), streaming=True).query("Anything?")
    with pytest.raises(LMError, match="endpoint down"):
        list(response.response_gen)


# -- async and streaming ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_aquery() -> None:
    response = await needle_engine().aquery("What is the access code?")
    assert isinstance(response, Response) and response.response == "4417-XJ"
    assert ids(response) == ["report-7"] and response.metadata["stopped_reason"] == "final"


def test_streaming_yields_progress_then_the_answer() -> None:
    response = needle_engine(streaming=True).query("What is the access code?")
    assert isinstance(response, RLMStreamingResponse)
    chunks = list(response.response_gen)
    assert chunks[0] == "[recursa] iteration 1\n" and chunks[-1] == "4417-XJ"
    assert any(c.startswith("[recursa]   ran code:") for c in chunks)
    assert "[recursa] done (final) after 2 iteration(s)\n\n" in chunks
    assert str(response) == "4417-XJ" and response.get_response().response == "4417-XJ"
    assert ids(response) == ["report-7"] and response.metadata["iterations"] == 2


def test_streaming_str_and_answer_only_mode() -> None:
    response = needle_engine(streaming=True, stream_progress=False).query("What is the access code?")
    assert str(response) == "4417-XJ" and ids(response) == ["report-7"]
    response = needle_engine(streaming=True, stream_progress=False).query("What is the access code?")
    assert list(response.response_gen) == ["4417-XJ"]


def test_print_response_stream_prints_progress_and_keeps_the_answer(capsys: pytest.CaptureFixture[str]) -> None:
    response = needle_engine(streaming=True).query("What is the access code?")
    response.print_response_stream()
    printed = capsys.readouterr().out
    assert printed.startswith("[recursa] iteration 1\n") and printed.rstrip().endswith("4417-XJ")
    assert response.response_txt == "4417-XJ"


def test_leaving_a_stream_early_cancels_the_run() -> None:
    root = ScriptedLM([code("import time\ntime.sleep(60)"), "FINAL(never)"])
    response = RLMQueryEngine.from_documents(corpus(3), rlm=RLM(root), streaming=True).query("Wait")
    started = time.monotonic()
    assert next(response.response_gen) == "[recursa] iteration 1\n"
    time.sleep(1.0)  # the code is sleeping in the REPL by now
    response.response_gen.close()
    assert time.monotonic() - started < 20


@pytest.mark.anyio
async def test_leaving_an_async_stream_early_cancels_the_run() -> None:
    root = ScriptedLM([code("import time\ntime.sleep(60)"), "FINAL(never)"])
    response = await RLMQueryEngine.from_documents(corpus(3), rlm=RLM(root), streaming=True).aquery("Wait")
    started = time.monotonic()
    assert await anext(response.response_gen) == "[recursa] iteration 1\n"
    await asyncio.sleep(1.0)  # the code is sleeping in the REPL by now
    await response.response_gen.aclose()
    assert time.monotonic() - started < 20


@pytest.mark.anyio
async def test_async_streaming_yields_progress_then_the_answer() -> None:
    response = await needle_engine(streaming=True).aquery("What is the access code?")
    assert isinstance(response, AsyncStreamingResponse)
    chunks = [chunk async for chunk in response.async_response_gen()]
    assert chunks[0] == "[recursa] iteration 1\n" and chunks[-1] == "4417-XJ"
    assert response.response_txt == "4417-XJ"
    assert (await response.get_response()).response == "4417-XJ"
    assert ids(response) == ["report-7"] and response.metadata["stopped_reason"] == "final"


# -- LlamaIndex LLMs as models, and no implicit Settings.llm ---------------------------------------------


class ScriptedLLM(CustomLLM):
    """A LlamaIndex LLM answering from a list, reporting OpenAI-style usage in ``raw``."""

    replies: list[str] = Field(default_factory=list)
    requests: list[list[ChatMessage]] = Field(default_factory=list)
    usage: dict[str, int] | None = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted-llamaindex", is_chat_model=True)

    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        self.requests.append(list(messages))
        raw = {"usage": self.usage} if self.usage else {}
        return ChatResponse(message=ChatMessage(role="assistant", content=self.replies.pop(0)), raw=raw)

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise NotImplementedError

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError


class ExplodingLLM(ScriptedLLM):
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        raise RuntimeError("this model must not be called")


@pytest.mark.anyio
async def test_llamaindex_lm_maps_messages_usage_and_cost() -> None:
    llm = ScriptedLLM(replies=["hello"], usage={"prompt_tokens": 1_000_000, "completion_tokens": 10})
    lm = LlamaIndexLM(llm, model="gpt-5-mini")
    completion = await lm.complete([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert completion.text == "hello" and completion.model == "gpt-5-mini"
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (1_000_000, 10)
    assert completion.cost_usd == pytest.approx(0.25 + 10 * 2.0 / 1e6)
    assert [m.role for m in llm.requests[0]] == [MessageRole.SYSTEM, MessageRole.USER]
    assert LlamaIndexLM(ScriptedLLM()).model == "scripted-llamaindex"


@pytest.mark.anyio
async def test_llamaindex_lm_estimates_missing_usage_and_wraps_errors() -> None:
    completion = await LlamaIndexLM(ScriptedLLM(replies=["x" * 40])).complete([{"role": "user", "content": "y" * 80}])
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (20, 10)
    with pytest.raises(LMError, match="must not be called"):
        await LlamaIndexLM(ExplodingLLM()).complete([{"role": "user", "content": "Hi"}])


def test_llamaindex_llms_as_root_and_sub_models() -> None:
    root = ScriptedLLM(replies=[code("a = llm_query('Say ok')\nprint(a)"), "FINAL_VAR(a)"],
                       usage={"input_tokens": 100, "output_tokens": 5})
    sub = ScriptedLLM(replies=["ok"], usage={"input_tokens": 7, "output_tokens": 1})
    response = RLMQueryEngine.from_documents(corpus(3), llm=root, sub_llm=sub).query("Say ok")
    assert response.response == "ok"
    assert response.metadata["usage"] == {"input_tokens": 207, "output_tokens": 11, "total_tokens": 218}


def test_no_model_given_uses_recursas_default_never_settings_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Settings, "_llm", ExplodingLLM())
    default = ScriptedLM([code(FIND_NEEDLE), "FINAL(4417-XJ)"], model="recursa-default")
    monkeypatch.setattr(recursa._defaults, "default_lm", lambda *a, **k: default)
    engine = RLMQueryEngine.from_documents(corpus())
    assert engine._rlm is None  # the default model is made at the first query, not before
    response = engine.query("What is the access code?")
    assert response.response == "4417-XJ" and engine.rlm.root is default


# -- LlamaIndex machinery: events, callbacks, agents ------------------------------------------------------


class _Collector(BaseEventHandler):
    names: list[str] = Field(default_factory=list)

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.names.append(type(event).__name__)


def test_query_events_and_callbacks_fire() -> None:
    debug = LlamaDebugHandler()
    collector = _Collector()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(collector)
    try:
        needle_engine(callback_manager=CallbackManager([debug])).query("What is the access code?")
    finally:
        dispatcher.event_handlers.remove(collector)
    assert "QueryStartEvent" in collector.names and "QueryEndEvent" in collector.names
    (start, end), = debug.get_event_pairs(CBEventType.QUERY)
    assert end.payload["response"].response == "4417-XJ"


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # LlamaIndex's workflows inspect pydantic internals
async def test_as_a_query_engine_tool_in_a_function_agent_that_never_sees_the_corpus() -> None:
    seen: list[str] = []

    def agent_model(messages: list[ChatMessage], **kwargs: Any) -> ChatMessage:
        seen.extend(str(m.content) for m in messages)
        results = [m for m in messages if m.role == MessageRole.TOOL]
        if not results:
            call = ToolCallBlock(tool_call_id="call-1", tool_name="reports",
                                 tool_kwargs={"input": "What is the access code of the east vault?"})
            return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])
        return ChatMessage(role=MessageRole.ASSISTANT, content=f"The vault code is {results[-1].content}.")

    tool = QueryEngineTool.from_defaults(
        needle_engine(), name="reports", description="Answers questions over all 50 shipment reports."
    )
    agent = FunctionAgent(tools=[tool], llm=MockFunctionCallingLLM(response_generator=agent_model),
                          system_prompt="Use the reports tool.")
    output = await agent.run(user_msg="What is the access code of the east vault?")
    assert str(output) == "The vault code is 4417-XJ."
    assert any("4417-XJ" in text for text in seen)
    assert not any("night shift supervisor" in text or "shipment arrived" in text for text in seen)


# -- the source finder on its own -------------------------------------------------------------------------


def _random_texts(n: int, length: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_lowercase + "     "
    return ["".join(rng.choices(alphabet, k=length)) for _ in range(n)]


def test_source_finder_counts_a_run_of_40_characters_but_not_39() -> None:
    texts = _random_texts(20, 500)
    finder = SourceFinder(texts, [f"n{i}x" for i in range(20)])
    for start in range(0, 60):  # every alignment against the windows
        assert finder.find(["..." + texts[5][start:start + 40] + "..."]) .keys() == {5}
        assert finder.find(["..." + texts[5][start:start + 39] + "..."]) == {}
    assert finder.find([texts[3], texts[9][:250]]) == {3: 1.0, 9: pytest.approx(0.48, abs=0.05)}


def test_source_finder_short_texts_names_listings_and_boilerplate() -> None:
    header = "CONFIDENTIAL shipping manifest, standard terms and conditions apply to every entry. "
    texts = [header + t for t in _random_texts(40, 300)] + ["tiny note ok", "no"]
    names = [f"node-{i:03d}" for i in range(42)]
    finder = SourceFinder(texts, names)
    assert finder.find([header * 3]) == {}  # shared by 40 nodes: boilerplate, nobody's source
    assert finder.find(["result: tiny note ok!"]) == {40: 1.0}
    assert finder.find(["no"]) == {}  # too short to tell
    assert finder.find(["found in node-007, and id=node-012."]) == {7: 0.0, 12: 0.0}
    assert finder.find([json.dumps(names)]) == {}  # a listing of every name
    assert finder.find(["node-0070 and xnode-007"]) == {}


def test_source_finder_is_fast_on_a_large_corpus() -> None:
    texts = _random_texts(2_000, 1_000, seed=1)  # 2 MB of text
    started = time.monotonic()
    finder = SourceFinder(texts, [f"doc-{i}" for i in range(2_000)])
    observed = [f"prompt {i}: " + texts[i] for i in range(0, 2_000, 2)]  # half the corpus, 1 MB
    found = finder.find(observed)
    assert found.keys() == set(range(0, 2_000, 2)) and set(found.values()) == {1.0}
    assert time.monotonic() - started < 10

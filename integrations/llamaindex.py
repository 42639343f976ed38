"""recursa for LlamaIndex: an RLM query engine over whole document collections, and LlamaIndex LLMs as models.

>>> from recursa.integrations.llamaindex import RLMQueryEngine
>>> docs = SimpleDirectoryReader("reports/").load_data()
>>> engine = RLMQueryEngine.from_documents(docs, llm=OpenAI(model="gpt-5-mini"))
>>> response = engine.query("How many reports mention a late delivery, per region?")
>>> response.response, response.source_nodes, response.metadata["stopped_reason"]

A retriever query engine answers from the top-k chunks; ``RLMQueryEngine`` hands *every* node to a root
model that explores them with code in a sandboxed REPL (``context`` is the list of node texts,
``context_names`` their ids, ``context_metadata`` their metadata) and calls sub-models on the pieces, so
it can count, compare and aggregate over the whole collection. It is a ``BaseQueryEngine``: the query
events, spans and callbacks fire, and it works as a ``QueryEngineTool`` whose agent never sees the corpus.

``source_nodes`` are the nodes the run actually used, found in its trace (see ``RLMQueryEngine``); the
engine never reads ``Settings.llm``. Needs ``pip install 'recursa[llamaindex]'``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

try:
    from llama_index.core.base.base_query_engine import BaseQueryEngine
    from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse
    from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
    from llama_index.core.indices.base import BaseIndex
    from llama_index.core.llms import LLM, ChatMessage, ChatResponse
    from llama_index.core.prompts.mixin import PromptMixinType
    from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
    from llama_index.core.settings import Settings
except ImportError:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        "recursa.integrations.llamaindex needs llama-index-core, which is not installed. "
        "Install it with: pip install 'recursa[llamaindex]'"
    ) from None

import anyio
from recursa import (
    LM,
    RLM,
    Budget,
    CodeExecuted,
    Completion,
    Context,
    Event,
    IterationStarted,
    LMError,
    Message,
    Notice,
    Price,
    Result,
    SubCallsStarted,
    Usage,
    load_context,
)
from recursa._pricing import cost_of
from recursa._sources import SourceFinder, observed_texts

__all__ = ["LlamaIndexLM", "RLMQueryEngine", "RLMStreamingResponse"]


# -- LlamaIndex LLMs as recursa LMs -----------------------------------------------------------------------

_INPUT_KEYS = ("input_tokens", "prompt_tokens", "prompt_token_count", "prompt_eval_count")
_OUTPUT_KEYS = ("output_tokens", "completion_tokens", "candidates_token_count", "eval_count")


class LlamaIndexLM:
    """Any LlamaIndex ``LLM`` (``OpenAI``, ``Anthropic``, ``Ollama``, ``MockLLM``...) as a recursa ``LM``.

    Calls go through the LLM's ``achat``. Token usage is read from the reply where LlamaIndex integrations
    put it (``raw["usage"]``, ``raw["usage_metadata"]`` or ``additional_kwargs``, under OpenAI, Anthropic,
    Gemini or Ollama key names); when a model reports none, tokens are estimated as characters / 4 so
    token budgets still hold. Cost comes from recursa's price table for the model's name (``prices``
    overrides or extends it); unknown models cost 0.0. A failing call raises ``LMError``.
    """

    def __init__(
        self,
        llm: LLM,
        *,
        model: str | None = None,
        prices: Mapping[str, Price] | None = None,
        context_chars: int | None = None,
    ) -> None:
        """
        Args:
            llm: the LlamaIndex LLM to call.
            model: the name recursa reports and prices by; default: the LLM's ``model`` (or metadata).
            prices: per-model prices, US dollars per million tokens, over recursa's defaults.
            context_chars: how many characters the model can read at once, when its window is small
                (recursa shows it less REPL output and sizes sub-call prompts to match).
        """
        self.llm = llm
        self.model = model or _llm_name(llm)
        self.prices = prices
        self.context_chars = context_chars

    def __repr__(self) -> str:
        return f"LlamaIndexLM({type(self.llm).__name__}, model={self.model!r})"

    async def complete(self, messages: list[Message], **params: Any) -> Completion:
        request = [ChatMessage(role=m.get("role", "user"), content=m["content"]) for m in messages]
        try:
            reply = await self.llm.achat(request, **params)
        except Exception as exc:
            raise LMError(f"The LlamaIndex LLM {self.model!r} failed: {type(exc).__name__}: {exc}",
                          model=self.model) from exc
        text = reply.message.content or ""
        usage = _reply_usage(reply)
        if usage is None:
            usage = Usage.estimate(messages, text)
        served = _field(reply.raw, "model")
        served = served if isinstance(served, str) and served else self.model
        return Completion(text=text, usage=usage, cost_usd=cost_of(served, usage, self.prices), model=served)


def _llm_name(llm: LLM) -> str:
    for attr in ("model", "model_name"):
        value = getattr(llm, attr, None)
        if isinstance(value, str) and value:
            return value
    try:
        name = llm.metadata.model_name
    except Exception:  # noqa: BLE001 - some LLMs compute metadata lazily and may fail offline
        name = None
    return name if name and name != "unknown" else type(llm).__name__


def _field(obj: Any, key: str) -> Any:
    """``obj[key]`` for mappings, ``obj.key`` for objects (pydantic models, SDK responses), else None."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _reply_usage(reply: ChatResponse) -> Usage | None:
    """Token counts a LlamaIndex reply carries, wherever its integration put them; None when it has none."""
    raw, extra = reply.raw, reply.additional_kwargs
    candidates = [_field(raw, "usage"), _field(raw, "usage_metadata"), _field(extra, "usage"), extra, raw]
    for usage in candidates:
        if not usage:
            continue
        found_in = next((v for k in _INPUT_KEYS if isinstance(v := _field(usage, k), int | float)), None)
        found_out = next((v for k in _OUTPUT_KEYS if isinstance(v := _field(usage, k), int | float)), None)
        if found_in is not None or found_out is not None:
            return Usage(int(found_in or 0), int(found_out or 0))
    return None


def _as_lm(model: LLM | LM | None) -> LM | None:
    if model is None or isinstance(model, LLM):
        return LlamaIndexLM(model) if model is not None else None
    if isinstance(model, LM):
        return model
    raise TypeError(f"Expected a LlamaIndex LLM or a recursa LM, not {type(model).__name__}.")


# -- streaming ----------------------------------------------------------------------------------------------


class RLMStreamingResponse(StreamingResponse):
    """The ``StreamingResponse`` of ``RLMQueryEngine(streaming=True).query``.

    ``response_gen`` yields progress lines (``"[recursa] iteration 2\\n"``) while the run works, then the
    answer; ``str(response)``, ``get_response()`` and ``response_txt`` hold the answer alone, and
    ``source_nodes`` and ``metadata`` are filled in when the run ends.
    """

    def _drain(self, echo: bool) -> None:
        for text in self.response_gen or ():
            if echo:
                print(text, end="", flush=True)

    def __str__(self) -> str:
        self._drain(echo=False)
        return self.response_txt or "None"

    def get_response(self) -> Response:
        self._drain(echo=False)
        return Response(self.response_txt, self.source_nodes, self.metadata)

    def print_response_stream(self) -> None:
        if self.response_txt is None:
            self._drain(echo=True)
            print()
        else:
            print(self.response_txt)


def _progress_line(event: Event) -> str | None:
    """One line of streamed progress for an event of the top-level run, or None."""
    if isinstance(event, SubCallsStarted):
        kind = "recursive sub-call" if event.recursive else "sub-call"
        return f"[recursa]   {event.count} {kind}{'s' if event.count != 1 else ''}\n"
    if event.depth:
        return None
    if isinstance(event, IterationStarted):
        return f"[recursa] iteration {event.iteration}\n"
    if isinstance(event, CodeExecuted):
        error = "; it raised an error" if event.error else ""
        return f"[recursa]   ran code: {len(event.output):,} characters of output{error}\n"
    if isinstance(event, Notice):
        return f"[recursa]   {event.message}\n"
    return None


# -- the query engine ---------------------------------------------------------------------------------------


class RLMQueryEngine(BaseQueryEngine):
    """A query engine that reasons over every node with a Recursive Language Model.

    ``query``/``aquery`` return a ``Response``: ``response`` is the run's answer (None when a budget ran
    out before one), ``metadata`` holds ``Result.to_dict()`` (``stopped_reason``, ``iterations``,
    ``sub_calls``, ``usage``, ``cost_usd``, ``duration_s``, ``run_id``, ``error``) plus ``trace``, the
    list of trace events. With ``streaming=True`` they return an ``RLMStreamingResponse`` (an
    ``AsyncStreamingResponse`` for ``aquery``) whose generator yields progress lines, then the answer.

    ``source_nodes`` are the nodes the run used, in corpus order: those whose text (a run of
    ``source_min_chars`` characters, or the whole text when shorter) or id appeared in what the REPL
    code printed or sent to sub-models. Each ``score`` is the share of the node's text that appeared
    (0.0 when only its id did). Nodes the run never looked at are not sources.

    The REPL code sees ``context`` (the node texts, without metadata), ``context_names`` (the node ids)
    and ``context_metadata`` (each node's metadata, plus ``ref_doc_id`` for chunks of a larger document).
    Build it with ``from_documents``, ``from_nodes`` or ``from_index``. Models: pass a configured
    ``rlm``, or ``llm`` (and ``sub_llm``) as LlamaIndex LLMs or recursa LMs; with neither, recursa's
    default model is used (the configured OpenAI-compatible endpoint, else the embedded local model),
    created at the first query. ``Settings.llm`` is never read.
    """

    def __init__(
        self,
        nodes: Sequence[BaseNode | NodeWithScore],
        *,
        rlm: RLM | None = None,
        llm: LLM | LM | None = None,
        sub_llm: LLM | LM | None = None,
        budget: Budget | None = None,
        streaming: bool = False,
        stream_progress: bool = True,
        source_min_chars: int = 40,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        """
        Args:
            nodes: the nodes (or documents) to reason over; each becomes one entry of the REPL's ``context``.
            rlm: a configured ``RLM`` (models, budget, sandbox limits); excludes ``llm``/``sub_llm``.
            llm: the root model, a LlamaIndex ``LLM`` or a recursa ``LM``; default: recursa's default model.
            sub_llm: the model ``llm_query`` calls; default: the root model.
            budget: the budget of each query; default: the RLM's.
            streaming: return streaming responses (progress, then the answer).
            stream_progress: with ``streaming``, yield progress lines before the answer (else only it).
            source_min_chars: how many consecutive characters of a node's text must appear in what the
                run printed or sent to sub-models for it to count as a source.
            callback_manager: LlamaIndex callbacks; default: ``Settings.callback_manager``.
        """
        if rlm is not None and (llm is not None or sub_llm is not None):
            raise ValueError("Pass either rlm= or llm=/sub_llm=, not both: an RLM already has its models.")
        super().__init__(callback_manager=callback_manager or Settings.callback_manager)
        self.nodes: list[BaseNode] = [n.node if isinstance(n, NodeWithScore) else n for n in nodes]
        if not self.nodes:
            raise ValueError("RLMQueryEngine needs at least one node or document to reason over.")
        self.context = load_context(Context(
            documents=[node.get_content(metadata_mode=MetadataMode.NONE) for node in self.nodes],
            names=[node.node_id for node in self.nodes],
            metadata=[_node_metadata(node) for node in self.nodes],
            as_list=True,
        ))
        self._rlm = rlm
        self._root, self._sub = _as_lm(llm), _as_lm(sub_llm)
        self.budget = budget
        self.streaming = streaming
        self.stream_progress = stream_progress
        self.source_min_chars = source_min_chars
        self._finder: SourceFinder | None = None
        self._finder_lock = threading.Lock()

    @classmethod
    def from_documents(cls, documents: Sequence[BaseNode], **kwargs: Any) -> RLMQueryEngine:
        """An engine over whole documents (no chunking): each document is one entry of ``context``."""
        return cls(documents, **kwargs)

    @classmethod
    def from_nodes(cls, nodes: Sequence[BaseNode | NodeWithScore], **kwargs: Any) -> RLMQueryEngine:
        """An engine over the given nodes (or ``NodeWithScore``s, e.g. a retriever's results)."""
        return cls(nodes, **kwargs)

    @classmethod
    def from_index(cls, index: BaseIndex, **kwargs: Any) -> RLMQueryEngine:
        """An engine over every node of ``index`` (read from its docstore), not a top-k retrieval."""
        struct = index.index_struct
        ids = list(getattr(struct, "nodes_dict", {}).values()) or list(getattr(struct, "nodes", []) or [])
        docstore = index.docstore
        nodes = docstore.get_nodes(ids, raise_error=False) if ids else list(docstore.docs.values())
        if not nodes:
            raise ValueError(
                f"The {type(index).__name__} has no nodes in its docstore (a vector store that keeps the "
                "text itself leaves it empty): build the index with store_nodes_override=True, "
                "or use from_nodes."
            )
        return cls(nodes, **kwargs)

    @property
    def rlm(self) -> RLM:
        """The RLM that answers queries; recursa's default model is created here at first use."""
        if self._rlm is None:
            self._rlm = RLM(root=self._root, sub=self._sub)
        return self._rlm

    def _get_prompt_modules(self) -> PromptMixinType:
        return {}

    # -- queries --------------------------------------------------------------------------------------------

    def _query(self, query_bundle: QueryBundle) -> Response | RLMStreamingResponse:
        question = query_bundle.query_str
        with self.callback_manager.event(CBEventType.QUERY, payload={EventPayload.QUERY_STR: question}) as ev:
            if self.streaming:
                response: Response | RLMStreamingResponse = RLMStreamingResponse(response_gen=iter(()))
                response.response_gen = self._stream(question, response)
            else:
                result = self.rlm.run(question, self.context, budget=self.budget)
                response = Response(result.answer, *self._sources(result))
            ev.on_end(payload={EventPayload.RESPONSE: response})
        return response

    async def _aquery(self, query_bundle: QueryBundle) -> Response | AsyncStreamingResponse:
        question = query_bundle.query_str
        with self.callback_manager.event(CBEventType.QUERY, payload={EventPayload.QUERY_STR: question}) as ev:
            if self.streaming:
                response: Response | AsyncStreamingResponse = AsyncStreamingResponse(None)  # type: ignore[arg-type]
                response.response_gen = self._astream(question, response)
            else:
                result = await self.rlm.arun(question, self.context, budget=self.budget)
                response = Response(result.answer, *await anyio.to_thread.run_sync(self._sources, result))
            ev.on_end(payload={EventPayload.RESPONSE: response})
        return response

    def _stream(self, question: str, response: RLMStreamingResponse) -> Iterator[str]:
        """Yield progress as the run's events arrive (``RLM.stream``), then the answer; stopping early cancels."""
        with self.rlm.stream(question, self.context, budget=self.budget) as run:
            for event in run:
                if self.stream_progress and (line := _progress_line(event)):
                    yield line
            result = run.result()
        yield from self._finish(result, response, *self._sources(result))

    async def _astream(self, question: str, response: AsyncStreamingResponse) -> AsyncIterator[str]:
        """Run as a task; yield progress as events arrive, then the answer."""
        events: asyncio.Queue[Event | None] = asyncio.Queue()
        task = asyncio.ensure_future(
            self.rlm.arun(question, self.context, budget=self.budget, on_event=events.put_nowait)
        )
        task.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while (event := await events.get()) is not None:
                if self.stream_progress and (line := _progress_line(event)):
                    yield line
            result = task.result()
        finally:
            if not task.done():
                task.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(task, return_exceptions=True)
        for chunk in self._finish(result, response, *await anyio.to_thread.run_sync(self._sources, result)):
            yield chunk

    def _finish(
        self, result: Result, response: Any, source_nodes: list[NodeWithScore], metadata: dict[str, Any]
    ) -> Iterator[str]:
        """The streams' last step: fill in the response, then yield the answer (``response_txt`` is the answer
        alone, also after LlamaIndex's own stream readers have appended every chunk to it)."""
        response.source_nodes, response.metadata = source_nodes, metadata
        answer = result.answer or ""
        if self.stream_progress:
            yield f"[recursa] done ({result.stopped_reason}) after {result.iterations} iteration(s)\n\n"
        response.response_txt = answer
        yield answer
        response.response_txt = answer

    def _sources(self, result: Result) -> tuple[list[NodeWithScore], dict[str, Any]]:
        """The nodes ``result`` used (see the class docstring) and the response metadata."""
        with self._finder_lock:
            if self._finder is None:
                self._finder = SourceFinder(self.context.documents, self.context.names,
                                             min_chars=self.source_min_chars)
        scores = self._finder.find(observed_texts(result.trace))
        nodes = [NodeWithScore(node=self.nodes[i], score=round(scores[i], 4)) for i in sorted(scores)]
        return nodes, {**result.to_dict(), "trace": result.trace}


def _node_metadata(node: BaseNode) -> dict[str, Any]:
    """A node's ``context_metadata``: its metadata (as JSON values) and the id of its source document."""
    metadata = dict(node.metadata)
    if node.ref_doc_id and node.ref_doc_id != node.node_id:
        metadata.setdefault("ref_doc_id", node.ref_doc_id)
    return json.loads(json.dumps(metadata, default=str))


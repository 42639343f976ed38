"""Adapters that hand recursa to the agent frameworks you already use.

Each module imports its framework when it is imported, never before, so ``import recursa`` and
``import recursa.integrations`` work without any of them installed:

- ``recursa.integrations.langgraph``: ``create_rlm_graph`` / ``create_rlm_node`` (a LangGraph subgraph or
  node), plus everything in ``recursa.integrations.langchain``. Extra: ``pip install 'recursa[langgraph]'``.
- ``recursa.integrations.langchain``: ``LangChainLM`` (any LangChain chat model as root or sub model) and
  ``create_rlm_tool`` / ``create_rlm_file_tool`` (tools for LangChain agents). Same extra.
- ``recursa.integrations.llamaindex``: ``RLMQueryEngine`` (a query engine over every node of a collection) and
  ``LlamaIndexLM`` (any LlamaIndex LLM as root or sub model). Extra: ``pip install 'recursa[llamaindex]'``.
"""

__all__: list[str] = []

"""An agent answers a question about a 5 MB log that sits in its state, through recursa's tool.

The log is far larger than the agent's model could read. It lives in the agent's graph state under
``log``; the agent's model only sees the question and the tool's answer, never the log. The tool hands
the log to an RLM, whose root model explores it with code in a sandboxed REPL.

Run it with the embedded local model (no key needed; slow on a CPU: expect minutes):

    python examples/langgraph_agent.py

or with any OpenAI-compatible endpoint (the same variables as ``recursa ask``):

    OPENAI_API_KEY=... RECURSA_MODEL=gpt-5-mini python examples/langgraph_agent.py
    OPENAI_BASE_URL=http://localhost:11434/v1 RECURSA_MODEL=qwen2.5-coder:7b python examples/langgraph_agent.py

The agent's own model is ``ChatOpenAI`` when ``langchain-openai`` is installed and an endpoint is set
(``RECURSA_AGENT_MODEL`` picks it, default the RLM's model); otherwise a small rule-based model that
passes the user's question to the tool and reports its answer, so the example runs anywhere.
Needs ``pip install 'recursa[langgraph]'`` (and ``'recursa[local]'`` for the local model).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from langchain.agents import AgentState, create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from recursa import RLM, Budget
from recursa.integrations.langgraph import create_rlm_tool

SERVICES = ["auth", "checkout", "payments", "search", "inventory", "email", "billing", "shipping"]
ERROR_RATE = {"auth": 0.010, "checkout": 0.015, "payments": 0.031, "search": 0.006, "inventory": 0.012,
              "email": 0.020, "billing": 0.018, "shipping": 0.009}
MESSAGES = {
    "INFO": ["request served in {ms}ms path=/api/{svc}/{n}", "cache hit key={svc}:{n}", "job {n} done in {ms}ms"],
    "WARN": ["slow response {ms}ms path=/api/{svc}/{n}", "retrying upstream call attempt=2 id={n}"],
    "ERROR": ["upstream timeout after {ms}ms id={n}", "db connection refused pool={svc}-db",
              "unhandled exception in handler id={n}"],
}


def make_log(size_bytes: int, seed: int = 7) -> tuple[str, Counter[str]]:
    """A synthetic service log of about ``size_bytes``, and how many ERROR lines each service logged."""
    rng = random.Random(seed)
    lines: list[str] = []
    errors: Counter[str] = Counter()
    size, t = 0, 1_717_200_000
    while size < size_bytes:
        t += rng.randint(0, 3)
        svc = rng.choice(SERVICES)
        roll = rng.random()
        level = "ERROR" if roll < ERROR_RATE[svc] else "WARN" if roll < 0.06 else "INFO"
        text = rng.choice(MESSAGES[level]).format(ms=rng.randint(2, 3000), svc=svc, n=rng.randint(1, 99_999))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        line = f"{stamp} host=web-{rng.randint(1, 12)} service={svc} level={level} msg={text}"
        lines.append(line)
        size += len(line) + 1
        if level == "ERROR":
            errors[svc] += 1
    return "\n".join(lines) + "\n", errors


class ForwardingAgentModel(BaseChatModel):
    """A rule-based stand-in for the agent's model: it asks the tool the user's question, then reports."""

    tool_name: str = ""

    @property
    def _llm_type(self) -> str:
        return "forwarding-agent"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ForwardingAgentModel:
        return self.model_copy(update={"tool_name": getattr(tools[0], "name", "")})

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            reply = AIMessage(f"From the log: {last.content}")
        else:
            question = next(str(m.text) for m in reversed(messages) if isinstance(m, HumanMessage))
            call = {"name": self.tool_name, "args": {"question": question}, "id": f"call-{uuid.uuid4().hex[:8]}"}
            reply = AIMessage("", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=reply)])


def agent_model() -> tuple[BaseChatModel, str]:
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        try:
            from langchain_openai import ChatOpenAI
        except ImportError:
            pass
        else:
            name = os.environ.get("RECURSA_AGENT_MODEL") or os.environ.get("RECURSA_MODEL") or "gpt-5-mini"
            return ChatOpenAI(model=name), f"ChatOpenAI({name})"
    return ForwardingAgentModel(), "a rule-based model that forwards the question to the tool"


class LogAgentState(AgentState):
    log: str
    """The whole log. Only the tool reads it; the agent's model never sees it."""


def show(event: dict[str, Any]) -> None:
    """One progress line per recursa event worth seeing."""
    kind = event["type"]
    if kind == "run_started":
        ctx = event["context"]
        print(f"  recursa: started on {ctx['total_chars']:,} characters with {event['root_model']}", file=sys.stderr)
    elif kind == "iteration_started":
        print(f"  recursa: iteration {event['iteration']} (left: {event['remaining']})", file=sys.stderr)
    elif kind == "sub_calls_started":
        print(f"  recursa: {event['count']} sub-call(s)", file=sys.stderr)
    elif kind == "code_executed" and event["error"]:
        print(f"  recursa: code error: {event['error'].splitlines()[-1]}", file=sys.stderr)
    elif kind == "run_finished":
        print(f"  recursa: finished ({event['stopped_reason']}) after {event['iterations']} iterations, "
              f"{event['usage']['total_tokens']:,} tokens, ${event['cost_usd']:.4f}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=float, default=5.0, help="size of the synthetic log (default 5)")
    parser.add_argument("--question", default="How many ERROR lines did the payments service log?")
    parser.add_argument("--max-iterations", type=int, default=12, help="root turns of the RLM (default 12)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the RLM run (default 1800)")
    parser.add_argument("--trace", help="write the RLM's JSONL trace here (view it with `recursa view`)")
    args = parser.parse_args()

    log, errors = make_log(int(args.size_mb * 1_000_000))
    print(f"log: {len(log):,} characters, {log.count(chr(10)):,} lines", file=sys.stderr)

    rlm = RLM(budget=Budget(max_iterations=args.max_iterations, timeout_s=args.timeout))  # local or endpoint
    model, described = agent_model()
    print(f"agent model: {described}; RLM root model: {rlm.root.model}", file=sys.stderr)
    agent = create_agent(
        model,
        tools=[create_rlm_tool(rlm, context_key="log")],
        system_prompt="You answer questions about a service log too large to read. Use the tool for every question.",
        state_schema=LogAgentState,
    )

    final: dict[str, Any] = {}
    inputs = {"messages": [HumanMessage(args.question)], "log": log}
    config = {"configurable": {"recursa_trace_path": args.trace}} if args.trace else None
    for mode, data in agent.stream(inputs, config, stream_mode=["custom", "values"]):
        if mode == "custom" and isinstance(data, dict) and data.get("source") == "recursa":
            show(data)
        elif mode == "values":
            final = data

    print(f"\nQ: {args.question}")
    print(f"A: {final['messages'][-1].text}")
    ranked = ", ".join(f"{svc} {n}" for svc, n in errors.most_common())
    print(f"(ground truth, ERROR lines per service: {ranked})")


if __name__ == "__main__":
    main()

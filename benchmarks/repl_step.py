"""Cost of one REPL step: start a sandbox worker with a 10 MB context, then time 1,000 trivial round trips.

    python benchmarks/repl_step.py [--out benchmarks/results/repl_step.json] [--steps 1000] [--mb 10]

Prints the worker start time (context written, worker isolated, context loaded) and the median / p90
wall time of ``execute("x = len(context)")``, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import anyio
from recursa._context import Context
from recursa.sandbox import ReplSandbox


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _context(megabytes: int) -> Context:
    line = "Date: Oct 14, 2022 || User: 12345 || Instance: the quick brown fox jumps over the lazy dog\n"
    text = line * (megabytes * 1_000_000 // len(line) + 1)
    return Context([text[: megabytes * 1_000_000]])


async def _run(steps: int, megabytes: int) -> dict[str, object]:
    context = _context(megabytes)
    sandbox = ReplSandbox(context)
    started = time.perf_counter()
    await sandbox.start()
    start_s = time.perf_counter() - started
    try:
        check = await sandbox.execute("x = len(context)\nx")
        assert check.output.strip() == str(len(context.documents[0])), check
        for _ in range(20):  # warm-up
            await sandbox.execute("x = len(context)")
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            result = await sandbox.execute("x = len(context)")
            times.append(time.perf_counter() - t0)
            assert result.error is None, result.error
        mechanisms = sandbox.mechanisms
    finally:
        await sandbox.aclose()
    ms = [t * 1000 for t in times]
    return {
        "benchmark": "repl_step",
        "context_chars": len(context.documents[0]),
        "steps": steps,
        "worker_start_s": round(start_s, 4),
        "step_ms_median": round(statistics.median(ms), 4),
        "step_ms_p90": round(_percentile(ms, 0.9), 4),
        "step_ms_p99": round(_percentile(ms, 0.99), 4),
        "step_ms_mean": round(statistics.fmean(ms), 4),
        "mechanisms": mechanisms,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "repl_step.json"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--mb", type=int, default=10, help="context size in millions of characters")
    args = parser.parse_args()
    result = anyio.run(_run, args.steps, args.mb)
    print(f"worker start with a {result['context_chars']:,}-char context: {result['worker_start_s'] * 1000:.1f} ms")
    print(
        f"{result['steps']} steps of `x = len(context)`: median {result['step_ms_median']:.3f} ms, "
        f"p90 {result['step_ms_p90']:.3f} ms, p99 {result['step_ms_p99']:.3f} ms"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

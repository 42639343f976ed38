"""Throughput and latency of ``recursa serve`` under concurrent clients, against the ideal.

    python benchmarks/serve_throughput.py [--latency 0.5] [--slots 8] [--requests 1,8,32] [--sub-calls 4]
                                          [--out benchmarks/results/serve_throughput.json]

Starts the real server (``recursa serve`` in a subprocess, every request queued rather than refused) in
front of the fake OpenAI-compatible upstream from ``tests/fake_openai.py``, which answers every call after
``--latency`` seconds. Each request is one RLM run on a 100 KB message: a root turn that writes code, the
code's ``llm_query_batched`` of ``--sub-calls`` prompts (sent concurrently), and a root turn that answers, so
its critical path is three upstream latencies. The ideal is that critical path and nothing else: with S run
slots, request i finishes at ``(i // S + 1) * 3 * latency``. What the server adds on top (a REPL worker per
run, the loop, HTTP) is the gap between measured and ideal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fake_openai import FakeOpenAIServer  # noqa: E402

TOKEN = "bench-token"
CODE = ("```repl\nparts = llm_query_batched([f'part {{i}}: ' + context[:50] for i in range({n})])\n"
        "print(len(parts))\n```")


def _responder(sub_calls: int) -> Any:
    def respond(request: dict[str, Any]) -> str:
        if request["model"] == "sub-model":
            return "ok"
        answered = sum(1 for m in request["messages"] if m["role"] == "assistant")
        return CODE.format(n=sub_calls) if answered == 0 else "FINAL(done)"

    return respond


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(base_url: str, slots: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RECURSA_"))}
    command = [sys.executable, "-m", "recursa.cli", "serve", "--port", str(port), "--model", "root-model",
               "--sub-model", "sub-model", "--base-url", base_url, "--api-key", "sk-bench", "--token", TOKEN,
               "--max-concurrent-runs", str(slots), "--max-queued", "100000"]
    proc = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start:\n{log.read_text()}")
        time.sleep(0.1)


async def _burst(url: str, n: int, message: str) -> tuple[list[float], float]:
    body = {"model": "recursa", "messages": [{"role": "user", "content": message}]}
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:

        async def one() -> float:
            t0 = time.perf_counter()
            response = await client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            answer = response.json()["choices"][0]["message"]["content"]
            assert answer == "done", answer
            return time.perf_counter() - t0

        started = time.perf_counter()
        latencies = await asyncio.gather(*(one() for _ in range(n)))
        return list(latencies), time.perf_counter() - started


def _ideal(n: int, slots: int, per_run_s: float) -> dict[str, float]:
    finish = [(i // slots + 1) * per_run_s for i in range(n)]
    makespan = max(finish)
    return {"throughput_rps": n / makespan, "p50_s": _percentile(finish, 0.5), "p95_s": _percentile(finish, 0.95),
            "wall_s": makespan}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.5, help="Seconds the upstream takes per call.")
    parser.add_argument("--slots", type=int, default=8, help="--max-concurrent-runs of the server.")
    parser.add_argument("--requests", default="1,8,32", help="Concurrent requests per burst, comma-separated.")
    parser.add_argument("--sub-calls", type=int, default=4, help="llm_query_batched prompts per run.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve_throughput.json")
    args = parser.parse_args()

    per_run_s = 3 * args.latency  # root turn, one concurrent batch of sub-calls, root turn
    message = ("Date: Oct 14, 2022 || User: 12345 || Instance: the quick brown fox\n" * 1_500)[:100_000]
    message += "\n\nHow many records are there?"
    runs = []
    with FakeOpenAIServer(_responder(args.sub_calls), delay_s=args.latency) as fake, \
            tempfile.TemporaryDirectory() as tmp:
        proc, url = _start_server(fake.base_url, args.slots, Path(tmp) / "server.log")
        try:
            asyncio.run(_burst(url, 1, message))  # warm-up: imports, first worker
            for n in [int(x) for x in args.requests.split(",")]:
                fake.reset_counters()
                latencies, wall = asyncio.run(_burst(url, n, message))
                ideal = _ideal(n, args.slots, per_run_s)
                run = {
                    "requests": n,
                    "wall_s": round(wall, 3),
                    "throughput_rps": round(n / wall, 3),
                    "p50_s": round(_percentile(latencies, 0.5), 3),
                    "p95_s": round(_percentile(latencies, 0.95), 3),
                    "ideal": {k: round(v, 3) for k, v in ideal.items()},
                    "throughput_vs_ideal": round((n / wall) / ideal["throughput_rps"], 3),
                    "p50_overhead_s": round(_percentile(latencies, 0.5) - ideal["p50_s"], 3),
                    "upstream_calls": fake.request_count,
                    "upstream_max_in_flight": fake.max_in_flight,
                }
                runs.append(run)
                print(f"{n:>4} requests: {run['throughput_rps']:.2f} req/s (ideal {ideal['throughput_rps']:.2f}, "
                      f"{run['throughput_vs_ideal']:.0%}), p50 {run['p50_s']:.2f} s (ideal {ideal['p50_s']:.2f}), "
                      f"p95 {run['p95_s']:.2f} s (ideal {ideal['p95_s']:.2f}), {fake.request_count} upstream calls, "
                      f"at most {fake.max_in_flight} at once", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result = {
        "benchmark": "serve_throughput",
        "upstream_latency_s": args.latency,
        "slots": args.slots,
        "sub_calls_per_run": args.sub_calls,
        "message_chars": len(message),
        "ideal_run_s": per_run_s,
        "runs": runs,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Start-up, memory and fan-out of ``recursa ask`` against the official ``rlms`` 0.1.3, on one fake server.

    python benchmarks/vs_official.py [--repeat 5] [--only startup,memory,fanout] [--mb 400] [--huge-gb 0]
                                     [--out benchmarks/results/vs_official.json]

Both libraries talk to the same simulated OpenAI-compatible server, and the runs are interleaved (recursa,
official, official, recursa, ...) so that load from other work on the machine falls on both alike. The
server is a small asyncio one in its own process (``--serve``), with keep-alive like a real endpoint, so
that what is measured is the client: the threaded test server (``tests/fake_openai.py``) closes every
connection and starts a thread per request, which on 2 busy cores added ~10 ms to every wave of calls.
The official library is installed by this script into a throwaway virtualenv under ``/tmp``
(``--official-venv``) and driven the way its README shows:
``RLM(backend="openai", ...).completion(context, root_prompt=question)``, local REPL, default settings.
recursa runs as its command line, ``recursa ask``, with ``--no-cache`` so no answer is reused.

Every run is the same conversation: the root model's first reply is a code block, its second the answer
(``FINAL(...)`` for recursa, ``answer["ready"] = True`` for the official REPL). Measured:

- **startup**: seconds from process start (the moment before ``exec``) to the first root request reaching
  the server, with a 1 KB context; for the official library also from its ``completion()`` call.
- **memory**: peak resident memory of the whole process tree (the process and every descendant, sampled
  every 10 ms from ``/proc``) with a ``--mb`` MB context file, as a multiple of the file's size.
- **fanout**: the code asks ``llm_query_batched`` for 64 sub-calls, concurrency 16, each answered after
  0.2 s. The ideal is 2 root calls + ceil(64 / 16) waves = 6 latencies = 1.2 s. The server-side span
  runs from the first request's arrival to the last answer; the whole process from start to exit.

``--huge-gb N`` also runs recursa alone (the official library holds several copies of a context in one
process) on an N GB file. Files are made under ``/tmp`` and deleted afterwards. Writes the JSON and a
markdown table beside it (``.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

OFFICIAL = "rlms==0.1.3"
N_SUB, CONCURRENCY, LATENCY = 64, 16, 0.2
QUESTION = "How many characters does the context hold?"
SUB_PREFIX = "ITEM "

RECURSA_CODE = {
    "fanout": (f"```repl\nparts = llm_query_batched([f'{SUB_PREFIX}{{i}}' for i in range({N_SUB})])\n"
               "print(len(parts))\n```"),
    "plain": "```repl\nprint(len(context))\n```",
}
OFFICIAL_FINAL = '```repl\nanswer["content"] = "done"\nanswer["ready"] = True\n```'

OFFICIAL_DRIVER = textwrap.dedent("""
    import json, sys, time
    from rlm import RLM
    url, path, question, model = sys.argv[1:5]
    with open(path, encoding="utf-8") as f:
        context = f.read()
    rlm = RLM(backend="openai", backend_kwargs={"model_name": model, "base_url": url, "api_key": "x"},
              max_iterations=5)
    called = time.monotonic()
    result = rlm.completion(context, root_prompt=question)
    print(json.dumps({"api_call": called, "answer": result.response}))
""")


# -- the simulated model ------------------------------------------------------------------------------


def reply_to(request: dict[str, Any], scenario: str) -> tuple[str, str]:
    """The simulated model's reply to a chat request, and whether it was a root or a sub-call."""
    messages = request["messages"]
    last = messages[-1].get("content") or ""
    if isinstance(last, str) and last.startswith(SUB_PREFIX):
        return "ok", "sub"
    answered = any(m["role"] == "assistant" for m in messages)
    if not answered:
        return RECURSA_CODE[scenario], "root"
    return (OFFICIAL_FINAL if request["model"].startswith("official") else "FINAL(done)"), "root"


async def _serve() -> None:
    """An OpenAI-compatible chat endpoint (HTTP/1.1, keep-alive) that answers ``reply_to`` after the scenario's
    latency, and notes each request's arrival (``time.monotonic``, the same clock in every process).
    ``POST /_reset {"scenario": ...}`` starts a run; ``GET /_arrivals`` returns ``[[t, "root" | "sub"], ...]``."""
    import asyncio

    state: dict[str, Any] = {"scenario": "plain", "arrivals": []}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.monotonic()
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split()[:2]
                headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                if path == "/_reset":
                    state.update(scenario=json.loads(body)["scenario"], arrivals=[])
                    out: Any = {"ok": True}
                elif path == "/_arrivals":
                    out = state["arrivals"]
                else:
                    request = json.loads(body)
                    text, kind = reply_to(request, state["scenario"])
                    state["arrivals"].append((arrived, kind))
                    if state["scenario"] == "fanout":
                        await asyncio.sleep(LATENCY - (time.monotonic() - arrived))
                    message = {"role": "assistant", "content": text, "refusal": None}
                    out = {"id": "chatcmpl-sim", "object": "chat.completion", "created": int(time.time()),
                           "model": request["model"],
                           "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None, "message": message}],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}
                payload = json.dumps(out).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(payload)).encode() + b"\r\n\r\n" + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


class SimulatedServer:
    """``--serve`` in a child process, so its work does not share the measuring process's interpreter."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.base_url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}/v1"
        self.arrivals: list[tuple[float, str]] = []

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        import urllib.request

        data = json.dumps(body or {}).encode()
        with urllib.request.urlopen(urllib.request.Request(self.base_url.rsplit("/v1", 1)[0] + path, data)) as r:
            return json.loads(r.read())

    def reset(self, scenario: str) -> None:
        self._call("/_reset", {"scenario": scenario})

    def fetch(self) -> None:
        self.arrivals = [(t, kind) for t, kind in self._call("/_arrivals")]

    def first_root(self) -> float:
        return min(t for t, kind in self.arrivals if kind == "root")

    def span(self) -> float:
        """First arrival to the last answer (each answered ``LATENCY`` after it arrived)."""
        times = [t for t, _ in self.arrivals]
        return max(times) + LATENCY - min(times)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


# -- measuring a process tree -----------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakRss:
    """Samples the summed RSS of a process and all its descendants every 10 ms; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kb, self.host_peak_kb = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p) for p in pids))
            self.host_peak_kb = max(self.host_peak_kb, _rss_kb(self.pid))
            self._stop.wait(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# -- running one library once ------------------------------------------------------------------------------


def _command(lib: str, server: SimulatedServer, path: Path, official_python: str, scenario: str) -> list[str]:
    if lib == "official":
        return [official_python, "-c", OFFICIAL_DRIVER, server.base_url, str(path), QUESTION, "official-root"]
    recursa = shutil.which("recursa") or str(Path(sys.executable).with_name("recursa"))
    command = [recursa, "ask", QUESTION, "-c", str(path), "--model", "recursa-root", "--base-url", server.base_url,
               "--api-key", "x", "--no-cache", "--json", "--concurrency", str(CONCURRENCY)]
    if scenario == "memory":
        size_mb = path.stat().st_size / 2**20
        command += ["--max-context-mb", str(math.ceil(size_mb) + 1)]
    return command


def run_once(lib: str, scenario: str, server: SimulatedServer, path: Path, official_python: str) -> dict[str, Any]:
    server.reset("fanout" if scenario == "fanout" else "plain")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RECURSA_"))}
    env["RECURSA_CACHE"] = "off"
    command = _command(lib, server, path, official_python, scenario)
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    rss = PeakRss(proc.pid) if scenario == "memory" else None
    out, err = proc.communicate(timeout=900)
    ended = time.monotonic()
    if rss is not None:
        rss.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{lib} {scenario} failed ({proc.returncode}): {err[-2000:]}")
    server.fetch()
    row: dict[str, Any] = {"lib": lib, "scenario": scenario, "process_s": round(ended - started, 4),
                           "first_root_request_s": round(server.first_root() - started, 4)}
    if lib == "official":
        reply = json.loads(out.strip().splitlines()[-1])
        row["first_root_request_from_api_call_s"] = round(server.first_root() - reply["api_call"], 4)
    if rss is not None:
        size = path.stat().st_size
        row.update(peak_rss_mb=round(rss.peak_kb / 1024, 1), host_peak_rss_mb=round(rss.host_peak_kb / 1024, 1),
                   context_mb=round(size / 2**20, 1), peak_over_context=round(rss.peak_kb * 1024 / size, 2))
    if scenario == "fanout":
        ideal = (2 + math.ceil(N_SUB / CONCURRENCY)) * LATENCY
        subs = sum(1 for _, kind in server.arrivals if kind == "sub")
        if subs != N_SUB:
            raise RuntimeError(f"{lib} made {subs} sub-calls, not {N_SUB}")
        row.update(ideal_s=round(ideal, 3), span_s=round(server.span(), 4),
                   span_over_ideal=round(server.span() / ideal, 3),
                   process_over_ideal=round((ended - started) / ideal, 3))
    return row


# -- inputs -------------------------------------------------------------------------------------------


def make_text_file(path: Path, size: int) -> Path:
    """ASCII log-like lines, written in 8 MB blocks (the script itself never holds the whole file)."""
    line = "Date: Oct 14, 2022 || User: 12345 || Instance: the quick brown fox jumps over the lazy dog\n"
    block = (line * (8 * 2**20 // len(line) + 1))[: 8 * 2**20].encode()
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
    return path


def official_python(venv: Path) -> str:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"installing {OFFICIAL} into {venv} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", OFFICIAL], check=True)
    return str(python)


# -- the report ------------------------------------------------------------------------------------------


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Median, min and max of every number, per scenario and library."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out.setdefault(f"{row['scenario']}/{row['lib']}", {}).setdefault(key, []).append(value)  # type: ignore[arg-type]
    return {name: {k: {"median": round(statistics.median(v), 4), "min": min(v), "max": max(v)}  # type: ignore[arg-type]
                   for k, v in values.items()} for name, values in out.items()}


TABLE = [
    ("startup", "first_root_request_s", "Start-up: process start to first root request (s)", "≤ 0.25"),
    ("startup", "first_root_request_from_api_call_s", "Start-up: completion() call to first root request (s)", ""),
    ("memory", "peak_rss_mb", "Memory: peak RSS of the process tree, {mb} MB file (MB)", ""),
    ("memory", "peak_over_context", "Memory: peak RSS / context size", "≤ 1.5×"),
    ("memory", "host_peak_rss_mb", "Memory: peak RSS of the first process alone (MB)", ""),
    ("fanout", "span_over_ideal", "Fan-out n=64, C=16, 0.2 s: server-side span / ideal (1.2 s)", "≤ 1.05×"),
    ("fanout", "process_over_ideal", "Fan-out: whole process / ideal, start-up included", "≤ 1.3×"),
]


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    def cell(name: str, key: str) -> str:
        stats = summary.get(name, {}).get(key)
        if stats is None:
            return "–"
        return f"{stats['median']:g} ({stats['min']:g}–{stats['max']:g})"

    lines = ["| Measure | recursa | official rlms 0.1.3 | Target (recursa) |", "|---|---|---|---|"]
    for scenario, key, label, target in TABLE:
        recursa, official = cell(f"{scenario}/recursa", key), cell(f"{scenario}/official", key)
        if recursa == official == "–":
            continue
        lines.append(f"| {label.format(mb=meta['context_mb'])} | {recursa} | {official} | {target} |")
    huge = summary.get("huge/recursa")
    if huge:
        lines.append(f"| Memory: {meta['huge_gb']} GB file, peak RSS / context (recursa only) | "
                     f"{huge['peak_over_context']['median']:g} | – | ≤ 1.5× |")
    lines.append("")
    runs = f"Median (min–max) of {meta['repeat']} interleaved runs" if meta["repeat"] else "One run"
    lines.append(f"{runs}; {meta['cpus']} CPUs, Python {meta['python']}, load average {meta['load_average_1m']} "
                 "at the start.")
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:] == ["--serve"]:
        import asyncio

        asyncio.run(_serve())
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="startup,memory,fanout")
    parser.add_argument("--mb", type=int, default=400, help="context file size for the memory runs, in MB")
    parser.add_argument("--huge-gb", type=float, default=0.0, help="also run recursa alone on a file this large")
    parser.add_argument("--libs", default="recursa,official")
    parser.add_argument("--official-venv", default="/tmp/rlms-0.1.3-venv")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "vs_official.json"))
    args = parser.parse_args()
    scenarios = [s for s in args.only.split(",") if s]
    libs = [lib for lib in args.libs.split(",") if lib]
    python = official_python(Path(args.official_venv)) if "official" in libs else ""
    work = Path(tempfile.mkdtemp(prefix="recursa-bench-", dir="/tmp"))
    rows: list[dict[str, Any]] = []
    server = SimulatedServer()
    try:
        small = make_text_file(work / "small.txt", 1000)
        big = make_text_file(work / "big.txt", args.mb * 2**20) if "memory" in scenarios else small
        for i in range(args.repeat):
            order = libs if i % 2 == 0 else libs[::-1]
            for scenario in scenarios:
                for lib in order:
                    row = run_once(lib, scenario, server, big if scenario == "memory" else small, python)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        if "memory" in scenarios:
            big.unlink()
        if args.huge_gb:
            huge = make_text_file(work / "huge.txt", int(args.huge_gb * 2**30))
            row = run_once("recursa", "memory", server, huge, python)
            row["scenario"] = "huge"
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    meta = {"repeat": args.repeat, "context_mb": args.mb, "huge_gb": args.huge_gb, "n_sub": N_SUB,
            "concurrency": CONCURRENCY, "latency_s": LATENCY, "official": OFFICIAL, "python": sys.version.split()[0],
            "platform": platform.platform(), "cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)}
    summary = summarise(rows)
    result = {"benchmark": "vs_official", "meta": meta, "summary": summary, "runs": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(summary, meta)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()

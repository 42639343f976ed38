"""The persistent LM-call cache: what makes two calls the same, what a hit is worth, and what is never stored."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_openai import FakeOpenAIServer, sequence
from recursa._budget import budget_line
from recursa._cache import CachedLM, LMCache
from recursa._exceptions import LMError
from recursa._lm import LM, Completion, Usage
from recursa._openai import OpenAIChat
from recursa._pricing import Price
from recursa._scripted import ScriptedLM

HI = [{"role": "user", "content": "say hi"}]
PRICE = {"priced": Price(input_per_mtok=1.0, output_per_mtok=2.0)}


@pytest.fixture
def cache(tmp_path: Path) -> LMCache:
    return LMCache(tmp_path / "cache")


def chat(server: FakeOpenAIServer, model: str = "priced", **params: Any) -> OpenAIChat:
    return OpenAIChat(model, base_url=server.base_url, api_key="sk-test", max_retries=0, prices=PRICE, **params)


def rows(cache: LMCache) -> int:
    with sqlite3.connect(cache.path) as con:
        return con.execute("SELECT COUNT(*) FROM calls").fetchone()[0]


# -- keys -----------------------------------------------------------------------------------------


def test_every_part_of_a_request_changes_the_key(tmp_path: Path) -> None:
    cache = LMCache(tmp_path, sampled=True)
    lm = OpenAIChat("m", base_url="http://a.test/v1", api_key="k")
    base = cache.key(lm, HI, {"temperature": 0})
    assert base is not None and base == cache.key(lm, [dict(m) for m in HI], {"temperature": 0})
    variants = {
        "endpoint": cache.key(OpenAIChat("m", base_url="http://b.test/v1", api_key="k"), HI, {"temperature": 0}),
        "model": cache.key(OpenAIChat("m2", base_url="http://a.test/v1", api_key="k"), HI, {"temperature": 0}),
        "content": cache.key(lm, [{"role": "user", "content": "say hi!"}], {"temperature": 0}),
        "role": cache.key(lm, [{"role": "system", "content": "say hi"}], {"temperature": 0}),
        "more messages": cache.key(lm, [*HI, {"role": "assistant", "content": "hi"}], {"temperature": 0}),
        "client default": cache.key(OpenAIChat("m", base_url="http://a.test/v1", api_key="k", max_tokens=9), HI,
                                    {"temperature": 0}),
    }
    for name, value in [("temperature", 0.5), ("max_tokens", 64), ("top_p", 0.9), ("top_k", 20), ("seed", 1),
                        ("stop", ["\n"]), ("grammar", 'root ::= "x"'), ("repeat_penalty", 1.1), ("min_p", 0.1)]:
        variants[name] = cache.key(lm, HI, {"temperature": 0, name: value})
    keys = list(variants.values())
    assert None not in keys and base not in keys and len(set(keys)) == len(keys), variants
    assert cache.key(lm, HI, {"temperature": 0, "model": "m2"}) == variants["model"]  # per call or per client: one


def test_a_client_default_and_the_same_value_per_call_are_one_request(tmp_path: Path) -> None:
    cache = LMCache(tmp_path)
    by_default = OpenAIChat("m", base_url="http://a.test/v1", api_key="k", temperature=0, max_tokens=9)
    per_call = OpenAIChat("m", base_url="http://a.test/v1", api_key="k")
    assert cache.key(by_default, HI, {}) == cache.key(per_call, HI, {"temperature": 0, "max_tokens": 9})


def test_only_greedy_calls_are_cached_unless_sampled_calls_are_asked_for(tmp_path: Path) -> None:
    greedy_only, every_call = LMCache(tmp_path), LMCache(tmp_path, sampled=True)
    hosted = OpenAIChat("m", base_url="http://a.test/v1", api_key="k")  # the server's default temperature samples
    assert greedy_only.key(hosted, HI, {}) is None
    assert greedy_only.key(hosted, HI, {"temperature": 0.7}) is None
    assert greedy_only.key(hosted, HI, {"temperature": 0}) is not None
    assert greedy_only.key(OpenAIChat("m", base_url="http://a.test/v1", api_key="k", temperature=0.0), HI, {})
    assert every_call.key(hosted, HI, {}) is not None
    assert greedy_only.key(ScriptedLM(["x"]), HI, {}) is None  # a client that says nothing about its sampling


def test_the_embedded_model_is_greedy_by_default(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="the embedded model needs pip install 'recursa[local]'")
    from recursa._local import LocalLlama

    cache = LMCache(tmp_path)
    assert cache.key(LocalLlama(), HI, {}) is not None
    assert cache.key(LocalLlama(temperature=0.8), HI, {}) is None
    assert cache.key(LocalLlama(), HI, {}) != cache.key(LocalLlama(n_ctx=4096), HI, {})


def test_the_budget_line_is_not_part_of_the_key(cache: LMCache) -> None:
    """It says how many seconds are left, which differs on every run: a rerun's root calls must still hit."""
    lm = ScriptedLM(["x"])

    def turn(left: dict[str, Any], data: str = "the data") -> list[dict[str, str]]:
        return [{"role": "user", "content": f"Look at {data}.\n({budget_line(left)})\nWrite code."}]

    assert cache.key(lm, turn({"iterations": 29, "seconds": 899.9}), {"temperature": 0}) == cache.key(
        lm, turn({"iterations": 29, "seconds": 412.0}), {"temperature": 0})
    assert cache.key(lm, turn({"iterations": 29}), {"temperature": 0}) != cache.key(
        lm, turn({"iterations": 29}, "the other data"), {"temperature": 0})


def test_a_parameter_that_is_not_json_leaves_the_call_uncached(cache: LMCache) -> None:
    assert cache.key(ScriptedLM(["x"]), HI, {"temperature": 0, "logits_processor": object()}) is None


# -- hits are free and credited -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_hit_costs_nothing_and_says_what_it_saved(cache: LMCache) -> None:
    reply = {"text": "hello", "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}
    with FakeOpenAIServer(lambda request: reply) as server:
        lm = cache.wrap(chat(server, temperature=0))
        first = await lm.complete(HI)
        second = await lm.complete(HI)
        assert server.request_count == 1
    assert isinstance(lm, LM) and lm.model == "priced"
    assert first.cache == "miss" and first.usage == Usage(1000, 500) and first.cost_usd == pytest.approx(0.002)
    assert second.cached and second.text == "hello" and second.model == "priced"
    assert second.usage == Usage() and second.cost_usd == 0.0 and second.saved_usd == pytest.approx(0.002)
    stats = cache.stats()
    assert (stats.entries, stats.hits) == (1, 1) and stats.saved_usd == pytest.approx(0.002)


@pytest.mark.anyio
async def test_the_cache_is_shared_through_the_file(tmp_path: Path) -> None:
    with FakeOpenAIServer(lambda request: "hello") as server:
        await LMCache(tmp_path).wrap(chat(server, temperature=0)).complete(HI)
        again = await LMCache(tmp_path).wrap(chat(server, temperature=0)).complete(HI)
        assert server.request_count == 1 and again.cached


@pytest.mark.anyio
async def test_an_uncacheable_call_goes_to_the_model_every_time(cache: LMCache) -> None:
    with FakeOpenAIServer(lambda request: "hello") as server:
        lm = cache.wrap(chat(server))
        results = [await lm.complete(HI) for _ in range(2)]
        assert server.request_count == 2
    assert [r.cache for r in results] == [None, None]


def test_the_wrapper_shows_the_wrapped_model_s_attributes(cache: LMCache) -> None:
    scripted = ScriptedLM(["x"], model="s")
    scripted.context_chars = 24_000  # type: ignore[attr-defined]
    wrapped = CachedLM(scripted, cache)
    assert wrapped.context_chars == 24_000 and wrapped.model == "s" and not hasattr(wrapped, "supports_grammar")


# -- what is never stored ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_error_is_never_cached(cache: LMCache) -> None:
    with FakeOpenAIServer(sequence({"status": 500, "error": "boom"}, then="fine")) as server:
        lm = cache.wrap(chat(server, temperature=0))
        with pytest.raises(LMError, match="boom"):
            await lm.complete(HI)
        assert rows(cache) == 0
        assert (await lm.complete(HI)).cache == "miss"
        assert (await lm.complete(HI)).cached
        assert server.request_count == 2


@pytest.mark.anyio
async def test_an_exception_from_any_client_stores_nothing(cache: LMCache) -> None:
    lm = cache.wrap(ScriptedLM([RuntimeError("no"), "yes"]))
    with pytest.raises(RuntimeError):
        await lm.complete(HI, temperature=0)
    assert (await lm.complete(HI, temperature=0)).text == "yes"


@pytest.mark.anyio
async def test_an_empty_reply_is_not_stored(cache: LMCache) -> None:
    lm = cache.wrap(ScriptedLM(["", "   ", "real"]))
    texts = [(await lm.complete(HI, temperature=0)).text for _ in range(3)]
    assert texts == ["", "   ", "real"]
    assert (await lm.complete(HI, temperature=0)).cached


@pytest.mark.anyio
async def test_a_cancelled_call_is_not_cached(cache: LMCache) -> None:
    with FakeOpenAIServer(lambda request: "slow answer", delay_s=1.0) as server:
        lm = cache.wrap(chat(server, temperature=0))
        with anyio.move_on_after(0.2):
            await lm.complete(HI)
        assert rows(cache) == 0
        server.delay_s = 0.0
        answer = await lm.complete(HI)
        assert answer.cache == "miss" and answer.text == "slow answer" and server.request_count == 2


@pytest.mark.anyio
async def test_an_unusable_cache_does_not_stop_calls(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    lm = LMCache(blocker / "cache").wrap(ScriptedLM(["one", "two"]))
    assert [(await lm.complete(HI, temperature=0)).text for _ in range(2)] == ["one", "two"]
    assert sum("not usable" in r.getMessage() for r in caplog.records) == 1


# -- the size bound ----------------------------------------------------------------------------------------


def test_the_least_recently_used_entries_are_evicted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(1, 1000))
    monkeypatch.setattr("recursa._cache.time.time", lambda: float(next(clock)))
    cache = LMCache(tmp_path, max_bytes=4 * (1000 + 160))
    lm = ScriptedLM([])
    keys = {name: cache.key(lm, [{"role": "user", "content": name}], {"temperature": 0}) for name in "abcde"}
    for name in "abcd":
        assert cache.put(keys[name], lm, Completion(name * 1000))
    assert cache.get(keys["a"]) is not None  # a is now the most recently used
    cache.put(keys["e"], lm, Completion("e" * 1000))
    kept = {name for name, key in keys.items() if cache.get(key) is not None}
    assert kept == {"a", "d", "e"}  # over the bound: the oldest-used go until 90 % of it is left
    assert cache.stats().bytes <= cache.max_bytes


def test_an_answer_larger_than_the_whole_cache_is_not_stored(tmp_path: Path) -> None:
    cache = LMCache(tmp_path, max_bytes=1000)
    assert not cache.put("k", ScriptedLM([]), Completion("x" * 2000))
    assert cache.get("k") is None


def test_clear_empties_the_file_and_resets_the_counters(cache: LMCache) -> None:
    lm = ScriptedLM([])
    cache.put("k1", lm, Completion("one", cost_usd=0.5))
    cache.put("k2", lm, Completion("two"))
    assert cache.get("k1") is not None
    assert cache.clear() == 2
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.hits, stats.saved_usd) == (0, 0, 0, 0.0)


def test_stats_of_a_cache_never_used_are_zero_and_create_nothing(tmp_path: Path) -> None:
    cache = LMCache(tmp_path / "none")
    assert cache.stats().entries == 0 and cache.clear() == 0
    assert not (tmp_path / "none").exists()


# -- several processes at once ------------------------------------------------------------------------------


def _writer(path: str, worker: int, count: int, max_bytes: int) -> None:
    cache = LMCache(path, max_bytes=max_bytes)
    lm = ScriptedLM([])
    for i in range(count):
        key = cache.key(lm, [{"role": "user", "content": f"{i % 50}"}], {"temperature": 0})  # shared keys collide
        assert key is not None
        if cache.get(key) is None:
            assert cache.put(key, lm, Completion(f"answer {i % 50} " + "x" * 300, cost_usd=0.001))
        own = cache.key(lm, [{"role": "user", "content": f"{worker}-{i}"}], {"temperature": 0})
        assert own is not None and cache.put(own, lm, Completion(f"own {worker}-{i} " + "y" * 300))
    assert not cache._broken


def test_several_processes_write_and_evict_at_once(tmp_path: Path) -> None:
    max_bytes = 60 * 1024
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_writer, args=(str(tmp_path), w, 150, max_bytes)) for w in range(4)]
    for proc in workers:
        proc.start()
    for proc in workers:
        proc.join(120)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    cache = LMCache(tmp_path, max_bytes=max_bytes)
    with sqlite3.connect(cache.path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = con.execute("SELECT COALESCE(SUM(size), 0) FROM calls").fetchone()[0]
        answers = con.execute("SELECT text FROM calls WHERE text LIKE 'answer %'").fetchall()
    stats = cache.stats()
    assert stats.bytes == stored <= max_bytes and stats.entries > 0
    assert all(text.split()[1].isdigit() for (text,) in answers)


# -- the command line ---------------------------------------------------------------------------------------


def test_cache_stats_and_clear_commands(tmp_path: Path) -> None:
    from recursa.cli import app
    from typer.testing import CliRunner

    cache = LMCache(tmp_path)
    cache.put("k", ScriptedLM([]), Completion("stored", cost_usd=0.25))
    cache.get("k")
    runner = CliRunner()
    shown = runner.invoke(app, ["cache", "stats", "--cache-dir", str(tmp_path), "--json"])
    assert shown.exit_code == 0, shown.output
    stats = json.loads(shown.stdout)
    assert (stats["entries"], stats["hits"], stats["saved_usd"]) == (1, 1, 0.25)
    assert stats["path"] == str(cache.path)
    text = runner.invoke(app, ["cache", "stats", "--cache-dir", str(tmp_path)])
    assert "1 entries" in text.stdout and "$0.2500 saved" in text.stdout
    cleared = runner.invoke(app, ["cache", "clear", "--cache-dir", str(tmp_path)])
    assert cleared.exit_code == 0 and "removed 1" in cleared.stdout
    assert cache.stats().entries == 0


# -- in the loop --------------------------------------------------------------------------------------------


def _script(request: dict[str, Any]) -> dict[str, Any]:
    """Root: look (three sub-calls), then answer. Sub: a word per prompt. 1,000 tokens in, 100 out each."""
    messages = request["messages"]
    usage = {"prompt_tokens": 1000, "completion_tokens": 100}
    if messages[-1]["content"].startswith("part "):
        return {"text": "seen " + messages[-1]["content"], "usage": usage}
    looked = any(m["role"] == "assistant" for m in messages)
    code = "```repl\nparts = llm_query_batched([f'part {i}' for i in range(3)])\nprint(parts)\n```"
    return {"text": "FINAL(three parts)" if looked else code, "usage": usage}


def _rlm(server: FakeOpenAIServer, cache: Any, **kwargs: Any) -> Any:
    from recursa import RLM

    return RLM(chat(server, temperature=0), chat(server, temperature=0), cache=cache, **kwargs)


def test_a_rerun_is_answered_from_the_cache_free_and_credited(tmp_path: Path) -> None:
    from recursa import Budget, LMCalled

    with FakeOpenAIServer(_script) as server:
        first = _rlm(server, tmp_path).run("how many parts?", "some context")
        calls = server.request_count
        # Hits are free: a budget the first run's spending would break does not stop the rerun.
        tight = Budget(max_cost_usd=first.cost_usd / 10, max_tokens=100)
        again = _rlm(server, LMCache(tmp_path)).run("how many parts?", "some context", budget=tight)
        assert server.request_count == calls == 5  # 2 root + 3 sub, none the second time
    assert first.answer == again.answer == "three parts" and again.stopped_reason == "final"
    assert (first.cache_hits, first.cache_misses, first.saved_usd) == (0, 5, 0.0)
    assert (again.cache_hits, again.cache_misses) == (5, 0)
    assert again.cost_usd == 0.0 and again.usage.total_tokens == 0 and again.saved_usd == pytest.approx(first.cost_usd)
    hits = [e for e in again.trace if isinstance(e, LMCalled)]
    assert len(hits) == 5 and all(e.cached and e.cost_usd == 0.0 for e in hits)
    assert not any(e.cached for e in first.trace if isinstance(e, LMCalled))
    assert again.to_dict()["cache"] == {"hits": 5, "misses": 0, "saved_usd": round(first.cost_usd, 6)}


def test_a_rerun_s_root_calls_hit_although_the_seconds_left_differ(tmp_path: Path) -> None:
    """The root model is shown the seconds left every turn (the real prompt, not a copy of its wording)."""
    from recursa import Budget, LMCalled

    with FakeOpenAIServer(_script) as server:
        first = _rlm(server, tmp_path).run("how many parts?", "some context", budget=Budget(timeout_s=900))
        again = _rlm(server, LMCache(tmp_path)).run("how many parts?", "some context", budget=Budget(timeout_s=600))
        assert server.request_count == 5
    roots = [[e for e in run.trace if isinstance(e, LMCalled) and e.role == "root"] for run in (first, again)]
    assert "900.0 seconds" in roots[0][0].prompt and "600.0 seconds" in roots[1][0].prompt
    assert again.cache_hits == 5 and all(e.cached for e in roots[1])


def test_cache_false_and_a_sampling_client_go_to_the_model(tmp_path: Path) -> None:
    from recursa import RLM

    with FakeOpenAIServer(_script) as server:
        for _ in range(2):
            off = _rlm(server, False).run("how many parts?", "some context")
        assert server.request_count == 10 and off.cache_misses == 0
        sampled = RLM(chat(server), chat(server), cache=tmp_path).run("how many parts?", "some context")
        assert server.request_count == 15 and (sampled.cache_hits, sampled.cache_misses) == (0, 0)


def test_the_default_cache_is_in_recursa_cache_dir_and_recursa_cache_off_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests run with ``RECURSA_CACHE=off`` (tests/conftest.py); a user without it gets the default cache."""
    monkeypatch.setenv("RECURSA_CACHE_DIR", str(tmp_path / "default"))
    with FakeOpenAIServer(_script) as server:
        _rlm(server, None).run("how many parts?", "some context")
        assert server.request_count == 5 and not (tmp_path / "default").exists()
        monkeypatch.delenv("RECURSA_CACHE")
        for _ in range(2):
            _rlm(server, None).run("how many parts?", "some context")
        assert server.request_count == 10 and (tmp_path / "default" / "lm-calls.sqlite3").is_file()


def test_cli_json_reports_hits_and_no_cache_turns_it_off(tmp_path: Path) -> None:
    from recursa.cli import app
    from typer.testing import CliRunner

    (tmp_path / "ctx.txt").write_text("some context")
    runner = CliRunner()
    with FakeOpenAIServer(_script) as server:
        args = ["ask", "how many parts?", "-c", str(tmp_path / "ctx.txt"), "--model", "gpt-5-mini", "--base-url",
                server.base_url, "--api-key", "k", "--json", "--cache", "--cache-dir", str(tmp_path / "cache")]
        outs = [json.loads(runner.invoke(app, args).stdout) for _ in range(2)]
        assert server.request_count == 5
        off = json.loads(runner.invoke(app, [*args, "--no-cache"]).stdout)
        assert server.request_count == 10
    assert outs[0]["cache"]["misses"] == 5 and outs[1]["cache"]["hits"] == 5 and outs[1]["cost_usd"] == 0.0
    assert outs[1]["cache"]["saved_usd"] == outs[0]["cost_usd"] > 0 and off["cache"]["hits"] == 0


def test_cli_follows_recursa_cache_when_recursa_cache_dir_names_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RECURSA_CACHE_DIR`` only moves the default cache: ``RECURSA_CACHE`` still turns it off, or on for all calls."""
    from recursa.cli import app
    from typer.testing import CliRunner

    (tmp_path / "ctx.txt").write_text("some context")
    monkeypatch.setenv("RECURSA_CACHE_DIR", str(tmp_path / "env-cache"))
    runner = CliRunner()
    with FakeOpenAIServer(_script) as server:
        args = ["ask", "how many parts?", "-c", str(tmp_path / "ctx.txt"), "--model", "gpt-5-mini", "--base-url",
                server.base_url, "--api-key", "k", "--json"]
        monkeypatch.setenv("RECURSA_CACHE", "off")
        runner.invoke(app, args)
        assert server.request_count == 5 and not (tmp_path / "env-cache").exists()
        monkeypatch.setenv("RECURSA_CACHE", "all")
        outs = [json.loads(runner.invoke(app, args).stdout) for _ in range(2)]
        assert server.request_count == 10 and outs[1]["cache"]["hits"] == 5
    assert (tmp_path / "env-cache" / "lm-calls.sqlite3").is_file()

"""recursa view: the trace tree, safe embedding, and the page itself in headless Chromium."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from recursa import RLM, Budget, ScriptedLM, TraceFormatError, read_trace
from recursa._trace import Tally
from recursa._view import build_tree, embed_json, render_html, write_html

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
INJECTION = "</script><script>window.pwned = 1</script><!--"


def code(src: str) -> str:
    return f"Next step.\n```repl\n{src}\n```"


def traced_root(messages: list[dict[str, str]]) -> str:
    """Three root iterations (sub-calls, then an rlm_query sub-run, then FINAL); sub-runs answer at once."""
    replies = sum(1 for m in messages if m["role"] == "assistant")
    if messages[1]["content"].startswith("Question: Follow the instructions"):
        return code("FINAL('child says ' + context[:5])") if replies == 0 else "FINAL(x)"
    if replies == 0:
        return code("labels = llm_query_batched([f'label line {i}' for i in range(3)])\n"
                    "print('alphaword', labels)")
    if replies == 1:
        return code(f"print({INJECTION!r})\nr = rlm_query('hello from the parent')\nprint('betaword', r)")
    return "The output shows it.\nFINAL(gammaword is the answer)"


@pytest.fixture
def real_trace(tmp_path: Path) -> Path:
    """A trace written by the real RLM loop and sandbox, driven by scripted models."""
    path = tmp_path / "trace.jsonl"
    sub = ScriptedLM(lambda m: "label for " + m[-1]["content"], model="sub-model")
    rlm = RLM(ScriptedLM(traced_root, model="root-model"), sub, budget=Budget(max_depth=2))
    result = rlm.run("Which word is the answer?", "line one\nline two\n" * 50, trace_path=path)
    assert result.answer == "gammaword is the answer"
    return path


def test_tree_groups_iterations_sub_calls_and_sub_runs(real_trace: Path) -> None:
    tree = build_tree(read_trace(real_trace))
    assert len(tree["runs"]) == 1
    run = tree["runs"][0]
    assert run["finished"]["answer"] == "gammaword is the answer" and run["root_model"] == "root-model"
    assert [it["n"] for it in run["iterations"]] == [1, 2, 3]
    first, second, third = run["iterations"]
    assert len(first["subs"]) == 3 and first["subs"][0]["prompt"] == "label line 0"
    assert "alphaword" in first["code"][0]["output"] and first["batches"] == [{"count": 3, "recursive": False}]
    assert first["tokens"] > 0 and first["seconds"] is not None
    [child] = second["children"]
    assert child["depth"] == 1 and child["parent"] == run["id"]
    assert child["finished"]["answer"] == "child says hello"
    assert not third["code"] and "FINAL(gammaword" in third["roots"][0]["response"]
    assert tree["counts"]["sub_calls"] == 3 and tree["counts"]["runs"] == 2


def test_the_tally_of_a_trace_agrees_with_the_run(tmp_path: Path) -> None:
    """The one tally every display reads: totals over every depth, a sub-run's spending in its parent's step."""
    sub = ScriptedLM(lambda m: "label for " + m[-1]["content"], model="sub-model")
    rlm = RLM(ScriptedLM(traced_root, model="root-model"), sub, budget=Budget(max_depth=2))
    result = rlm.run("Which word is the answer?", "line one\nline two\n" * 50, trace_path=tmp_path / "t.jsonl")
    tally = Tally.of(read_trace(tmp_path / "t.jsonl"))
    assert tally.tokens == result.usage.total_tokens and tally.cost_usd == pytest.approx(result.cost_usd)
    assert tally.iteration == result.iterations == 3 and tally.calls["sub"] == 3 and tally.runs_started == 2
    assert tally.sub_calls == 4 and tally.code_runs >= 3 and tally.cached == 0  # 3 llm_query + 1 rlm_query
    [top] = tally.top
    child = tally.runs[top.steps[1].children[0]]
    assert child.parent_step is top.steps[1] and child.finished is not None
    child_tokens = child.finished.usage["total_tokens"]
    assert top.steps[1].usage.total_tokens >= top.steps[1].root_usage.total_tokens + child_tokens
    assert sum(step.usage.total_tokens for step in top.steps) == result.usage.total_tokens


def test_embedded_json_cannot_close_the_script_element() -> None:
    data = {"text": INJECTION + " & \u2028 <b>"}
    embedded = embed_json(data)
    assert "<" not in embedded and ">" not in embedded and "\u2028" not in embedded
    assert json.loads(embedded) == data


def test_page_is_self_contained(real_trace: Path) -> None:
    page = render_html(read_trace(real_trace))
    assert page.count("</script>") == 2  # the data element and the code element, nothing from the trace
    for outside in ("http://", "https://", "<link", "src=", "@import"):
        assert outside not in page, outside


def test_long_fields_are_cut_with_a_note() -> None:
    events = [{"type": "run_started", "run_id": "r", "question": "q" * 50, "context": {}, "budget": {}},
              {"type": "code_executed", "run_id": "r", "iteration": 1, "code": "x", "output": "y" * 500}]
    tree = build_tree(events, max_field_chars=100)
    output = tree["runs"][0]["iterations"][0]["code"][0]["output"]
    assert output.startswith("y" * 100) and "400 more characters" in output


def test_read_trace_skips_a_cut_line_and_refuses_non_traces(real_trace: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.jsonl"
    cut.write_text(real_trace.read_text() + '{"type": "lm_ca')
    assert len(read_trace(cut)) == len(read_trace(real_trace))
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": 1}\n[1, 2]\n')
    with pytest.raises(TraceFormatError, match="holds no trace events"):
        read_trace(other)


def big_trace(sub_calls: int) -> list[dict]:
    """A synthetic trace with one iteration holding many sub-calls."""
    events: list[dict] = [
        {"type": "run_started", "run_id": "big", "depth": 0, "t": 0.0, "question": "Count everything",
         "context": {"total_chars": 10_000_000, "documents": 1, "preview": "..."},
         "budget": {"max_iterations": 30, "max_sub_calls": 5000}, "root_model": "r", "sub_model": "s"},
        {"type": "iteration_started", "run_id": "big", "depth": 0, "t": 0.1, "iteration": 1, "remaining": {}},
        {"type": "lm_called", "run_id": "big", "depth": 0, "t": 0.2, "role": "root", "model": "r", "iteration": 1,
         "prompt": "go", "response": "```repl\nout = llm_query_batched(chunks)\n```", "input_tokens": 10,
         "output_tokens": 10},
        {"type": "sub_calls_started", "run_id": "big", "depth": 0, "t": 0.3, "iteration": 1, "count": sub_calls},
    ]
    for i in range(sub_calls):
        events.append({"type": "lm_called", "run_id": "big", "depth": 1, "t": 0.4, "role": "sub", "model": "s",
                       "iteration": 1, "prompt": f"chunk {i}: " + "lorem ipsum " * 40,
                       "response": f"answer{i}", "input_tokens": 120, "output_tokens": 3})
    events += [
        {"type": "code_executed", "run_id": "big", "depth": 0, "t": 5.0, "iteration": 1,
         "code": "out = llm_query_batched(chunks)", "output": "done"},
        {"type": "run_finished", "run_id": "big", "depth": 0, "t": 6.0, "answer": "42", "stopped_reason": "final",
         "iterations": 1, "sub_calls": sub_calls, "usage": {"total_tokens": 1}, "cost_usd": 0.0,
         "duration_s": 6.0},
    ]
    return events


# -- in a browser -------------------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install -y chromium; .ci/run does it)",
)


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the viewer test needs playwright (pip install 'recursa[dev]'); only a missing chromium skips it")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, path: Path):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:")
               else route.continue_())  # the page must work offline
    page.goto(path.as_uri())
    return page, errors


@needs_chromium
def test_viewer_in_headless_chromium(browser, real_trace: Path, tmp_path: Path) -> None:
    html_path = tmp_path / "trace.html"
    write_html(real_trace, html_path)
    page, errors = open_page(browser, html_path)

    steps = page.locator("main > .run > .steps > .step")
    assert steps.count() == 3
    assert page.locator(".final-answer").first.inner_text() == "gammaword is the answer"
    assert page.evaluate("window.pwned") is None  # the trace's </script> stayed text

    first = steps.nth(0)
    assert first.locator("pre.code").count() == 0  # collapsed: the body is not built yet
    first.locator(":scope > .head").click()
    assert "llm_query_batched" in first.locator("pre.code").inner_text()
    assert "alphaword" in first.locator("pre.output").inner_text()
    assert first.locator(".sub").count() == 3
    first.locator(".sub .head").first.click()
    assert "label line 0" in first.locator(".sub pre.prompt").inner_text()

    second = steps.nth(1)
    second.locator(":scope > .head").click()
    assert INJECTION in second.locator("pre.output").first.inner_text()
    assert second.locator(".run.child").count() == 1  # the rlm_query sub-run, nested
    assert "child says hello" in second.locator(".run.child .final-answer").inner_text()

    page.fill("#search", "betaword")
    page.wait_for_function("document.getElementById('search-status').textContent.includes('1 of 3')")
    assert [steps.nth(i).is_visible() for i in range(3)] == [False, True, False]
    assert page.locator("mark").first.inner_text().lower() == "betaword"
    page.fill("#search", "")
    page.wait_for_function("document.getElementById('search-status').textContent === ''")
    assert all(steps.nth(i).is_visible() for i in range(3))

    page.click("#expand-all")
    assert "gammaword" in steps.nth(2).locator(".body").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the sticky search bar then sits at the top of the shot
    page.screenshot(path=str(ARTIFACTS / "view.png"), full_page=True)
    assert (ARTIFACTS / "view.png").stat().st_size > 10_000
    assert errors == []


@needs_chromium
def test_viewer_stays_responsive_with_thousands_of_sub_calls(browser, tmp_path: Path) -> None:
    html_path = tmp_path / "big.html"
    html_path.write_text(render_html(big_trace(3_000)))
    started = time.monotonic()
    page, errors = open_page(browser, html_path)
    page.wait_for_selector(".step")
    step = page.locator(".step").first
    step.locator(":scope > .head").click()
    assert step.locator(".sub").count() == 200  # one page of rows, not 3,000
    step.locator("button.more").click()
    assert step.locator(".sub").count() == 400
    page.fill("#search", "answer2999")
    page.wait_for_function("document.getElementById('search-status').textContent.includes('1 of 1')")
    assert step.locator(".sub").count() == 1
    assert time.monotonic() - started < 20
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "view-big.png"))
    assert errors == []

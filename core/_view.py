"""``recursa view``: a trace as one self-contained HTML page (no network, opens offline).

The page shows each run as a tree: root iterations with the model's reply, the code and its output,
the sub-calls made (prompt and reply), notices, sub-runs of ``rlm_query`` nested under the iteration
that started them, tokens, cost and time per step, the budget used and the final answer, plus a
search box that filters steps.

The trace is grouped here (``build_tree``) and embedded as JSON in a ``<script type="application/json">``
element, with ``<``, ``>``, ``&`` and the JavaScript line separators escaped so no text in a trace
(``</script>`` in model output, say) can end the element. The page builds the body of an iteration only
when it is opened, and lists sub-calls in pages of 200, so traces with thousands of sub-calls stay
responsive.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._exceptions import TraceFormatError
from ._text import clip
from ._trace import (
    CodeExecuted,
    Event,
    IterationStarted,
    LMCalled,
    Notice,
    RunTally,
    StepTally,
    SubCallsStarted,
    Tally,
    event_from_dict,
    read_trace,
)

__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_SUB_PROMPT_CHARS",
    "build_tree",
    "embed_json",
    "render_html",
    "write_html",
]

MAX_FIELD_CHARS = 100_000
"""Longer text fields (a huge prompt, say) are cut in the page, saying how much; the JSONL keeps all."""
MAX_SUB_PROMPT_CHARS = 20_000
"""Sub-call prompts are mostly slices of the context and come by the thousand: they are cut shorter."""
TraceEvents = Sequence[Event | Mapping[str, Any]]
"""Events, or their ``to_dict()`` form (read tolerantly: unknown types are left out, missing fields blank)."""
_CUT = "\n[… {cut:,} more characters not shown here; see the JSONL trace]"
_CALL_FIELDS = ("model", "prompt", "response", "input_tokens", "output_tokens", "latency_s", "cost_usd", "error", "t",
                "depth")
_CODE_FIELDS = ("code", "output", "error", "final", "duration_s", "timed_out", "crashed")
_FINISHED_FIELDS = ("answer", "stopped_reason", "iterations", "sub_calls", "usage", "cost_usd", "duration_s", "error",
                    "t")


def build_tree(events: TraceEvents, *, max_field_chars: int = MAX_FIELD_CHARS) -> dict[str, Any]:
    """Group flat events into runs > iterations > (root calls, code, sub-calls, notices, child runs).

    The structure and every number come from a ``Tally``; this adds what the page shows of each event,
    long text cut.
    """
    tally = Tally()
    shown: dict[tuple[str, int], dict[str, Any]] = {}  # (run id, iteration) -> what the page shows of it

    def cut(value: Any, limit: int = max_field_chars) -> Any:
        return clip(value, limit, note=_CUT) if isinstance(value, str) else value

    def picked(event: Event, names: Sequence[str]) -> dict[str, Any]:
        return {name: cut(getattr(event, name)) for name in names}

    for event in _events(events):
        tally.update(event)
        if not hasattr(event, "iteration"):  # a run's start or end: read from the tally below
            continue
        step = shown.setdefault((event.run_id, event.iteration), _no_content())  # type: ignore[attr-defined]
        if isinstance(event, IterationStarted):
            step["remaining"] = event.remaining or {}
        elif isinstance(event, LMCalled) and event.role in ("sub", "verify"):  # verify: the answer check
            call = picked(event, _CALL_FIELDS)
            call["prompt"] = cut(call["prompt"], min(max_field_chars, MAX_SUB_PROMPT_CHARS))
            step["subs"].append(call)
        elif isinstance(event, LMCalled):
            step["roots"].append(picked(event, _CALL_FIELDS))
        elif isinstance(event, CodeExecuted):
            step["code"].append(picked(event, _CODE_FIELDS))
        elif isinstance(event, SubCallsStarted):
            step["batches"].append({"count": event.count, "recursive": event.recursive})
        elif isinstance(event, Notice):
            step["notices"].append(cut(event.message))

    def run_view(run: RunTally) -> dict[str, Any]:
        start = run.started
        return {
            "id": run.run_id, "depth": run.depth, "t": start.t if start else None,
            "question": cut(start.question) if start else "", "context": (start.context if start else None) or {},
            "budget": (start.budget if start else None) or {}, "root_model": start.root_model if start else "",
            "sub_model": start.sub_model if start else "", "sandbox": (start.sandbox if start else None) or [],
            "parent": start.parent_run_id if start else None,
            "iterations": [step_view(run, step) for step in run.steps],
            "finished": picked(run.finished, _FINISHED_FIELDS) if run.finished else None,
        }

    def step_view(run: RunTally, step: StepTally) -> dict[str, Any]:
        content = shown.get((run.run_id, step.iteration)) or _no_content()
        return {"n": step.iteration, "t": step.t, **content,
                "children": [run_view(tally.runs[child]) for child in step.children],
                "tokens": step.usage.total_tokens, "cost_usd": step.cost_usd, "seconds": run.seconds(step)}

    counts = {"events": len(events), "sub_calls": tally.calls["sub"], "code_blocks": tally.code_runs,
              "runs": tally.runs_started}
    return {"runs": [run_view(run) for run in tally.top], "counts": counts}


def _no_content() -> dict[str, Any]:
    return {"remaining": {}, "roots": [], "code": [], "subs": [], "batches": [], "notices": []}


def _events(events: TraceEvents) -> list[Event]:
    """Events as ``Event`` objects; dicts of types this version does not know are left out."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, Event):
            out.append(event)
        else:
            try:
                out.append(event_from_dict(event))
            except TraceFormatError:
                continue
    return out


def embed_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>``, ``&``, U+2028 or U+2029 left raw."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def render_html(events: TraceEvents, *, title: str = "recursa trace",
                max_field_chars: int = MAX_FIELD_CHARS) -> str:
    """The whole page as a string."""
    tree = build_tree(events, max_field_chars=max_field_chars)
    tree["title"] = title
    return (_PAGE.replace("__TITLE__", html.escape(title))
            .replace("__CSS__", _CSS).replace("__JS__", _JS).replace("__DATA__", embed_json(tree)))


def write_html(trace: str | Path, output: str | Path) -> str:
    """Render the trace file into ``output``; returns a short description of what it holds."""
    events = read_trace(trace)
    page = render_html(events, title=f"recursa trace · {Path(trace).name}")
    Path(output).write_text(page, encoding="utf-8")
    tally = Tally.of(events)
    return (f"{tally.runs_started} run(s), {tally.code_runs} code block(s), {tally.calls['sub']} sub-call(s), "
            f"{len(page) / 1e6:.1f} MB")


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>__CSS__</style>
</head>
<body>
<header id="top">
  <h1>__TITLE__</h1>
  <div class="toolbar">
    <input id="search" type="search" placeholder="Search replies, code, output, sub-calls…" autocomplete="off"
           aria-label="Search steps">
    <span id="search-status" aria-live="polite"></span>
    <button id="expand-all" type="button">Expand all</button>
    <button id="collapse-all" type="button">Collapse all</button>
  </div>
</header>
<main id="app"><p class="muted">Loading trace…</p></main>
<noscript><p>This page needs JavaScript to show the trace.</p></noscript>
<script id="trace-data" type="application/json">__DATA__</script>
<script>__JS__</script>
</body>
</html>
"""

_CSS = r"""
:root { --fg:#1d2330; --muted:#6b7280; --line:#e3e6ec; --bg:#f7f8fa; --card:#fff; --accent:#2563eb;
        --ok:#15803d; --warn:#b45309; --bad:#b91c1c; --code:#0f172a; --codebg:#f1f4f9; --mark:#fde68a; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg);
       background:var(--bg); }
header#top { position:sticky; top:0; z-index:5; background:var(--card); border-bottom:1px solid var(--line);
             padding:8px 16px; }
h1 { font-size:15px; margin:0 0 6px; font-weight:600; overflow-wrap:anywhere; }
h2 { font-size:14px; margin:14px 0 6px; }
.toolbar { display:flex; gap:8px; align-items:center; flex-wrap:wrap; }
#search { flex:1 1 260px; max-width:520px; padding:6px 10px; border:1px solid var(--line); border-radius:6px;
          font:inherit; }
button { font:inherit; cursor:pointer; border:1px solid var(--line); background:var(--card); border-radius:6px;
         padding:4px 10px; color:var(--fg); }
button:hover { border-color:var(--accent); }
main { max-width:1200px; margin:0 auto; padding:12px 16px 60px; }
.muted { color:var(--muted); }
.run { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 12px; margin:10px 0; }
.run.child { background:#fbfcfe; margin-left:8px; border-left:3px solid var(--accent); }
.facts { display:grid; grid-template-columns:repeat(auto-fill,minmax(170px,1fr)); gap:6px 16px; margin:8px 0; }
.fact b { display:block; font-size:11px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted);
          font-weight:600; }
.answer { border:1px solid #bfdbfe; background:#eff6ff; border-radius:6px; padding:8px 10px; margin:8px 0;
          white-space:pre-wrap; overflow-wrap:anywhere; }
.answer.bad { border-color:#fecaca; background:#fef2f2; }
.badge { display:inline-block; font-size:11px; padding:1px 7px; border-radius:10px; background:#e5e7eb;
         margin-left:6px; vertical-align:1px; white-space:nowrap; }
.badge.final { background:#dcfce7; color:var(--ok); }
.badge.stop { background:#fef3c7; color:var(--warn); }
.badge.err { background:#fee2e2; color:var(--bad); }
.meter { display:flex; align-items:center; gap:6px; }
.meter .bar { flex:1; height:6px; background:#e5e7eb; border-radius:3px; overflow:hidden; min-width:50px; }
.meter .bar i { display:block; height:100%; background:var(--accent); }
.step { border:1px solid var(--line); border-radius:6px; margin:6px 0; background:var(--card); }
.step > .head, .sub > .head { width:100%; display:flex; gap:10px; align-items:baseline; text-align:left;
        border:0; border-radius:6px; padding:7px 10px; background:transparent; }
.step > .head:hover, .sub > .head:hover { background:#f3f6fb; }
.head .caret { width:12px; color:var(--muted); flex:none; }
.head .label { font-weight:600; flex:none; }
.head .preview { color:var(--muted); overflow:hidden; white-space:nowrap; text-overflow:ellipsis; flex:1;
                 min-width:0; }
.head .stats { color:var(--muted); font-size:12px; flex:none; white-space:nowrap; }
.body { padding:4px 12px 10px 32px; }
.section-title { font-size:11px; text-transform:uppercase; letter-spacing:.05em; color:var(--muted);
                 margin:10px 0 4px; font-weight:600; }
pre { margin:0; padding:8px 10px; background:var(--codebg); border-radius:6px; overflow:auto; max-height:480px;
      white-space:pre-wrap; overflow-wrap:anywhere; font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,
      monospace; color:var(--code); }
pre.code { background:#0f172a; color:#e2e8f0; }
pre.error { background:#fef2f2; color:var(--bad); }
.notice { background:#fffbeb; border:1px solid #fde68a; padding:5px 8px; border-radius:6px; margin:4px 0;
          white-space:pre-wrap; }
.sub { border-top:1px solid var(--line); }
.sub .body { padding-left:30px; }
.subs { border:1px solid var(--line); border-radius:6px; }
mark { background:var(--mark); color:inherit; padding:0; }
.hidden { display:none !important; }
details > summary { cursor:pointer; color:var(--muted); margin:6px 0; }
@media (max-width:640px) { .head .stats { display:none; } .body { padding-left:14px; } }
"""

_JS = r"""
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("trace-data").textContent);
  const PAGE = 200;            // sub-calls rendered per "show more"
  const PREVIEW = 140;         // characters in a collapsed row's preview
  let query = "";
  const steps = [];            // every iteration: {el, it, run, open, body, haystack}

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function fmtInt(n) { return (n || 0).toLocaleString("en-US"); }
  function fmtCost(c) { return "$" + (c || 0).toFixed(c && c < 0.01 ? 5 : 4); }
  function fmtSec(s) { return s === null || s === undefined ? "–" : (s < 10 ? s.toFixed(2) : s.toFixed(1)) + " s"; }
  function oneLine(text, n) {
    const t = String(text || "").replace(/\s+/g, " ").trim();
    return t.length > n ? t.slice(0, n) + "…" : t;
  }
  // Text with the search query highlighted, built from text nodes (never innerHTML).
  function marked(tag, cls, text) {
    const node = el(tag, cls);
    text = String(text === null || text === undefined ? "" : text);
    if (!query) { node.textContent = text; return node; }
    const lower = text.toLowerCase();
    let at = 0, hit;
    while ((hit = lower.indexOf(query, at)) !== -1) {
      if (hit > at) node.appendChild(document.createTextNode(text.slice(at, hit)));
      node.appendChild(el("mark", null, text.slice(hit, hit + query.length)));
      at = hit + query.length;
    }
    if (at < text.length) node.appendChild(document.createTextNode(text.slice(at)));
    return node;
  }
  function section(parent, title, text, cls) {
    if (text === null || text === undefined || text === "") return;
    parent.appendChild(el("div", "section-title", title));
    parent.appendChild(marked("pre", cls || "", text));
  }
  function badge(reason) {
    const cls = reason === "final" ? "final" : (reason === "error" || reason === "cancelled" ? "err" : "stop");
    return el("span", "badge " + cls, reason || "unfinished");
  }
  function fact(parent, name, value) {
    const f = el("div", "fact"); f.appendChild(el("b", null, name));
    if (value instanceof Node) f.appendChild(value); else f.appendChild(el("span", null, value));
    parent.appendChild(f);
  }
  function meter(used, limit, fmt) {
    const wrap = el("div", "meter");
    wrap.appendChild(el("span", null, fmt(used) + (limit ? " / " + fmt(limit) : "")));
    if (limit) {
      const bar = el("span", "bar"), fill = el("i");
      fill.style.width = Math.min(100, 100 * used / limit).toFixed(1) + "%";
      bar.appendChild(fill); wrap.appendChild(bar);
    }
    return wrap;
  }
  function subText(s) { return (s.prompt || "") + "\n" + (s.response || "") + "\n" + (s.error || ""); }
  function haystack(it) {
    if (it._hay === undefined) {
      const parts = [];
      // A root prompt is mostly the previous step's output again, so it is left out of the search.
      it.roots.forEach(r => parts.push(r.response, r.error));
      it.code.forEach(c => parts.push(c.code, c.output, c.error, c.final));
      it.notices.forEach(n => parts.push(n));
      it.subs.forEach(s => parts.push(subText(s)));
      it.children.forEach(ch => { parts.push(ch.question); ch.iterations.forEach(x => parts.push(haystack(x)));
                                  if (ch.finished) parts.push(ch.finished.answer); });
      it._hay = parts.filter(Boolean).join("\n").toLowerCase();
    }
    return it._hay;
  }

  function renderRun(run, container, isChild) {
    const box = el("section", "run" + (isChild ? " child" : ""));
    box.dataset.runId = run.id;
    const fin = run.finished;
    const h = el("h2", null, (isChild ? "Sub-run (depth " + run.depth + ")" : "Run") + " ");
    h.appendChild(badge(fin ? fin.stopped_reason : null));
    box.appendChild(h);
    const q = el("div"); q.appendChild(el("b", null, "Question: ")); q.appendChild(marked("span", null, run.question));
    box.appendChild(q);
    const facts = el("div", "facts");
    const ctx = run.context || {};
    fact(facts, "Models", (run.root_model || "?") + (run.sub_model && run.sub_model !== run.root_model ?
         " → " + run.sub_model : ""));
    if (ctx.total_chars !== undefined)
      fact(facts, "Context", fmtInt(ctx.total_chars) + " chars" + (ctx.documents > 1 ? " in " +
           fmtInt(ctx.documents) + " docs" : ""));
    const b = run.budget || {};
    const used = fin || {};
    const usage = used.usage || {};
    fact(facts, "Iterations", meter(used.iterations || run.iterations.filter(i => i.n > 0).length,
         b.max_iterations, fmtInt));
    fact(facts, "Sub-calls", meter(used.sub_calls || 0, b.max_sub_calls, fmtInt));
    fact(facts, "Tokens", meter(usage.total_tokens || 0, b.max_tokens, fmtInt));
    fact(facts, "Cost", meter(used.cost_usd || 0, b.max_cost_usd, fmtCost));
    fact(facts, "Time", meter(used.duration_s || 0, b.timeout_s, fmtSec));
    if (b.window_chars) fact(facts, "Window", fmtInt(b.window_chars) + " chars (base method)");
    box.appendChild(facts);
    if (ctx.preview) {
      const d = el("details"); d.appendChild(el("summary", null, "Context preview"));
      d.appendChild(el("pre", null, ctx.preview)); box.appendChild(d);
    }
    if (fin) {
      const a = el("div", "answer" + (fin.stopped_reason === "final" ? "" : " bad"));
      a.appendChild(el("b", null, "Answer: "));
      a.appendChild(marked("span", "final-answer", fin.answer === null ? "(none)" : fin.answer));
      if (fin.error) a.appendChild(el("div", null, "Error: " + fin.error));
      box.appendChild(a);
    }
    const list = el("div", "steps");
    run.iterations.forEach(it => list.appendChild(renderStep(it, run, !isChild)));
    box.appendChild(list);
    container.appendChild(box);
  }

  // Top-level steps are registered for search and expand-all; steps of sub-runs live inside their
  // parent's body, which is rebuilt (and filtered) whenever it opens.
  function renderStep(it, run, register) {
    const wrap = el("div", "step");
    wrap.dataset.iteration = it.n;
    const head = el("button", "head");
    head.type = "button";
    head.setAttribute("aria-expanded", "false");
    const caret = el("span", "caret", "▸");
    head.appendChild(caret);
    head.appendChild(el("span", "label", it.n > 0 ? "Iteration " + it.n : "Setup"));
    const reply = it.roots.length ? it.roots[0].response || it.roots[0].error : "";
    head.appendChild(el("span", "preview", oneLine(it.code.length ? it.code[0].code : reply, PREVIEW)));
    const bits = [];
    if (it.code.length) bits.push(it.code.length + " code");
    if (it.subs.length) bits.push(fmtInt(it.subs.length) + " sub-calls");
    if (it.children.length) bits.push(it.children.length + " sub-runs");
    bits.push(fmtInt(it.tokens) + " tok", fmtCost(it.cost_usd), fmtSec(it.seconds));
    head.appendChild(el("span", "stats", bits.join(" · ")));
    wrap.appendChild(head);
    const step = {el: wrap, it: it, run: run, open: false, body: null, head: head, caret: caret};
    if (register) steps.push(step);
    else if (query && !haystack(it).includes(query)) wrap.classList.add("hidden");
    head.addEventListener("click", () => toggle(step));
    return wrap;
  }

  function toggle(step, force) {
    const open = force === undefined ? !step.open : force;
    if (open === step.open) return;
    step.open = open;
    step.caret.textContent = open ? "▾" : "▸";
    step.head.setAttribute("aria-expanded", String(open));
    if (open) { step.body = buildBody(step.it); step.el.appendChild(step.body); }
    else if (step.body) { step.body.remove(); step.body = null; }
  }

  function buildBody(it) {
    const body = el("div", "body");
    it.notices.forEach(n => body.appendChild(marked("div", "notice", n)));
    it.roots.forEach((r, i) => {
      const label = it.roots.length > 1 ? " (" + (i + 1) + ")" : "";
      const meta = fmtInt((r.input_tokens || 0) + (r.output_tokens || 0)) + " tok · " + fmtCost(r.cost_usd) +
                   " · " + fmtSec(r.latency_s) + (r.model ? " · " + r.model : "");
      section(body, "Model reply" + label + " — " + meta, r.response, "reply");
      if (r.error) section(body, "Model error", r.error, "error");
      if (r.prompt) {
        const d = el("details"); d.appendChild(el("summary", null, "Prompt (the newest message the model saw)"));
        d.appendChild(marked("pre", "prompt", r.prompt)); body.appendChild(d);
      }
    });
    it.code.forEach((c, i) => {
      const n = it.code.length > 1 ? " " + (i + 1) : "";
      const flags = [fmtSec(c.duration_s)];
      if (c.timed_out) flags.push("timed out");
      if (c.crashed) flags.push("crashed");
      section(body, "Code" + n + " — " + flags.join(" · "), c.code, "code");
      section(body, "Output" + n, c.output === "" ? "(no output)" : c.output, "output");
      if (c.error) section(body, "Error" + n, c.error, "error");
      if (c.final !== null && c.final !== undefined) section(body, "FINAL" + n, c.final, "final");
    });
    if (it.subs.length) renderSubs(body, it);
    it.children.forEach(ch => renderRun(ch, body, true));
    return body;
  }

  function renderSubs(body, it) {
    const recursive = it.batches.some(b => b.recursive);
    const total = it.subs.length;
    const title = el("div", "section-title", "Sub-calls (" + fmtInt(total) + ")" +
                     (recursive ? " — rlm_query" : ""));
    body.appendChild(title);
    const list = el("div", "subs");
    body.appendChild(list);
    const items = query ? it.subs.map((s, i) => [s, i]).filter(p => subText(p[0]).toLowerCase().includes(query))
                        : it.subs.map((s, i) => [s, i]);
    if (query) title.textContent += " — " + fmtInt(items.length) + " match the search";
    let shown = 0;
    const more = el("button", "more");
    more.type = "button";
    function page() {
      const end = Math.min(items.length, shown + PAGE);
      const frag = document.createDocumentFragment();
      for (; shown < end; shown++) frag.appendChild(renderSub(items[shown][0], items[shown][1]));
      list.appendChild(frag);
      if (shown < items.length) { more.textContent = "Show " + fmtInt(Math.min(PAGE, items.length - shown)) +
                                  " more of " + fmtInt(items.length - shown); list.appendChild(more); }
      else more.remove();
    }
    more.addEventListener("click", page);
    page();
  }

  function renderSub(s, i) {
    const wrap = el("div", "sub");
    const head = el("button", "head");
    head.type = "button";
    const caret = el("span", "caret", "▸");
    head.appendChild(caret);
    head.appendChild(el("span", "label", "#" + (i + 1)));
    head.appendChild(el("span", "preview", oneLine(s.error ? "error: " + s.error : s.response, PREVIEW) + "  ⟵  " +
                        oneLine(s.prompt, 60)));
    head.appendChild(el("span", "stats", fmtInt((s.input_tokens || 0) + (s.output_tokens || 0)) + " tok · " +
                        fmtCost(s.cost_usd) + " · " + fmtSec(s.latency_s)));
    wrap.appendChild(head);
    let body = null;
    head.addEventListener("click", () => {
      if (body) { body.remove(); body = null; caret.textContent = "▸"; return; }
      body = el("div", "body");
      section(body, "Prompt", s.prompt, "prompt");
      section(body, "Reply" + (s.model ? " — " + s.model : ""), s.response, "reply");
      if (s.error) section(body, "Error", s.error, "error");
      wrap.appendChild(body); caret.textContent = "▾";
    });
    return wrap;
  }

  function applySearch() {
    let visible = 0;
    const autoOpen = query && steps.length <= 60;
    steps.forEach(step => {
      const hit = !query || haystack(step.it).includes(query);
      step.el.classList.toggle("hidden", !hit);
      if (hit) visible++;
      const wasOpen = step.open;
      if (wasOpen) toggle(step, false);             // rebuilt below so highlights follow the query
      if (hit && (wasOpen || autoOpen)) toggle(step, true);
    });
    document.getElementById("search-status").textContent =
      query ? visible + " of " + steps.length + " steps match" : "";
  }

  const app = document.getElementById("app");
  app.textContent = "";
  if (!DATA.runs.length) app.appendChild(el("p", "muted", "This trace has no runs."));
  DATA.runs.forEach(run => renderRun(run, app, false));
  const c = DATA.counts;
  app.appendChild(el("p", "muted", fmtInt(c.events) + " events · " + fmtInt(c.runs) + " run(s) · " +
                     fmtInt(c.code_blocks) + " code blocks · " + fmtInt(c.sub_calls) + " sub-calls"));

  let timer = null;
  document.getElementById("search").addEventListener("input", ev => {
    clearTimeout(timer);
    timer = setTimeout(() => { query = ev.target.value.trim().toLowerCase(); applySearch(); }, 120);
  });
  document.getElementById("expand-all").addEventListener("click", () =>
    steps.filter(s => !s.el.classList.contains("hidden")).forEach(s => toggle(s, true)));
  document.getElementById("collapse-all").addEventListener("click", () => steps.forEach(s => toggle(s, false)));
  window.recursaTrace = {steps: steps.length, counts: c};
})();
"""

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

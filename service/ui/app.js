// trace-usage's trace view: plain JavaScript over the public API, no build step.
// Reads: GET /projects, POST /calls/stream_query, /calls/query_stats, /calls/usage, /trace/usage.
"use strict";

const PAGE_SIZE = 20;
const REFRESH_MS = 3000;
const ROW_HEIGHT = 30; // keep in step with --row in style.css
const OVERSCAN = 12;
// the usage endpoints stop at `limit` calls (default 10,000): the sample's evaluation has more
const USAGE_LIMIT = 1000000;
const CALL_COLUMNS = ["id", "trace_id", "parent_id", "op_name", "display_name", "started_at",
  "ended_at", "exception"];
const COSTS = ["prompt_tokens_total_cost", "completion_tokens_total_cost",
  "cache_read_input_tokens_total_cost", "cache_creation_input_tokens_total_cost"];
const MODE_HELP = {
  own: "own: every call adds its stored summary.usage, exactly as Weave's trace server counts.",
  auto: "auto: a parent whose stored usage is just the sum of its children's (the Weave SDK's " +
    "client-side rollup) adds nothing of its own, so tokens are not counted twice.",
};

const $ = (id) => document.getElementById(id);
const state = {
  auth: JSON.parse(sessionStorage.getItem("trace-usage-auth") || "null"),
  project: sessionStorage.getItem("trace-usage-project"),
  mode: sessionStorage.getItem("trace-usage-mode") || "own",
  page: 0,
  trace: null, // the open trace: {id, calls, byId, children, usage, expanded, rows, selected}
  timer: null,
  listing: 0, // the latest traces list asked for: an older answer arriving late is dropped
};

// --- API -------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
  }
}

async function api(path, body, auth = state.auth) {
  const init = {
    method: body === undefined ? "GET" : "POST",
    // X-Requested-With: the server then sends no Basic challenge, which would make the
    // browser open its own sign-in dialog instead of letting the page say what went wrong
    headers: {
      Authorization: "Basic " + btoa(`${auth.user}:${auth.key}`),
      "X-Requested-With": "trace-usage-page",
    },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (!res.ok) {
    let reason = res.statusText;
    try { reason = (await res.json()).reason || reason; } catch (_) { /* not JSON */ }
    throw new ApiError(res.status, reason);
  }
  return res;
}

async function streamQuery(body) {
  const text = await (await api("/calls/stream_query", body)).text();
  return text.split("\n").filter((line) => line).map((line) => JSON.parse(line));
}

// --- numbers ---------------------------------------------------------------------------------

function totals(byModel) {
  let tokens = 0, cost = 0;
  for (const u of Object.values(byModel || {})) {
    tokens += u.total_tokens;
    for (const c of COSTS) cost += u[c] || 0;
  }
  return { tokens, cost };
}

function modelCost(u) {
  return COSTS.reduce((sum, c) => sum + (u[c] || 0), 0);
}

const fmtInt = (n) => n.toLocaleString("en-US");
function fmtCost(x) {
  if (x === 0) return "$0";
  const sign = x < 0 ? "−" : "";
  const a = Math.abs(x);
  return sign + "$" + (a < 0.0001 ? a.toExponential(2) : a.toFixed(a < 1 ? 4 : 2));
}
function fmtDuration(call) {
  const ms = call.summary?.weave?.latency_ms;
  if (ms === undefined || ms === null) return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}
const fmtTime = (iso) => new Date(iso).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "medium" });
const callName = (c) => c.summary?.weave?.display_name || c.summary?.weave?.trace_name || c.op_name;
const statusOf = (c) => c.summary?.weave?.status || (c.ended_at ? "success" : "running");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-") || k === "title" || k === "style") node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) node.append(child);
  return node;
}

function statusBadge(status) {
  return el("span", { class: `status ${status}`, text: status.replace("_", " "), "data-status": status });
}

// --- views -----------------------------------------------------------------------------------

function show(view) {
  for (const id of ["signin", "traces", "trace"]) $(id).hidden = id !== view;
  $("nav").hidden = view === "signin";
  $("mode-help").hidden = view === "signin";
  $("error").hidden = true;
}

function showError(err) {
  if (err instanceof ApiError && err.status === 401) {
    signOut("Your key is no longer accepted: sign in again.");
    return;
  }
  $("error").textContent = `Error: ${err.message}`;
  $("error").hidden = false;
}

function signOut(message) {
  sessionStorage.removeItem("trace-usage-auth");
  state.auth = null;
  stopRefresh();
  show("signin");
  $("signin-error").textContent = message || "";
  $("signin-error").hidden = !message;
}

async function signIn(event) {
  event.preventDefault();
  const form = event.target;
  const auth = { user: form.user.value.trim(), key: form.key.value.trim() };
  $("signin-error").hidden = true;
  try {
    const { projects } = await (await api("/projects", undefined, auth)).json();
    state.auth = auth;
    sessionStorage.setItem("trace-usage-auth", JSON.stringify(auth));
    form.key.value = "";
    setProjects(projects);
    route();
  } catch (err) {
    $("signin-error").textContent = err.status === 401
      ? "Sign-in failed: that user name and API key do not match a key of this server."
      : `Sign-in failed: ${err.message}`;
    $("signin-error").hidden = false;
  }
}

function setProjects(projects) {
  const select = $("project");
  select.replaceChildren(...projects.map((p) =>
    el("option", { value: p.project_id, text: `${p.project_id} (${fmtInt(p.calls)} calls)` })));
  if (!projects.some((p) => p.project_id === state.project)) {
    state.project = projects.length ? projects[0].project_id : null;
  }
  if (state.project) select.value = state.project;
  $("who").textContent = state.auth.user;
}

function setMode(mode) {
  state.mode = mode;
  sessionStorage.setItem("trace-usage-mode", mode);
  for (const b of document.querySelectorAll(".mode button")) {
    b.classList.toggle("active", b.dataset.mode === mode);
  }
  $("mode-help").textContent = MODE_HELP[mode];
}

// --- traces list -----------------------------------------------------------------------------

async function loadTraces() {
  show("traces");
  const body = $("traces-body");
  if (!state.project) {
    body.replaceChildren(el("tr", {}, el("td", { colSpan: 7, class: "muted", text: "No readable project has calls yet." })));
    return;
  }
  const listing = ++state.listing;
  const selection = { project_id: state.project, filter: { trace_roots_only: true } };
  const [roots, stats] = await Promise.all([
    streamQuery({
      ...selection,
      sort_by: [{ field: "started_at", direction: "desc" }],
      limit: PAGE_SIZE,
      offset: state.page * PAGE_SIZE,
      columns: CALL_COLUMNS,
    }),
    (await api("/calls/query_stats", selection)).json(),
  ]);
  const usage = roots.length
    ? (await (await api("/calls/usage", {
      project_id: state.project, call_ids: roots.map((r) => r.id), include_costs: true,
      summary_usage: state.mode, limit: USAGE_LIMIT,
    })).json()).call_usage
    : {};
  // another project, page or view was asked for meanwhile: its list is the one to show
  if (listing !== state.listing) return;
  body.replaceChildren(...roots.map((root) => traceRow(root, usage[root.id] || {})));
  if (!roots.length) {
    body.append(el("tr", {}, el("td", { colSpan: 7, class: "muted", text: "No traces on this page." })));
  }
  const pages = Math.max(1, Math.ceil(stats.count / PAGE_SIZE));
  $("traces-count").textContent = `${fmtInt(stats.count)} traces in ${state.project}`;
  $("page-info").textContent = `page ${state.page + 1} of ${pages}`;
  $("prev").disabled = state.page === 0;
  $("next").disabled = state.page + 1 >= pages;
}

function traceRow(root, byModel) {
  const t = totals(byModel);
  const chips = Object.entries(byModel).map(([model, u]) =>
    el("span", { class: "chip", title: `${fmtInt(u.requests)} requests` },
      el("b", { text: model }), ` ${fmtInt(u.total_tokens)} · ${fmtCost(modelCost(u))}`));
  const row = el("tr", { "data-trace-id": root.trace_id, "data-testid": "trace-row" },
    el("td", {}, el("div", { class: "name", text: callName(root) }),
      el("div", { class: "sub", text: root.trace_id })),
    el("td", { class: "when", text: fmtTime(root.started_at) }),
    el("td", { class: "num", text: fmtDuration(root) }),
    el("td", {}, statusBadge(statusOf(root))),
    el("td", { class: "num", text: fmtInt(t.tokens), "data-tokens": t.tokens }),
    el("td", { class: "num", text: fmtCost(t.cost), "data-cost": t.cost }),
    el("td", {}, el("div", { class: "chips" }, ...chips)));
  row.addEventListener("click", () => { location.hash = `#/trace/${encodeURIComponent(root.trace_id)}`; });
  return row;
}

// --- one trace -------------------------------------------------------------------------------

async function fetchTrace(traceId) {
  const filter = { trace_ids: [traceId] };
  const [calls, usage] = await Promise.all([
    streamQuery({ project_id: state.project, filter, columns: CALL_COLUMNS }),
    (await api("/trace/usage", {
      project_id: state.project, filter, include_costs: true, summary_usage: state.mode,
      limit: USAGE_LIMIT,
    })).json(),
  ]);
  const byId = new Map(calls.map((c) => [c.id, c]));
  const children = new Map();
  const roots = [];
  for (const c of calls) { // calls come in start order, so children do too
    if (c.parent_id && byId.has(c.parent_id) && c.parent_id !== c.id) {
      if (!children.has(c.parent_id)) children.set(c.parent_id, []);
      children.get(c.parent_id).push(c.id);
    } else {
      roots.push(c.id);
    }
  }
  return { id: traceId, calls, byId, children, roots, usage: usage.call_usage,
    unfinished: new Set(usage.unfinished_call_ids) };
}

async function openTrace(traceId, keepView) {
  show("trace");
  const prev = state.trace && state.trace.id === traceId ? state.trace : null;
  const trace = await fetchTrace(traceId);
  if (location.hash !== `#/trace/${encodeURIComponent(traceId)}`) return; // navigated away
  trace.expanded = prev && keepView ? prev.expanded : new Set(trace.roots);
  trace.selected = prev && keepView ? prev.selected : trace.roots[0];
  trace.total = trace.roots.reduce((sum, id) => sum + totals(trace.usage[id]).cost, 0);
  state.trace = trace;
  const root = trace.byId.get(trace.roots[0]);
  $("trace-title").textContent = root ? callName(root) : traceId;
  $("trace-meta").textContent = `${traceId} · ${fmtInt(trace.calls.length)} calls` +
    (root ? ` · started ${fmtTime(root.started_at)}` : "");
  $("live").hidden = trace.unfinished.size === 0;
  flatten();
  renderDetail();
  scheduleRefresh();
}

function flatten() {
  // the rows on screen: every call whose ancestors are all expanded, depth-first
  const t = state.trace;
  const rows = [];
  const stack = [...t.roots].reverse().map((id) => [id, 0]);
  while (stack.length) {
    const [id, depth] = stack.pop();
    rows.push([id, depth]);
    const kids = t.children.get(id);
    if (kids && t.expanded.has(id)) {
      for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1]);
    }
  }
  t.rows = rows;
  $("tree-spacer").style.height = `${rows.length * ROW_HEIGHT}px`;
  renderRows();
}

function renderRows() {
  const t = state.trace;
  const tree = $("tree");
  const first = Math.max(0, Math.floor(tree.scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(t.rows.length, Math.ceil((tree.scrollTop + tree.clientHeight) / ROW_HEIGHT) + OVERSCAN);
  const nodes = [];
  for (let i = first; i < last; i++) nodes.push(treeRow(i));
  tree.replaceChildren($("tree-spacer"), ...nodes);
}

function treeRow(index) {
  const t = state.trace;
  const [id, depth] = t.rows[index];
  const call = t.byId.get(id);
  const kids = t.children.get(id);
  const { tokens, cost } = totals(t.usage[id]);
  const share = t.total > 0 ? Math.max(0, Math.min(1, cost / t.total)) : 0;
  const open = t.expanded.has(id);
  const toggle = el("button", {
    type: "button", class: kids ? "toggle" : "toggle leaf", text: open ? "▾" : "▸",
    "data-testid": "toggle", title: open ? "Collapse" : "Expand",
  });
  toggle.addEventListener("click", (e) => { e.stopPropagation(); toggleCall(id); });
  const name = el("div", { class: "tree-name", style: `padding-left:${depth * 16}px` }, toggle,
    el("span", { class: "label", text: callName(call), title: call.op_name }));
  if (kids) name.append(el("span", { class: "kids", text: `${fmtInt(kids.length)}` }));
  if (t.unfinished.has(id)) name.append(el("span", { class: "badge running", text: "running", "data-testid": "unfinished" }));
  else if (call.exception) name.append(el("span", { class: "badge error", text: "error" }));
  const row = el("div", {
    class: id === t.selected ? "tree-row selected" : "tree-row",
    style: `top:${index * ROW_HEIGHT}px`, "data-call-id": id, "data-testid": "call-row",
    "data-expanded": kids ? String(open) : "leaf",
  }, name,
  el("span", { class: "num", text: fmtInt(tokens), "data-tokens": tokens }),
  el("span", { class: "num", text: fmtCost(cost), "data-cost": cost }),
  el("div", { class: "share" }, el("div", { class: "bar" }, el("span", { style: `width:${(share * 100).toFixed(1)}%` })),
    el("span", { class: "num", text: `${(share * 100).toFixed(share < 0.1 ? 1 : 0)}%` })));
  row.addEventListener("click", () => { t.selected = id; renderRows(); renderDetail(); });
  return row;
}

function toggleCall(id) {
  const t = state.trace;
  if (t.expanded.has(id)) t.expanded.delete(id); else t.expanded.add(id);
  flatten();
}

function renderDetail() {
  const t = state.trace;
  const call = t.byId.get(t.selected);
  const box = $("detail");
  if (!call) {
    box.replaceChildren(el("p", { class: "muted", text: "Select a call to see its usage per model." }));
    return;
  }
  const byModel = t.usage[call.id] || {};
  const sum = totals(byModel);
  const facts = el("dl", {},
    el("dt", { text: "Status" }), el("dd", {}, statusBadge(t.unfinished.has(call.id) ? "running" : statusOf(call))),
    el("dt", { text: "Started" }), el("dd", { text: fmtTime(call.started_at) }),
    el("dt", { text: "Duration" }), el("dd", { text: fmtDuration(call) }),
    el("dt", { text: "Tokens" }), el("dd", { text: fmtInt(sum.tokens), "data-testid": "detail-tokens" }),
    el("dt", { text: "Cost" }), el("dd", { text: fmtCost(sum.cost), "data-testid": "detail-cost", "data-cost": sum.cost }));
  const models = Object.entries(byModel).map(([model, u]) => el("div", { class: "model", "data-model": model },
    el("h3", {}, el("span", { text: model }), el("span", { text: fmtCost(modelCost(u)) })),
    el("table", {}, el("tbody", {},
      ...[["Requests", u.requests], ["Prompt tokens", u.prompt_tokens],
        ["Completion tokens", u.completion_tokens], ["Cache read tokens", u.cache_read_input_tokens],
        ["Cache creation tokens", u.cache_creation_input_tokens], ["Total tokens", u.total_tokens]]
        .map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: fmtInt(v) }))),
      ...[["Prompt cost", u.prompt_tokens_total_cost], ["Completion cost", u.completion_tokens_total_cost],
        ["Cache read cost", u.cache_read_input_tokens_total_cost],
        ["Cache creation cost", u.cache_creation_input_tokens_total_cost]]
        .map(([k, v]) => el("tr", { class: "costs" }, el("td", { text: k }), el("td", { text: fmtCost(v || 0) })))))));
  box.replaceChildren(
    el("h2", { text: callName(call) }), el("div", { class: "id", text: call.id }), facts,
    ...(models.length ? models : [el("p", { class: "muted", text: "No LLM usage in this call or below it." })]),
    el("p", { class: "note", text: "Tokens and costs include every descendant of the call." }),
    ...(Object.values(byModel).some((u) => u.prompt_tokens_total_cost < 0)
      ? [el("p", { class: "note", text: "A negative prompt cost is Weave's formula at work: " +
        "(prompt − cache tokens) × price, where the client counted cache reads outside its prompt " +
        "tokens (as Anthropic's do)." })]
      : []));
}

// --- refresh and routing ---------------------------------------------------------------------

function stopRefresh() {
  clearTimeout(state.timer);
  state.timer = null;
}

function scheduleRefresh() {
  stopRefresh();
  const t = state.trace;
  if (!t || t.unfinished.size === 0) return;
  state.timer = setTimeout(() => openTrace(t.id, true).catch((err) => {
    showError(err);
    // a failed poll (the server restarting, a dropped connection) is tried again; signed
    // out (401) or gone to another view, polling stops
    if (state.auth && state.trace === t) scheduleRefresh();
  }), REFRESH_MS);
}

function route() {
  stopRefresh();
  if (!state.auth) { show("signin"); return; }
  const match = location.hash.match(/^#\/trace\/(.+)$/);
  const work = match ? openTrace(decodeURIComponent(match[1]), false) : loadTraces();
  work.catch(showError);
}

async function start() {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => signOut());
  $("prev").addEventListener("click", () => { state.page--; loadTraces().catch(showError); });
  $("next").addEventListener("click", () => { state.page++; loadTraces().catch(showError); });
  $("project").addEventListener("change", (e) => {
    state.project = e.target.value;
    sessionStorage.setItem("trace-usage-project", state.project);
    state.page = 0;
    location.hash = "#/";
    route();
  });
  for (const b of document.querySelectorAll(".mode button")) {
    b.addEventListener("click", () => {
      setMode(b.dataset.mode);
      if (state.trace && location.hash.startsWith("#/trace/")) openTrace(state.trace.id, true).catch(showError);
      else route();
    });
  }
  let pending = false;
  $("tree").addEventListener("scroll", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; if (state.trace) renderRows(); });
  });
  window.addEventListener("hashchange", route);
  setMode(state.mode);
  if (state.auth) {
    try {
      setProjects((await (await api("/projects")).json()).projects);
    } catch (err) {
      signOut(err.status === 401 ? "Your key is no longer accepted: sign in again." : err.message);
      return;
    }
  }
  route();
}

start();

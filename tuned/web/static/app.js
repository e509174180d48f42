// The tuned page: folds the web process's stream (a WebSocket: a snapshot of the view,
// then a delta at most once a second) into tables and uPlot charts.
//
// Drawing follows the browser's frames: a message marks what it changed and asks for
// one animation frame, which draws only those parts (a snapshot at once, so a big
// experiment's first view waits for nothing). A tab in the background gets no frames:
// it keeps folding what arrives and draws when it is shown again.
import { $, clock, dur, el, fmt } from "./format.js";
import { destroyCharts, drawCurves, drawMachine, drawUsage } from "./charts.js";
import { TrialTable } from "./table.js";

// The token comes once in the printed URL's ?token=; it is kept in this origin's
// localStorage (per port: another local user's page on another port cannot read it)
// and sent as a header or WebSocket subprotocol, never as a cookie (which browsers
// would send to every port of 127.0.0.1).
const TOKEN = (() => {
  const given = new URLSearchParams(location.search).get("token");
  if (given) {
    localStorage.setItem("tuned-token", given);
    history.replaceState(null, "", "/" + location.hash);  // out of the address bar
    return given;
  }
  return localStorage.getItem("tuned-token") || "";
})();
const AUTH = { "X-Tuned-Token": TOKEN };
const S = {
  exps: new Map(), machine: [], view: "", trials: new Map(), selected: new Set(),
  sort: { key: "id", dir: 1 }, metric: "", scope: "all", trial: "", trialInfo: null,
};
// What the next frame draws.
const dirty = { overview: true, machine: true, exp: true, rows: true, table: true, curves: true, trial: true };
function all() { for (const k of Object.keys(dirty)) dirty[k] = true; }
// The page's own figures, read by the tests and the benchmark: when (ms from navigation
// start) the script ran, its stream opened, the snapshot came and was first drawn, and
// how long parsing and each part of that first draw took.
const stats = { rendered: 0, renders: 0, scriptAt: performance.now() };
window.tunedStats = stats;
let source = null;

const table = new TrialTable($("trials"), {
  onPick(id, on) { on ? S.selected.add(id) : S.selected.delete(id); dirty.table = dirty.curves = true; schedule(); },
  onOpen(id) { location.hash = `#/exp/${S.view}/${id}`; },
  onSort(key) { S.sort = { key, dir: S.sort.key === key ? -S.sort.dir : 1 }; dirty.table = true; schedule(); },
});

function notice(text, bad) {
  const n = $("notice");
  n.textContent = text; n.hidden = !text; n.className = bad ? "bad" : "";
}

// ---------------------------------------------------------------- the stream

function route() {
  const m = location.hash.match(/^#\/exp\/([\w.-]+)(?:\/([\w.-]+))?$/);
  const view = m ? m[1] : "";
  const trial = m && m[2] ? m[2] : "";
  if (view !== S.view || !source) connect(view);
  if (trial !== S.trial) { S.trial = trial; S.trialInfo = null; if (trial) loadTrial(trial); }
  $("overview").hidden = !!view;
  $("exp-view").hidden = !view;
  $("trial-view").hidden = !trial;
  all();
  schedule();
}

function connect(view) {
  if (source) { const old = source; source = null; old.close(); }
  S.view = view; S.trials = new Map(); S.selected = new Set(); S.metric = ""; S.full = false;
  table.reset();
  destroyCharts();
  const ws = new WebSocket(`ws://${location.host}/api/live` + (view ? "?view=" + encodeURIComponent(view) : ""),
    ["tuned", "tuned-token." + TOKEN]);
  source = ws;
  ws.onopen = () => {
    if (!stats.openAt) stats.openAt = performance.now();
    $("conn").textContent = "live"; $("conn").className = "conn live";
  };
  ws.onmessage = (e) => {
    const t0 = performance.now();
    const msg = JSON.parse(e.data);
    apply(msg);
    if (msg.kind === "experiment") Object.assign(stats, { snapshotAt: t0, snapshotBytes: e.data.length, applyMs: performance.now() - t0 });
  };
  ws.onclose = () => {
    if (source !== ws) return;  // replaced by another view's stream
    $("conn").textContent = "reconnecting…"; $("conn").className = "conn down";
    source = null;
    setTimeout(() => { if (!source) connect(S.view); }, 2000);
  };
}

function apply(msg) {
  if (msg.kind === "overview") {
    S.exps = new Map(msg.experiments.map((e) => [e.id, e]));
    S.machine = msg.machine;
    dirty.overview = dirty.machine = dirty.exp = true;
  } else if (msg.kind === "experiment") {
    S.exps.set(msg.experiment.id, msg.experiment);
    S.trials = new Map();
    for (const t of msg.trials) merge(t);
    S.full = true;
    all();
  } else if (msg.kind === "missing") {
    notice(`No experiment ${msg.id} on this daemon.`, true);
  } else if (msg.kind === "delta") {
    for (const e of msg.experiments || []) { S.exps.set(e.id, e); dirty.overview = true; if (e.id === S.view) dirty.exp = true; }
    for (const m of msg.machine || []) { S.machine.push(m); dirty.machine = true; }
    if (S.machine.length > 900) S.machine.splice(0, S.machine.length - 900);
    for (const t of msg.trials || []) merge(t);
  }
  schedule();
}

function merge(t) {
  const cur = S.trials.get(t.id);
  dirty.exp = dirty.rows = dirty.table = true;
  if (S.trial === t.id) dirty.trial = true;
  if (!cur) {  // a new trial: its series kept as it came (a snapshot's, not copied)
    if (!t.series || t.series.from !== 0) t.series = { it: [], m: {} };
    S.trials.set(t.id, t);
    dirty.curves = true;
    return;
  }
  const series = cur.series;
  if (cur.status !== t.status) dirty.curves = true;  // a cut or error mark
  Object.assign(cur, t);
  cur.series = series;
  if (t.series) {
    const d = t.series;
    series.it.length = d.from;
    series.it.push(...d.it);
    for (const k of new Set([...Object.keys(series.m), ...Object.keys(d.m)])) {
      const col = series.m[k] || (series.m[k] = []);
      col.length = d.from;
      for (let i = 0; i < d.from; i++) if (col[i] === undefined) col[i] = null;
      const add = d.m[k] || new Array(d.it.length).fill(null);
      col.push(...add);
    }
    dirty.curves = true;
  }
  if (t.usage && S.trial === t.id && S.trialInfo) { S.trialInfo.usage.push(t.usage); S.trialDirty = true; }
  if (S.trial === t.id && S.trialInfo && t.status !== S.trialInfo.status) loadTrial(t.id);
}

// ---------------------------------------------------------------- drawing, once a frame

let frame = 0;
function schedule() {
  if (!frame) frame = requestAnimationFrame(draw);
}

function draw() {
  frame = 0;
  const t0 = performance.now();
  if (dirty.machine || dirty.exp) drawHeader();
  if (!S.view) {
    if (dirty.overview) drawOverview();
    if (dirty.machine) drawMachine($("machine-chart"), S.machine);
    dirty.overview = dirty.machine = false;
  } else if (S.exps.has(S.view) && S.full) {
    if (dirty.exp) drawExperiment();
    const t1 = performance.now();
    if (dirty.table) table.draw(S.trials, S.exps.get(S.view), S.sort, S.selected, dirty.rows);
    const t2 = performance.now();
    if (dirty.curves) drawChart();
    if (!stats.rendered) Object.assign(stats, { drawAt: t0, expMs: t1 - t0, tableMs: t2 - t1, curvesMs: performance.now() - t2 });
    if (S.trial && dirty.trial) drawTrial();
    dirty.exp = dirty.rows = dirty.table = dirty.curves = dirty.trial = dirty.machine = false;
    if (!stats.rendered) {
      stats.drawMs = performance.now() - t0;
      // The next frame begins once this one is laid out and painted.
      // uPlot draws in a microtask it queued: this one runs after it.
      queueMicrotask(() => { stats.scriptDoneAt = performance.now(); });
      requestAnimationFrame(() => { stats.rendered = performance.now(); });
    }
  }
  stats.renders++;
}

function drawHeader() {
  $("crumb").textContent = S.view ? `› ${S.view} ${S.exps.get(S.view)?.name || ""}` : "";
  const m = S.machine[S.machine.length - 1];
  if (!m) { $("machine-now").textContent = ""; return; }
  const parts = Object.entries(m.res).map(([k, [u, t]]) =>
    k === "memory" ? `memory ${(u / 2 ** 30).toFixed(1)}/${(t / 2 ** 30).toFixed(1)} GiB` : `${k} ${fmt(u)}/${fmt(t)}`);
  for (const g of m.gpus) parts.push(`gpu ${g[0]} ${Math.round(g[2])}% use, ${(g[3] / 1048576).toFixed(0)} MiB`);
  $("machine-now").textContent = parts.join("  ·  ");
}

function counts(c) {
  return ["RUNNING", "PENDING", "TERMINATED", "ERROR"].filter((s) => c[s]).map((s) => `${c[s]} ${s}`).join(", ");
}
function bestText(e) {
  if (!e.best) return e.metric ? "" : "(no metric given)";
  return `${e.best.trial}  ${e.metric}=${fmt(e.best.value)} (${e.mode})`;
}

// The experiments, newest first; a row's cells are rewritten only where they changed.
const expRows = new Map();
function drawOverview() {
  const body = $("experiments").tBodies[0];
  const ids = [...S.exps.keys()].reverse();
  for (const id of ids) {
    const e = S.exps.get(id);
    let row = expRows.get(id);
    if (!row) {
      const tr = el("tr");
      tr.dataset.exp = id;
      const cells = Array.from({ length: 8 }, () => el("td"));
      const bar = el("span", undefined, "progress"), fill = el("span"), done = document.createTextNode("");
      bar.append(fill);
      cells[3].append(bar, done);
      tr.append(...cells);
      tr.onclick = () => { location.hash = `#/exp/${id}`; };
      row = { tr, cells, fill, done, text: [] };
      expRows.set(id, row);
    }
    const ended = ["finished", "cancelled", "interrupted"].includes(e.state);
    const text = [e.id, e.name, e.state, `${e.done}/${e.total}`, counts(e.counts), bestText(e),
      ended ? "" : dur(e.eta), clock(e.started)];
    text.forEach((s, i) => {
      if (row.text[i] === s) return;
      row.text[i] = s;
      if (i === 3) { row.done.textContent = s; row.fill.style.width = `${e.total ? (100 * e.done) / e.total : 0}%`; }
      else row.cells[i].textContent = s;
    });
  }
  const now = [...body.rows].map((r) => r.dataset.exp);
  if (ids.join() !== now.join()) body.replaceChildren(...ids.map((id) => expRows.get(id).tr));
  $("no-experiments").hidden = ids.length > 0;
}

function drawExperiment() {
  const e = S.exps.get(S.view);
  $("exp-title").textContent = `${e.id}  ${e.name}`;
  const eta = e.state === "running" || e.state === "queued" ? `, ETA ${dur(e.eta)}` : "";
  $("exp-summary").textContent = `${e.state}: ${e.done}/${e.total} done (${counts(e.counts)})${eta} — ${e.path}`;
  $("exp-best").textContent = e.best
    ? `Best trial so far: ${bestText(e)}  ${Object.entries(e.best.config).map(([k, v]) => `${k}=${fmt(v)}`).join(" ")}` : "";
  $("exp-cancel").disabled = ["finished", "cancelled", "interrupted"].includes(e.state);
  const names = metricNames();
  const sel = $("metric");
  const metric = !S.metric || !names.includes(S.metric) ? (e.metric && names.includes(e.metric) ? e.metric : names[0] || "") : S.metric;
  if (metric !== S.metric) { S.metric = metric; dirty.curves = true; }
  if (sel.options.length !== names.length || [...sel.options].some((o, i) => o.value !== names[i])) {
    sel.replaceChildren(...names.map((n) => { const o = el("option", n); o.value = n; return o; }));
  }
  sel.value = S.metric;
}

function metricNames() {
  const names = new Set();
  for (const t of S.trials.values()) for (const k of Object.keys(t.series.m)) names.add(k);
  return [...names];
}

function drawChart() {
  let trials = [...S.trials.values()];
  if (S.scope === "selected") trials = trials.filter((t) => S.selected.has(t.id));
  Object.assign(stats, drawCurves($("curves"), S.view, trials, S.metric, S.scope, S.selected));
}

// ---------------------------------------------------------------- one trial

async function loadTrial(id) {
  const r = await fetch(`/api/trial/${encodeURIComponent(id)}`, { headers: AUTH });
  if (!r.ok) { notice(`No trial ${id}`, true); return; }
  S.trialInfo = await r.json();
  S.trialDirty = true;
  for (const which of ["stdout", "stderr"]) {
    const log = await fetch(`/api/trial/${encodeURIComponent(id)}/${which}`, { headers: AUTH });
    $(`trial-${which}`).textContent = log.ok ? await log.text() : `(${log.status})`;
  }
  dirty.trial = true;
  schedule();
}

function drawTrial() {
  const info = S.trialInfo;
  if (!info) return;
  const live = S.trials.get(info.id) || info;
  $("trial-title").textContent = `${info.id}  ${live.status}`;
  $("trial-info").textContent = `config ${Object.entries(info.config).map(([k, v]) => `${k}=${fmt(v)}`).join(" ")}` +
    `  ·  iter ${live.iter}  ·  ${Object.entries(live.last || {}).map(([k, v]) => `${k}=${fmt(v)}`).join(" ")}`;
  $("trial-cancel").disabled = live.status === "TERMINATED" || live.status === "ERROR";
  const err = $("trial-error");
  const text = [info.error, info.traceback].filter(Boolean).join("\n\n");
  err.hidden = !text; err.textContent = text;
  if (!S.trialDirty) return;
  S.trialDirty = false;
  drawUsage($("usage-chart"), info.usage);
}

async function cancel(target) {
  if (!confirm(`Cancel ${target}? Running trials are terminated, queued ones dropped.`)) return;
  const r = await fetch("/api/cancel", {
    method: "POST", headers: { "Content-Type": "application/json", "X-Tuned-Token": TOKEN },
    body: JSON.stringify({ target }),
  });
  const body = await r.json().catch(() => ({}));
  notice(r.ok ? `cancelled ${target}` : `could not cancel ${target}: ${body.error || r.status}`, !r.ok);
}

$("exp-cancel").onclick = () => cancel(S.view);
$("trial-cancel").onclick = () => cancel(S.trial);
$("trial-close").onclick = () => { location.hash = `#/exp/${S.view}`; };
$("metric").onchange = (e) => { S.metric = e.target.value; dirty.curves = true; schedule(); };
$("scope").onchange = (e) => { S.scope = e.target.value; dirty.curves = true; schedule(); };
window.addEventListener("hashchange", route);
window.addEventListener("resize", () => { destroyCharts(); all(); S.trialDirty = true; schedule(); });
window.addEventListener("scroll", () => { if (S.view) { dirty.table = true; schedule(); } }, { passive: true });
// Without the token the page shows how to get in, and connects nothing.
(async () => {
  const r = await fetch("/api/auth", { headers: AUTH }).catch(() => null);
  if (r && r.status === 403) {
    document.body.replaceChildren(el("p", "tuned web: open the URL with the token that `tuned web` printed"));
    return;
  }
  route();
})();

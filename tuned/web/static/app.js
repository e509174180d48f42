// The tuned page: folds the web process's server-sent events into tables and uPlot charts.
// Text from trials (names, configs, errors, logs) only ever goes in through textContent.
"use strict";

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
const $ = (id) => document.getElementById(id);
const S = {
  exps: new Map(), machine: [], view: "", trials: new Map(), selected: new Set(),
  sort: { key: "id", dir: 1 }, metric: "", scope: "all", trial: "", trialInfo: null,
};
const stats = { rendered: 0, renders: 0 };
window.tunedStats = stats;
let source = null;

// ---------------------------------------------------------------- formatting

function dur(s) {
  if (s === null || s === undefined) return "?";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), x = s % 60;
  return `${h}:${String(m).padStart(2, "0")}:${String(x).padStart(2, "0")}`;
}
function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(5).replace(/\.?0+(e|$)/, "$1");
  return String(v);
}
function clock(ts) { return ts ? new Date(ts * 1000).toLocaleTimeString() : ""; }
function mib(b) { return b / 1048576; }
function color(i) { return `hsl(${(i * 137.508) % 360} 65% 45%)`; }
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
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
  schedule(true);
}

function connect(view) {
  if (source) { const old = source; source = null; old.close(); }
  S.view = view; S.trials = new Map(); S.selected = new Set(); S.metric = ""; S.full = false;
  rowEls.clear(); $("trials").tBodies[0].replaceChildren();
  destroyCharts();
  const ws = new WebSocket(`ws://${location.host}/api/live` + (view ? "?view=" + encodeURIComponent(view) : ""),
    ["tuned", "tuned-token." + TOKEN]);
  source = ws;
  ws.onopen = () => { $("conn").textContent = "live"; $("conn").className = "conn live"; };
  ws.onmessage = (e) => apply(JSON.parse(e.data));
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
  } else if (msg.kind === "experiment") {
    S.exps.set(msg.experiment.id, msg.experiment);
    S.trials = new Map();
    for (const t of msg.trials) merge(t);
    S.full = true;
  } else if (msg.kind === "missing") {
    notice(`No experiment ${msg.id} on this daemon.`, true);
  } else if (msg.kind === "delta") {
    for (const e of msg.experiments || []) S.exps.set(e.id, e);
    for (const m of msg.machine || []) S.machine.push(m);
    if (S.machine.length > 900) S.machine.splice(0, S.machine.length - 900);
    for (const t of msg.trials || []) merge(t);
  }
  schedule(false);
}

function merge(t) {
  let cur = S.trials.get(t.id);
  if (!cur) { cur = { series: { it: [], m: {} } }; S.trials.set(t.id, cur); }
  const series = cur.series;
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
  }
  if (t.usage && S.trial === t.id && S.trialInfo) { S.trialInfo.usage.push(t.usage); S.trialDirty = true; }
  if (S.trial === t.id && S.trialInfo && t.status !== S.trialInfo.status) loadTrial(t.id);
}

// ---------------------------------------------------------------- drawing, at most once a second

let frame = 0, lastDraw = 0, later = 0;
function schedule(now) {
  if (frame) return;
  const wait = now ? 0 : Math.max(0, 1000 - (performance.now() - lastDraw));
  clearTimeout(later);
  later = setTimeout(() => { frame = requestAnimationFrame(draw); }, wait);
}

function draw() {
  frame = 0; lastDraw = performance.now();
  drawHeader();
  if (!S.view) { drawOverview(); drawMachine(); }
  else if (S.exps.has(S.view) && S.full) {
    drawExperiment(); drawTable(); drawCurves(); if (S.trial) drawTrial();
    if (!stats.rendered) stats.rendered = performance.now();
  }
  stats.renders++;
}

function drawHeader() {
  const crumb = $("crumb");
  crumb.textContent = S.view ? `› ${S.view} ${S.exps.get(S.view)?.name || ""}` : "";
  const m = S.machine[S.machine.length - 1];
  if (!m) { $("machine-now").textContent = ""; return; }
  const parts = Object.entries(m.res).map(([k, [u, t]]) =>
    k === "memory" ? `memory ${(u / 2 ** 30).toFixed(1)}/${(t / 2 ** 30).toFixed(1)} GiB` : `${k} ${fmt(u)}/${fmt(t)}`);
  for (const g of m.gpus) parts.push(`gpu ${g[0]} ${Math.round(g[2])}% use, ${mib(g[3]).toFixed(0)} MiB`);
  $("machine-now").textContent = parts.join("  ·  ");
}

function progress(e) {
  const wrap = el("td");
  const bar = el("span", undefined, "progress");
  const fill = el("span");
  fill.style.width = `${e.total ? (100 * e.done) / e.total : 0}%`;
  bar.append(fill);
  wrap.append(bar, `${e.done}/${e.total}`);
  return wrap;
}
function counts(c) {
  return ["RUNNING", "PENDING", "TERMINATED", "ERROR"].filter((s) => c[s]).map((s) => `${c[s]} ${s}`).join(", ");
}
function bestText(e) {
  if (!e.best) return e.metric ? "" : "(no metric given)";
  return `${e.best.trial}  ${e.metric}=${fmt(e.best.value)} (${e.mode})`;
}

function drawOverview() {
  const body = $("experiments").tBodies[0];
  const rows = [...S.exps.values()].reverse().map((e) => {
    const tr = el("tr");
    tr.dataset.exp = e.id;
    tr.append(el("td", e.id), el("td", e.name), el("td", e.state), progress(e), el("td", counts(e.counts)),
      el("td", bestText(e)), el("td", ["finished", "cancelled", "interrupted"].includes(e.state) ? "" : dur(e.eta)),
      el("td", clock(e.started)));
    tr.onclick = () => { location.hash = `#/exp/${e.id}`; };
    return tr;
  });
  body.replaceChildren(...rows);
  $("no-experiments").hidden = rows.length > 0;
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
  if (!S.metric || !names.includes(S.metric)) S.metric = e.metric && names.includes(e.metric) ? e.metric : names[0] || "";
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

// ---------------------------------------------------------------- the trial table

const rowEls = new Map();
let columns = [];
function tableColumns() {
  const keys = new Set(), metrics = new Set();
  for (const t of S.trials.values()) {
    for (const k of Object.keys(t.config || {})) keys.add(k);
    for (const k of Object.keys(t.last || {})) metrics.add(k);
  }
  const e = S.exps.get(S.view);
  const cols = [["pick", "", null], ["id", "trial", (t) => t.id], ["status", "status", (t) => t.status],
    ["iter", "iter", (t) => t.iter]];
  for (const k of keys) cols.push([`c:${k}`, k, (t) => t.config[k]]);
  for (const k of metrics) cols.push([`m:${k}`, k, (t) => t.last[k]]);
  if (e && e.metric) cols.push(["best", `best ${e.metric} (${e.mode})`, (t) => t.best]);
  return cols;
}

function drawTable() {
  const cols = tableColumns();
  const table = $("trials");
  if (cols.map((c) => c[0]).join() !== columns.map((c) => c[0]).join()) {
    columns = cols;
    const head = table.tHead.rows[0];
    head.replaceChildren(...cols.map(([key, label]) => {
      const th = el("th", label);
      if (key !== "pick") {
        th.dataset.sort = key;
        th.onclick = () => { S.sort = { key, dir: S.sort.key === key ? -S.sort.dir : 1 }; schedule(true); };
      }
      return th;
    }));
    rowEls.clear();
    table.tBodies[0].replaceChildren();
  }
  for (const th of table.tHead.rows[0].cells) {
    th.classList.toggle("sorted", th.dataset.sort === S.sort.key);
    th.classList.toggle("up", th.dataset.sort === S.sort.key && S.sort.dir < 0);
  }
  for (const t of S.trials.values()) updateRow(t);
  const col = columns.find((c) => c[0] === S.sort.key) || columns[1];
  const get = col[2];
  const ids = [...S.trials.values()].sort((a, b) => compare(get(a), get(b)) * S.sort.dir || compare(a.id, b.id)).map((t) => t.id);
  const body = table.tBodies[0];
  const now = [...body.rows].map((r) => r.dataset.trial);
  if (ids.join() !== now.join()) body.replaceChildren(...ids.map((id) => rowEls.get(id).tr));
}

function compare(a, b) {
  const none = (v) => v === null || v === undefined || v === "";
  if (none(a) || none(b)) return none(a) - none(b);
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

function updateRow(t) {
  let row = rowEls.get(t.id);
  if (!row) {
    const tr = el("tr");
    tr.dataset.trial = t.id;
    const cells = columns.map(([key]) => {
      const td = el("td");
      if (key === "pick") {
        const box = el("input"); box.type = "checkbox";
        box.onclick = (ev) => { ev.stopPropagation(); box.checked ? S.selected.add(t.id) : S.selected.delete(t.id); tr.classList.toggle("picked", box.checked); curvesShape = ""; schedule(true); };
        td.append(box);
      }
      tr.append(td);
      return td;
    });
    tr.onclick = () => { location.hash = `#/exp/${S.view}/${t.id}`; };
    row = { tr, cells, text: [] };
    rowEls.set(t.id, row);
  }
  columns.forEach(([key, , get], i) => {
    if (!get) return;
    const text = fmt(get(t));
    if (row.text[i] !== text) {
      row.text[i] = text; row.cells[i].textContent = text;
      if (key === "status") row.cells[i].className = `st-${t.status}`;
      else if (typeof get(t) === "number") row.cells[i].className = "num";
    }
  });
}

// ---------------------------------------------------------------- charts (uPlot)

const charts = {};
let curvesShape = "";
function destroyCharts() {
  for (const k of Object.keys(charts)) { charts[k].destroy(); delete charts[k]; }
  curvesShape = "";
}
function width(node) { return Math.max(node.clientWidth - 2, 300); }

function cutMarks(u) {
  const ctx = u.ctx;
  const marks = u.tunedMarks || [];
  ctx.save();
  ctx.lineWidth = 2 * devicePixelRatio;
  for (const [si, xi, kind] of marks) {
    const s = u.series[si];
    if (!s.show) continue;
    const x = u.valToPos(u.data[0][xi], "x", true), y = u.valToPos(u.data[si][xi], "y", true);
    const r = 4 * devicePixelRatio;
    ctx.strokeStyle = kind === "error" ? "#c53030" : s._stroke || "#333";
    ctx.beginPath();
    if (kind === "error") ctx.arc(x, y, r, 0, 2 * Math.PI);
    else { ctx.moveTo(x - r, y - r); ctx.lineTo(x + r, y + r); ctx.moveTo(x + r, y - r); ctx.lineTo(x - r, y + r); }
    ctx.stroke();
  }
  ctx.restore();
}

function drawCurves() {
  const node = $("curves");
  const metric = S.metric;
  let trials = [...S.trials.values()];
  if (S.scope === "selected") trials = trials.filter((t) => S.selected.has(t.id));
  trials = trials.filter((t) => t.series.m[metric] && t.series.m[metric].some((v) => v !== null));
  // x: every iteration any shown trial reported
  const xs = new Set();
  let longest = 0;
  for (const t of trials) for (const it of t.series.it) { xs.add(it); if (it > longest) longest = it; }
  const x = [...xs].sort((a, b) => a - b);
  const at = new Map(x.map((v, i) => [v, i]));
  const data = [x];
  const marks = [];
  trials.forEach((t, i) => {
    const y = new Array(x.length).fill(null);
    const col = t.series.m[metric];
    let lastI = -1;
    t.series.it.forEach((it, j) => { if (col[j] !== null && col[j] !== undefined) { y[at.get(it)] = col[j]; lastI = at.get(it); } });
    data.push(y);
    const ended = t.status === "TERMINATED" || t.status === "ERROR";
    if (lastI >= 0 && t.status === "ERROR") marks.push([i + 1, lastI, "error"]);
    else if (lastI >= 0 && ended && x[lastI] < longest) marks.push([i + 1, lastI, "cut"]);
  });
  stats.curvePoints = data.slice(1).reduce((n, y) => n + y.filter((v) => v !== null).length, 0);
  stats.curveSeries = trials.length;
  stats.marks = marks.length;
  const shape = `${S.view}|${metric}|${S.scope}|${trials.map((t) => t.id).join()}|${[...S.selected].join()}`;
  if (shape !== curvesShape || !charts.curves) {
    if (charts.curves) charts.curves.destroy();
    const pick = S.selected.size > 0 && S.scope === "all";
    const opts = {
      width: width(node), height: 320, legend: { show: false },
      cursor: { points: { show: false }, focus: { prox: 16 } }, focus: { alpha: 0.3 },
      scales: { x: { time: false } },
      axes: [{ label: "training_iteration" }, { label: metric, size: 60 }],
      series: [{}, ...trials.map((t, i) => ({
        label: t.id, stroke: color(i), points: { show: false }, spanGaps: true,
        width: pick ? (S.selected.has(t.id) ? 2.5 : 0.6) : trials.length > 200 ? 0.8 : 1.5,
      }))],
      hooks: { draw: [cutMarks] },
    };
    node.replaceChildren();
    charts.curves = new uPlot(opts, data, node);
    curvesShape = shape;
  } else {
    charts.curves.setData(data);
  }
  charts.curves.tunedMarks = marks;
  charts.curves.redraw(false, false);
}

function timeChart(key, node, series, data, scales) {
  const shape = series.map((s) => s.label).join();
  if (!charts[key] || charts[key].tunedShape !== shape) {
    if (charts[key]) charts[key].destroy();
    node.replaceChildren();
    charts[key] = new uPlot({
      width: width(node), height: key === "machine" ? 220 : 180, series: [{}, ...series],
      scales: scales || {}, cursor: { points: { show: false } },
      axes: [{}, { label: series[0].scale === "mib" ? "MiB" : "%", size: 50 },
        ...(scales && scales.mib && series[0].scale !== "mib" ? [{ scale: "mib", side: 1, label: "MiB", size: 60, grid: { show: false } }] : [])],
    }, data, node);
    charts[key].tunedShape = shape;
  } else charts[key].setData(data);
}

function drawMachine() {
  const pts = S.machine;
  if (!pts.length) return;
  const last = pts[pts.length - 1];
  const series = [], cols = [];
  const pct = (u, t) => (t ? (100 * u) / t : null);
  for (const k of Object.keys(last.res)) {
    series.push({ label: `${k} allocated %`, stroke: color(series.length), scale: "%" });
    cols.push(pts.map((p) => (p.res[k] ? pct(p.res[k][0], p.res[k][1]) : null)));
  }
  last.gpus.forEach((g, gi) => {
    const find = (p) => p.gpus.find((q) => q[0] === g[0]);
    series.push({ label: `gpu ${g[0]} use %`, stroke: color(series.length), scale: "%", width: 2 });
    cols.push(pts.map((p) => find(p)?.[2] ?? null));
    series.push({ label: `gpu ${g[0]} memory %`, stroke: color(series.length), scale: "%", dash: [4, 3] });
    cols.push(pts.map((p) => { const q = find(p); return q ? pct(q[3], q[4]) : null; }));
  });
  timeChart("machine", $("machine-chart"), series, [pts.map((p) => p.ts), ...cols], { "%": { range: [0, 100] } });
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
  schedule(true);
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
  const u = info.usage;
  timeChart("usage", $("usage-chart"), [
    { label: "CPU %", stroke: color(0), scale: "%" },
    { label: "RSS MiB", stroke: color(1), scale: "mib" },
    { label: "GPU memory MiB", stroke: color(2), scale: "mib" },
  ], [u.map((p) => p[0]), u.map((p) => p[1]), u.map((p) => mib(p[2])), u.map((p) => mib(p[3]))], { "%": {}, mib: {} });
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
$("metric").onchange = (e) => { S.metric = e.target.value; schedule(true); };
$("scope").onchange = (e) => { S.scope = e.target.value; schedule(true); };
window.addEventListener("hashchange", route);
window.addEventListener("resize", () => { destroyChartsOnly(); schedule(true); });
function destroyChartsOnly() { for (const k of Object.keys(charts)) { charts[k].destroy(); delete charts[k]; } curvesShape = ""; }
// Without the token the page shows how to get in, and connects nothing.
(async () => {
  const r = await fetch("/api/auth", { headers: AUTH }).catch(() => null);
  if (r && r.status === 403) {
    document.body.replaceChildren(el("p", "tuned web: open the URL with the token that `tuned web` printed"));
    return;
  }
  route();
})();

// The page's charts, all uPlot (vendored: uPlot.iife.min.js): learning curves, the
// machine's allocation and GPU use, one trial's CPU, RSS and GPU memory. A chart is
// built again only when its series change (another metric, trial set or selection);
// otherwise new points go in with setData.
import { color, mib } from "./format.js";

const charts = {};
let curvesShape = "";

export function destroyCharts() {
  for (const k of Object.keys(charts)) { charts[k].destroy(); delete charts[k]; }
  curvesShape = "";
}

function width(node) { return Math.max(node.clientWidth - 2, 300); }

// × where a trial ended before the longest one (stopped early or cancelled), ● an error.
function cutMarks(u) {
  const ctx = u.ctx;
  ctx.save();
  ctx.lineWidth = 2 * devicePixelRatio;
  for (const [si, xi, kind] of u.tunedMarks || []) {
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

// A learning curve's path: uPlot's own linear builder (a few helper calls per point, to
// thin points per pixel) took half of a 1,000-trial chart's first draw, more than the
// strokes; with a hundred points a trial there is nothing to thin. This one maps each
// point through the linear scales at once, rounded to whole pixels as uPlot's are; nulls
// are spanned (spanGaps). uPlot clips to the plot area and strokes it as usual.
function straightLines(u, si, i0, i1) {
  const xs = u.data[0], ys = u.data[si], sx = u.scales.x, sy = u.scales.y, box = u.bbox;
  const kx = sx.max > sx.min ? box.width / (sx.max - sx.min) : 0;
  const ky = sy.max > sy.min ? box.height / (sy.max - sy.min) : 0;
  const bottom = box.top + box.height;
  const path = new Path2D();
  let started = false;
  for (let i = i0; i <= i1; i++) {
    const y = ys[i];
    if (y === null || y === undefined) continue;
    const px = Math.round(box.left + (xs[i] - sx.min) * kx), py = Math.round(bottom - (y - sy.min) * ky);
    if (started) path.lineTo(px, py); else { path.moveTo(px, py); started = true; }
  }
  return { stroke: path, fill: null, clip: null, band: null, gaps: null, flags: 0 };
}

// trials: the trials to draw (each with series {it, m}); returns what the page reports.
export function drawCurves(node, view, trials, metric, scope, selected) {
  trials = trials.filter((t) => t.series.m[metric] && t.series.m[metric].some((v) => v !== null));
  // x: every iteration any shown trial reported
  const xs = new Set();
  let longest = 0;
  for (const t of trials) for (const it of t.series.it) { xs.add(it); if (it > longest) longest = it; }
  // A trial's iterations rise (a retry's repeats are cut), so one with as many as the
  // union has exactly these.
  const x = [...xs].sort((a, b) => a - b);
  const at = new Map(x.map((v, i) => [v, i]));
  const data = [x];
  const marks = [];
  let points = 0;
  trials.forEach((t, i) => {
    const col = t.series.m[metric];
    const its = t.series.it;
    let y = col, lastI = -1;
    if (its.length === x.length) {  // it reported every iteration shown: its column as is
      for (let j = col.length - 1; j >= 0 && lastI < 0; j--) if (col[j] !== null) lastI = j;
      for (let j = 0; j < col.length; j++) if (col[j] !== null) points++;
    } else {  // placed at its iterations among the others (a copy: uPlot wants one x)
      y = new Array(x.length).fill(null);
      for (let j = 0; j < its.length; j++) {
        const v = col[j];
        if (v !== null && v !== undefined) { lastI = at.get(its[j]); y[lastI] = v; points++; }
      }
    }
    data.push(y);
    const ended = t.status === "TERMINATED" || t.status === "ERROR";
    if (lastI >= 0 && t.status === "ERROR") marks.push([i + 1, lastI, "error"]);
    else if (lastI >= 0 && ended && x[lastI] < longest) marks.push([i + 1, lastI, "cut"]);
  });
  const shape = `${view}|${metric}|${scope}|${trials.map((t) => t.id).join()}|${[...selected].join()}`;
  if (shape !== curvesShape || !charts.curves) {
    if (charts.curves) charts.curves.destroy();
    const pick = selected.size > 0 && scope === "all";
    const opts = {
      width: width(node), height: 320, legend: { show: false },
      cursor: { points: { show: false }, focus: { prox: 16 } }, focus: { alpha: 0.3 },
      scales: { x: { time: false } },
      axes: [{ label: "training_iteration" }, { label: metric, size: 60 }],
      series: [{}, ...trials.map((t, i) => ({
        label: t.id, stroke: color(i), points: { show: false }, spanGaps: true, paths: straightLines,
        width: pick ? (selected.has(t.id) ? 2.5 : 0.6) : trials.length > 200 ? 0.8 : 1.5,
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
  return { curvePoints: points, curveSeries: trials.length, marks: marks.length };
}

export function timeChart(key, node, series, data, scales) {
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

export function drawMachine(node, pts) {
  if (!pts.length) return;
  const last = pts[pts.length - 1];
  const series = [], cols = [];
  const pct = (u, t) => (t ? (100 * u) / t : null);
  for (const k of Object.keys(last.res)) {
    series.push({ label: `${k} allocated %`, stroke: color(series.length), scale: "%" });
    cols.push(pts.map((p) => (p.res[k] ? pct(p.res[k][0], p.res[k][1]) : null)));
  }
  for (const g of last.gpus) {
    const find = (p) => p.gpus.find((q) => q[0] === g[0]);
    series.push({ label: `gpu ${g[0]} use %`, stroke: color(series.length), scale: "%", width: 2 });
    cols.push(pts.map((p) => find(p)?.[2] ?? null));
    series.push({ label: `gpu ${g[0]} memory %`, stroke: color(series.length), scale: "%", dash: [4, 3] });
    cols.push(pts.map((p) => { const q = find(p); return q ? pct(q[3], q[4]) : null; }));
  }
  timeChart("machine", node, series, [pts.map((p) => p.ts), ...cols], { "%": { range: [0, 100] } });
}

export function drawUsage(node, u) {
  timeChart("usage", node, [
    { label: "CPU %", stroke: color(0), scale: "%" },
    { label: "RSS MiB", stroke: color(1), scale: "mib" },
    { label: "GPU memory MiB", stroke: color(2), scale: "mib" },
  ], [u.map((p) => p[0]), u.map((p) => p[1]), u.map((p) => mib(p[2])), u.map((p) => mib(p[3]))], { "%": {}, mib: {} });
}

// The trial table: every trial a row, sortable by any column, but only the rows in and
// near the viewport are in the document. A table of 1,000 rows made the browser measure
// every cell of it (automatic table layout) on each change: half a second here before
// the first paint, and again each second while trials report. The rows in view cost a
// few milliseconds; two spacer rows stand in for the others, so the scrollbar and the
// page's height are those of the whole table. Columns get fixed widths from the longest
// text in each over every trial (not only the rows drawn), so they stay put as the rows
// in view change. Rows already built are kept (their checkboxes too) and their text is
// only rewritten where it changed.
import { compare, el, fmt } from "./format.js";

const OVERSCAN = 8; // rows kept beyond each edge of the viewport
const MIN_ROWS = 50; // rows drawn at least (a small experiment's table is all there)
const MAX_CH = 40; // the widest a column gets, in characters (longer text is cut with …)

export class TrialTable {
  constructor(table, { onPick, onOpen, onSort }) {
    this.table = table;
    this.body = table.tBodies[0];
    this.on = { onPick, onOpen, onSort };
    this.reset();
  }

  reset() {
    this.rows = new Map(); // trial id -> {tr, cells, text, box}
    this.columns = [];
    this.widths = "";
    this.order = [];
    this.shown = "";
    this.rowHeight = 0;
    this.top = el("tr", undefined, "spacer");
    this.bottom = el("tr", undefined, "spacer");
    this.body.replaceChildren();
  }

  // trials: Map id -> trial; changed: whether any trial changed since the last draw
  draw(trials, exp, sort, selected, changed) {
    if (changed || !this.columns.length) this.setColumns(trials, exp, sort);
    this.markSort(sort);
    if (changed || this.sortKey !== `${sort.key}|${sort.dir}` || this.order.length !== trials.size) {
      this.sortKey = `${sort.key}|${sort.dir}`;
      const col = this.columns.find((c) => c[0] === sort.key) || this.columns[1];
      const get = col[2];
      this.order = [...trials.values()]
        .sort((a, b) => compare(get(a), get(b)) * sort.dir || compare(a.id, b.id))
        .map((t) => t.id);
      this.setWidths(trials);
    }
    this.window(trials, selected);
  }

  setWidths(trials) {
    const chars = this.columns.map(([key, label]) => (key === "pick" ? 2 : label.length + 2));
    for (const t of trials.values()) {
      this.columns.forEach(([, , get], i) => {
        if (get) chars[i] = Math.max(chars[i], fmt(get(t)).length);
      });
    }
    const widths = chars.map((n) => `calc(${Math.min(n, MAX_CH) + 1}ch + 16px)`).join();
    if (widths === this.widths) return;
    this.widths = widths;
    const cells = this.table.tHead.rows[0].cells;
    chars.forEach((n, i) => { cells[i].style.width = `calc(${Math.min(n, MAX_CH) + 1}ch + 16px)`; });
  }

  setColumns(trials, exp, sort) {
    const keys = new Set(), metrics = new Set();
    for (const t of trials.values()) {
      for (const k of Object.keys(t.config || {})) keys.add(k);
      for (const k of Object.keys(t.last || {})) metrics.add(k);
    }
    const cols = [["pick", "", null], ["id", "trial", (t) => t.id], ["status", "status", (t) => t.status],
      ["iter", "iter", (t) => t.iter]];
    for (const k of keys) cols.push([`c:${k}`, k, (t) => t.config[k]]);
    for (const k of metrics) cols.push([`m:${k}`, k, (t) => t.last[k]]);
    if (exp && exp.metric) cols.push(["best", `best ${exp.metric} (${exp.mode})`, (t) => t.best]);
    if (cols.map((c) => c[0]).join() === this.columns.map((c) => c[0]).join()) return;
    this.columns = cols;
    this.table.tHead.rows[0].replaceChildren(...cols.map(([key, label]) => {
      const th = el("th", label);
      if (key !== "pick") {
        th.dataset.sort = key;
        th.onclick = () => this.on.onSort(key);
      }
      return th;
    }));
    this.rows.clear();
    this.shown = "";
    this.widths = "";
    this.top.replaceChildren(el("td"));
    this.bottom.replaceChildren(el("td"));
    for (const spacer of [this.top, this.bottom]) spacer.cells[0].colSpan = cols.length;
    this.body.replaceChildren();
  }

  markSort(sort) {
    for (const th of this.table.tHead.rows[0].cells) {
      th.classList.toggle("sorted", th.dataset.sort === sort.key);
      th.classList.toggle("up", th.dataset.sort === sort.key && sort.dir < 0);
    }
  }

  // The rows that the viewport shows, and OVERSCAN more each side.
  window(trials, selected) {
    const n = this.order.length;
    const h = this.rowHeight || 24;
    const top = this.body.getBoundingClientRect().top; // read before anything is written
    const first = Math.max(0, Math.min(n - 1, Math.floor(-top / h) - OVERSCAN));
    const last = Math.min(n, Math.max(first + MIN_ROWS, Math.ceil((innerHeight - top) / h) + OVERSCAN));
    const ids = this.order.slice(first, last);
    for (const id of ids) this.update(trials.get(id), selected);
    const shown = `${first}|${n}|${ids.join()}`;
    if (shown === this.shown) return;
    this.shown = shown;
    this.top.hidden = first === 0;
    this.bottom.hidden = last === n;
    this.body.replaceChildren(this.top, ...ids.map((id) => this.rows.get(id).tr), this.bottom);
    if (!this.rowHeight && ids.length) this.rowHeight = this.rows.get(ids[0]).tr.getBoundingClientRect().height || 24;
    this.top.cells[0].style.height = `${first * this.rowHeight}px`;
    this.bottom.cells[0].style.height = `${(n - last) * this.rowHeight}px`;
  }

  update(t, selected) {
    let row = this.rows.get(t.id);
    if (!row) {
      const tr = el("tr");
      tr.dataset.trial = t.id;
      let box = null;
      const cells = this.columns.map(([key]) => {
        const td = el("td");
        if (key === "pick") {
          box = el("input");
          box.type = "checkbox";
          box.onclick = (ev) => { ev.stopPropagation(); this.on.onPick(t.id, box.checked); };
          td.append(box);
        }
        tr.append(td);
        return td;
      });
      tr.onclick = () => this.on.onOpen(t.id);
      row = { tr, cells, text: [], box };
      this.rows.set(t.id, row);
    }
    const picked = selected.has(t.id);
    if (row.box && row.box.checked !== picked) row.box.checked = picked;
    row.tr.classList.toggle("picked", picked);
    this.columns.forEach(([key, , get], i) => {
      if (!get) return;
      const value = get(t);
      const text = fmt(value);
      if (row.text[i] === text) return;
      row.text[i] = text;
      row.cells[i].textContent = text;
      if (key === "status") row.cells[i].className = `st-${t.status}`;
      else if (typeof value === "number") row.cells[i].className = "num";
    });
  }
}

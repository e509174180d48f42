// Formatting and small DOM helpers shared by the page's modules.
// Text from trials (names, configs, errors, logs) only ever goes in through textContent.

export const $ = (id) => document.getElementById(id);

export function dur(s) {
  if (s === null || s === undefined) return "?";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), x = s % 60;
  return `${h}:${String(m).padStart(2, "0")}:${String(x).padStart(2, "0")}`;
}

export function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(5).replace(/\.?0+(e|$)/, "$1");
  return String(v);
}

export function clock(ts) { return ts ? new Date(ts * 1000).toLocaleTimeString() : ""; }
export function mib(b) { return b / 1048576; }
export function color(i) { return `hsl(${(i * 137.508) % 360} 65% 45%)`; }

export function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// One collator for every sort: String.localeCompare with options builds one per call.
const collator = new Intl.Collator(undefined, { numeric: true });

export function compare(a, b) {
  const none = (v) => v === null || v === undefined || v === "";
  if (none(a) || none(b)) return none(a) - none(b);
  if (typeof a === "number" && typeof b === "number") return a - b;
  return collator.compare(String(a), String(b));
}

// Small DOM and formatting helpers.
import { showError } from "./api.js";

export const $ = (id) => document.getElementById(id);

/** el("td", {class: "x", dataset: {id: 1}, onclick: f}, "text", child) */
export function el(tag, attrs = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "dataset") Object.assign(n.dataset, v);
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else if (k === "text") n.textContent = v;
    else n.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) n.append(c instanceof Node ? c : String(c));
  return n;
}

export function setMeta(dl, pairs) {
  dl.replaceChildren(...pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

export const usd = (v) => (v === null || v === undefined) ? "—" : `$${Number(v).toFixed(Math.abs(v) < 0.01 ? 6 : 4)}`;
export const num = (v, d = 0) => Number(v || 0).toLocaleString("en-US", { maximumFractionDigits: d });
export function clock(s) {
  s = Math.max(0, Number(s) || 0);
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

/** A model's (or endpoint's) pricing object in words. */
export function priceText(p) {
  if (!p) return "";
  const f = (k) => Number(p[k] || 0);
  const parts = [];
  if (p.unit === "second") parts.push(`$${(f("audio") * 60).toFixed(4)} / minute of audio`);
  else if (p.unit === "character") parts.push(`$${(f("prompt") * 1e6).toFixed(2)} / M characters`);
  else if (p.unit === "token") {
    if (f("prompt")) parts.push(`$${(f("prompt") * 1e6).toFixed(2)} / M input tokens`);
    if (f("completion")) parts.push(`$${(f("completion") * 1e6).toFixed(2)} / M output tokens`);
  }
  if (f("request")) parts.push(`$${f("request")} / request`);
  return parts.length ? parts.join(", ") : "free";
}

export function limitsText(l) {
  if (!l) return "—";
  const out = [];
  if (l.max_seconds) out.push(`${num(l.max_seconds)} s`);
  if (l.max_bytes) out.push(`${num(l.max_bytes / 1048576, 1)} MiB`);
  if (l.max_characters) out.push(`${num(l.max_characters)} chars`);
  return out.join(", ") || "—";
}

/** Fill a <select> with models, the built-in local one first by default. */
export function fillModels(select, models, preferred) {
  const sorted = [...models].sort((a, b) => (b.available - a.available) || a.id.localeCompare(b.id));
  select.replaceChildren(...sorted.map((m) => el("option", { value: m.id },
    `${m.id} — ${priceText(m.pricing)}${m.available ? "" : " (unavailable)"}`)));
  if (models.some((m) => m.id === preferred)) select.value = preferred;
}

export function saveBlob(blob, name) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

/** Run a button's action: the button disabled meanwhile, any error shown in words. */
export async function busy(button, fn) {
  button.disabled = true;
  try { return await fn(); } catch (e) { showError(e); } finally { button.disabled = false; }
}

/** Complete `data:` events in an SSE text so far. */
export function sseEvents(text) {
  const out = [];
  for (const block of text.split("\n\n").slice(0, -1)) {
    const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
    if (!data) continue;
    try { out.push(JSON.parse(data)); } catch { /* partial or foreign */ }
  }
  return out;
}

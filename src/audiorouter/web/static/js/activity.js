// Activity: /api/v1/activity as SVG bar charts (per day, per model, per provider), credits and the key's
// limit, and the recent generations with their detail.
import { getJSON, showError } from "./api.js";
import { $, clock, el, num, setMeta, usd } from "./util.js";

let rows = [];
const METRICS = {
  usage: { label: "Spend (USD)", fmt: (v) => usd(v) },
  requests: { label: "Requests", fmt: (v) => num(v) },
  seconds: { label: "Audio seconds", fmt: (v) => num(v, 1) },
  characters: { label: "Characters", fmt: (v) => num(v) },
};

export async function init() {
  $("act-metric").addEventListener("change", draw);
  $("act-refresh").addEventListener("click", () => refresh().catch(showError));
  $("gens-table").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-gen]");
    if (b) showGeneration(b.dataset.gen).catch(showError);
  });
  await refresh();
}

export async function refresh() {
  const [act, credits, key, gens] = await Promise.all([
    getJSON("/api/v1/activity"), getJSON("/api/v1/credits"), getJSON("/api/v1/key"), getJSON("/api/v1/generations?limit=20")]);
  rows = act.data;
  cards(credits.data, key.data);
  draw();
  $("gens-table").tBodies[0].replaceChildren(...gens.data.map((g) => el("tr", {},
    el("td", {}, new Date(g.created_at).toLocaleString()), el("td", {}, g.model),
    el("td", {}, g.api_type === "stt" ? "transcription" : "speech"), el("td", {}, g.provider_name || "—"),
    el("td", { class: g.status === "success" ? "ok" : g.status === "error" ? "bad" : "" }, g.status),
    el("td", {}, usd(g.total_cost)),
    el("td", {}, el("button", { type: "button", dataset: { gen: g.id }, "aria-label": `Details of ${g.id}` }, "Details")))));
}

function cards(c, k) {
  const card = (label, value) => el("div", {}, el("span", { class: "muted" }, label), el("strong", {}, value));
  $("credit-cards").replaceChildren(
    card("Key", k.label),
    card("Total usage", usd(c.total_usage)),
    card("Limit", k.limit == null ? "none" : `${usd(k.limit)}${k.limit_reset ? ` ${k.limit_reset}` : ""}`),
    card("Limit remaining", c.limit_remaining == null ? "unlimited" : usd(c.limit_remaining)),
    card("Today", usd(k.usage_daily)), card("This week", usd(k.usage_weekly)), card("This month", usd(k.usage_monthly)));
}

function sum(by) {
  const metric = $("act-metric").value;
  const m = new Map();
  for (const r of rows) m.set(by(r), (m.get(by(r)) || 0) + Number(r[metric] || 0));
  return [...m.entries()].map(([label, value]) => ({ label, value }));
}

function draw() {
  const metric = $("act-metric").value;
  const days = [];
  const today = new Date();
  for (let i = 29; i >= 0; i--) {
    const d = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i));
    days.push(d.toISOString().slice(0, 10));
  }
  const perDay = new Map(sum((r) => r.date).map((x) => [x.label, x.value]));
  $("chart-day-title").textContent = `${METRICS[metric].label} per day (UTC, last 30 days)`;
  columns($("chart-day"), days.map((d) => ({ label: d, value: perDay.get(d) || 0 })), metric);
  bars($("chart-model"), sum((r) => r.model).sort((a, b) => b.value - a.value), metric);
  bars($("chart-provider"), sum((r) => r.provider_name || "unknown").sort((a, b) => b.value - a.value), metric);
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}
function chartRoot(box, items, metric, w, h) {
  const total = items.reduce((n, x) => n + x.value, 0);
  const f = METRICS[metric].fmt;
  const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "data-metric": metric, "data-total": String(total),
    "aria-label": `${METRICS[metric].label}: total ${f(total)}; ${items.filter((x) => x.value).map((x) => `${x.label} ${f(x.value)}`).join(", ") || "no activity yet"}` });
  box.replaceChildren(root);
  return { root, total, f };
}

/** Vertical bars, one per day. */
function columns(box, items, metric) {
  const W = 600, H = 220, pad = 30, bw = (W - pad) / items.length;
  const { root, total, f } = chartRoot(box, items, metric, W, H);
  const max = Math.max(...items.map((x) => x.value), 0) || 1;
  root.append(svg("line", { class: "axis", x1: pad, y1: H - 20, x2: W, y2: H - 20 }));
  root.append(svg("text", { x: 0, y: 12 }, f(max)), svg("text", { x: 0, y: H - 22 }, "0"));
  items.forEach((x, i) => {
    const bh = (H - 40) * x.value / max;
    const r = svg("rect", { class: "bar", x: pad + i * bw + 1, y: H - 20 - bh, width: Math.max(1, bw - 2), height: bh,
                            "data-label": x.label, "data-value": String(x.value) });
    r.append(svg("title", {}, `${x.label}: ${f(x.value)}`));
    root.append(r);
    if (i % 7 === 0 || i === items.length - 1) root.append(svg("text", { x: pad + i * bw, y: H - 4 }, x.label.slice(5)));
  });
  root.append(svg("text", { x: W - 4, y: 12, "text-anchor": "end" }, `total ${f(total)}`));
}

/** Horizontal bars with labels (per model, per provider). */
function bars(box, items, metric) {
  const W = 600, row = 26, H = Math.max(1, items.length) * row + 8;
  const { root, f } = chartRoot(box, items, metric, W, H);
  if (!items.length) { root.append(svg("text", { x: 4, y: 18 }, "no activity yet")); return; }
  const max = Math.max(...items.map((x) => x.value), 0) || 1;
  items.forEach((x, i) => {
    const y = 4 + i * row, bw = 300 * x.value / max;
    root.append(svg("text", { x: 0, y: y + 16 }, x.label.length > 34 ? `${x.label.slice(0, 33)}…` : x.label));
    const r = svg("rect", { class: "bar2", x: 230, y: y + 3, width: Math.max(1, bw), height: row - 8,
                            "data-label": x.label, "data-value": String(x.value) });
    r.append(svg("title", {}, `${x.label}: ${f(x.value)}`));
    root.append(r, svg("text", { x: 236 + bw, y: y + 16 }, f(x.value)));
  });
}

export async function generationMeta(id) {
  return (await getJSON(`/api/v1/generation?id=${encodeURIComponent(id)}`)).data;
}

async function showGeneration(id) {
  const g = await generationMeta(id);
  $("gen-detail-title").textContent = `Generation ${g.id}`;
  setMeta($("gen-detail-meta"), [
    ["Created", new Date(g.created_at).toLocaleString()], ["Model", g.model], ["Status", g.status],
    ["Provider", g.provider_name ? `${g.provider_name}${g.substitute ? " (local substitute)" : ""}` : ""],
    ["Endpoint", g.endpoint], ["Cost", usd(g.total_cost)], ["Estimated", usd(g.estimated_cost)],
    ["Audio", g.seconds != null ? clock(g.seconds) : ""], ["Characters", g.characters],
    ["Latency", g.latency != null ? `${num(g.latency)} ms` : ""],
    ["Generation time", g.generation_time != null ? `${num(g.generation_time)} ms` : ""],
    ["Attempts", (g.provider_responses || []).map((a) => `${a.provider_name} ${a.status}${a.error ? `: ${a.error}` : ""}`).join("; ")],
    ["Error", g.error ? `${g.error.type}: ${g.error.message}` : ""], ["BYOK", g.is_byok ? "yes" : ""]]);
  $("gen-detail").hidden = false;
  $("gen-detail").focus();
}

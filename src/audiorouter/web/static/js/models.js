// Models: the catalog, each model's endpoints with live health, and quickstart code for this server.
import { getJSON, showError } from "./api.js";
import { $, el, limitsText, num, priceText } from "./util.js";
import { quickstart, LANGUAGES } from "./quickstart.js";

let models = [];
let current = null; // {model, voice, lang}

export async function init() {
  $("models-filter").addEventListener("input", render);
  $("models-table").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-id]");
    if (b) open(b.dataset.id).catch(showError);
  });
  $("qs-tabs").addEventListener("click", (e) => {
    const b = e.target.closest("[data-lang]");
    if (b) selectLang(b.dataset.lang, true);
  });
  $("qs-tabs").addEventListener("keydown", (e) => {
    if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
    const i = LANGUAGES.findIndex((l) => l.id === current.lang);
    const next = LANGUAGES[(i + (e.key === "ArrowRight" ? 1 : LANGUAGES.length - 1)) % LANGUAGES.length];
    selectLang(next.id, true);
  });
  $("qs-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("qs-code").textContent);
      $("qs-copy").textContent = "Copied";
      setTimeout(() => { $("qs-copy").textContent = "Copy"; }, 1500);
    } catch (e) {
      showError(new Error(`could not copy: ${e.message}; select the code and copy it by hand`));
    }
  });
  await refresh();
}

export async function refresh() {
  models = (await getJSON("/api/v1/models")).data;
  render();
}

// transcription and speech models say so in output_modalities; chat models list text (and audio) there
const kindOf = (m) => {
  const out = m.architecture.output_modalities;
  return out.includes("transcription") ? "transcription" : out.includes("speech") ? "speech" : "chat";
};
const kindText = (m) => kindOf(m) === "chat" ? `chat (${m.architecture.modality.replace("->", " → ")})` : kindOf(m);

function render() {
  const q = $("models-filter").value.trim().toLowerCase();
  const rows = models.filter((m) => !q || `${m.id} ${m.name} ${kindText(m)} ${m.top_provider.provider}`.toLowerCase().includes(q));
  $("models-table").tBodies[0].replaceChildren(...rows.map((m) => el("tr", {},
    el("th", { scope: "row" }, el("button", { type: "button", dataset: { id: m.id }, "aria-label": `Details and quickstart for ${m.id}` }, m.id),
       el("div", { class: "muted" }, m.name)),
    el("td", {}, kindText(m)),
    el("td", {}, priceText(m.pricing)),
    el("td", {}, limitsText(m.limits)),
    el("td", {}, m.supported_voices ? `${m.supported_voices.length}: ${m.supported_voices.slice(0, 6).join(", ")}${m.supported_voices.length > 6 ? "…" : ""}` : "—"),
    el("td", { class: m.available ? "ok" : "bad" }, m.available ? "yes" : "no"))));
}

async function open(id) {
  const m = models.find((x) => x.id === id);
  const path = id.split("/").map(encodeURIComponent).join("/");
  const detail = (await getJSON(`/api/v1/models/${path}/endpoints`)).data;
  $("model-title").textContent = `${m.id} — ${m.name}`;
  $("model-desc").textContent = m.description || "";
  $("endpoints-table").tBodies[0].replaceChildren(...detail.endpoints.map((e) => el("tr", {},
    el("td", {}, e.provider_name, e.substitute ? el("div", { class: "muted" }, "local substitute") : null),
    el("td", {}, e.upstream_model || "—"),
    el("td", {}, priceText(e.pricing)),
    el("td", {}, limitsText(e.limits)),
    el("td", { class: e.circuit === "closed" ? "ok" : "bad" }, `${e.circuit}${e.available ? "" : " (unavailable)"}`),
    el("td", {}, e.latency_ewma_ms != null ? `${num(e.latency_ewma_ms)} ms` : "not measured yet"),
    el("td", {}, e.uptime_last_30m != null ? `${num(e.uptime_last_30m * 100, 1)} %` : "—"))));
  let voice = null;
  if (kindOf(m) === "chat") {
    voice = m.architecture.output_modalities.includes("audio") ? (m.supported_voices || ["alloy"])[0] : null;
  } else if (kindOf(m) === "speech") {
    const voices = (await getJSON(`/v1/audio/voices?model=${encodeURIComponent(id)}`)).data;
    voice = (voices.find((v) => v.default) || voices[0] || {}).id || null;
  }
  current = { model: m, voice, lang: current?.lang || "python" };
  $("qs-tabs").replaceChildren(...LANGUAGES.map((l) => el("button", { type: "button", role: "tab", id: `qs-tab-${l.id}`,
    dataset: { lang: l.id }, "aria-controls": "qs-code" }, l.label)));
  selectLang(current.lang, false);
  $("model-detail").hidden = false;
  $("model-detail").focus();
}

function selectLang(lang, focus) {
  current.lang = lang;
  for (const b of $("qs-tabs").children) {
    const on = b.dataset.lang === lang;
    b.setAttribute("aria-selected", String(on));
    b.tabIndex = on ? 0 : -1;
    if (on && focus) b.focus();
  }
  $("qs-code").setAttribute("aria-labelledby", `qs-tab-${lang}`);
  $("qs-code").textContent = quickstart(lang, kindOf(current.model), location.origin, current.model.id, current.voice);
}

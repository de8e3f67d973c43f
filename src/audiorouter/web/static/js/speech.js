// Speech: POST /api/v1/audio/speech; mp3 plays through Media Source Extensions while it still streams,
// other formats play once they have arrived.
import { api, clearError, getJSON, showError } from "./api.js";
import { $, busy, el, fillModels, priceText, saveBlob, setMeta, usd } from "./util.js";

let models = [];
let last = null; // {blob, name}

export async function init() {
  $("tts-model").addEventListener("change", () => loadVoices().catch(showError));
  $("tts-text").addEventListener("input", estimate);
  $("tts-speed").addEventListener("input", () => { $("tts-speed-out").textContent = Number($("tts-speed").value).toFixed(2); });
  $("tts-form").addEventListener("submit", (e) => { e.preventDefault(); busy($("tts-submit"), speak); });
  $("tts-download").addEventListener("click", () => last && saveBlob(last.blob, last.name));
  await refresh();
}

export async function refresh() {
  models = (await getJSON("/api/v1/models?output_modalities=speech")).data;
  const keep = $("tts-model").value;
  fillModels($("tts-model"), models, keep || "local/hibari");
  await loadVoices();
}

async function loadVoices() {
  const id = $("tts-model").value;
  const m = models.find((x) => x.id === id);
  $("tts-price").textContent = m ? `Price: ${priceText(m.pricing)}${m.available ? "" : " · no usable endpoint now"}` : "";
  estimate();
  const voices = (await getJSON(`/v1/audio/voices?model=${encodeURIComponent(id)}`)).data;
  const sel = $("tts-voice");
  sel.replaceChildren(...voices.map((v) => el("option", { value: v.id }, v.alias_of ? `${v.name} (→ ${v.alias_of})` : v.name)));
  const d = voices.find((v) => v.default);
  if (d) sel.value = d.id;
}

function estimate() {
  const n = $("tts-text").value.length;
  const m = models.find((x) => x.id === $("tts-model").value);
  let cost = null;
  if (m) {
    const p = (k) => Number(m.pricing[k] || 0);
    if (m.pricing.unit === "character") cost = n * p("prompt");
    else if (m.pricing.unit === "token") cost = Math.ceil(n / 4) * p("prompt") + Math.ceil(n * 1.5) * p("completion");
    else cost = 0;
    cost += p("request");
  }
  $("tts-count").textContent = `${n.toLocaleString("en-US")} characters · estimated cost ${usd(cost)}`;
}

function appendTo(sb, chunk) {
  return new Promise((resolve, reject) => {
    sb.addEventListener("updateend", resolve, { once: true });
    sb.addEventListener("error", () => reject(new Error("the browser could not play this audio")), { once: true });
    sb.appendBuffer(chunk);
  });
}

async function speak() {
  clearError();
  const fmt = $("tts-format").value;
  const body = { model: $("tts-model").value, input: $("tts-text").value, voice: $("tts-voice").value || undefined,
                 response_format: fmt };
  const speed = Number($("tts-speed").value);
  if (speed !== 1) body.speed = speed;
  const instr = $("tts-instructions").value.trim();
  if (instr) body.instructions = instr;
  const status = $("tts-status"), player = $("tts-audio");
  status.textContent = "synthesizing…";
  const t0 = performance.now();
  const resp = await api("/api/v1/audio/speech", { method: "POST", json: body });
  const first = { t: null };
  const parts = [];
  const type = (resp.headers.get("Content-Type") || `audio/${fmt}`).split(";")[0];
  $("tts-result").hidden = false;
  const streaming = fmt === "mp3" && window.MediaSource && MediaSource.isTypeSupported("audio/mpeg");
  const reader = resp.body.getReader();
  if (streaming) {
    const ms = new MediaSource();
    player.src = URL.createObjectURL(ms);
    await new Promise((r) => ms.addEventListener("sourceopen", r, { once: true }));
    const sb = ms.addSourceBuffer("audio/mpeg");
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      await appendTo(sb, value);
      if (first.t === null) { first.t = performance.now(); player.play().catch(() => {}); status.textContent = "playing while it streams…"; }
    }
    ms.endOfStream();
  } else {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (first.t === null) first.t = performance.now();
      parts.push(value);
    }
    player.src = URL.createObjectURL(new Blob(parts, { type }));
    player.play().catch(() => {});
  }
  const total = (performance.now() - t0) / 1000;
  const bytes = parts.reduce((n, p) => n + p.length, 0);
  last = { blob: new Blob(parts, { type }), name: `speech.${fmt}` };
  status.textContent = "";
  const prov = resp.headers.get("X-Provider");
  setMeta($("tts-meta"), [
    ["Model", resp.headers.get("X-Model") || body.model], ["Voice", body.voice],
    ["Provider", prov ? `${prov}${resp.headers.get("X-Provider-Substitute") ? " (local substitute)" : ""}` : ""],
    ["Characters", resp.headers.get("X-Characters")], ["Cost", usd(Number(resp.headers.get("X-Cost") || 0))],
    ["Generation id", resp.headers.get("X-Generation-Id")],
    ["First audio after", first.t ? `${((first.t - t0) / 1000).toFixed(2)} s` : ""],
    ["Time taken", `${total.toFixed(2)} s`], ["Size", `${(bytes / 1024).toFixed(1)} KiB ${type}`]]);
}

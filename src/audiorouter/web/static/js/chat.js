// Audio chat: POST /api/v1/chat/completions with stream:true, modalities ["text","audio"] and pcm16 answers.
// A question is typed, or recorded from the microphone (recorder.js, as on the Transcribe tab) and sent as an
// input_audio part. The answer's pcm16 pieces play through Web Audio as they arrive; once complete it is kept
// as a WAV in the turn's <audio> player. Earlier turns go back with each request: the user's own parts, and
// each spoken answer by its audio id while the server keeps it (its transcript once it has expired).
import { api, ApiError, clearError, getJSON, messageOf, showError, upload } from "./api.js";
import { $, busy, el, fillModels, priceText, setMeta, sseEvents, usd } from "./util.js";
import { recordButton } from "./recorder.js";

const RATE = 24000; // pcm16: 16-bit little-endian mono at 24 kHz
const QUESTION_STT = "local/whisper-base";

let models = [];
let history = []; // {role: "user", content, label} | {role: "assistant", audioId, expiresAt, transcript}
let pending = null; // a recording not sent yet: {blob, name, seconds}
let player = null;

export async function init() {
  $("chat-model").addEventListener("change", showModel);
  recordButton($("chat-record"), $("chat-rec-time"), (blob, name, seconds) => {
    pending = { blob, name, seconds };
    if ($("chat-send-on-stop").checked) $("chat-form").requestSubmit();
    else $("chat-status").textContent = "recording ready: press Send";
  });
  $("chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    ensurePlayer(); // inside the user's gesture, so the browser lets it play
    busy($("chat-submit"), send);
  });
  $("chat-text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $("chat-form").requestSubmit(); }
  });
  $("chat-new").addEventListener("click", () => {
    history = [];
    player?.stop();
    $("chat-log").replaceChildren();
    $("chat-status").textContent = "new conversation";
    $("chat-text").focus();
  });
  await refresh();
}

export async function refresh() {
  models = (await getJSON("/api/v1/models?input_modalities=audio&output_modalities=audio")).data
    .filter((m) => m.architecture.input_modalities.includes("audio") && m.architecture.output_modalities.includes("audio"));
  const keep = $("chat-model").value;
  fillModels($("chat-model"), models, keep || "local/voice-chat");
  $("chat-none").hidden = models.length > 0;
  showModel();
}

function showModel() {
  const m = models.find((x) => x.id === $("chat-model").value);
  $("chat-price").textContent = m ? `Price: ${priceText(m.pricing)}${m.available ? "" : " · no usable endpoint now"}` : "";
  const voices = m?.supported_voices || [];
  const keep = $("chat-voice").value;
  $("chat-voice").replaceChildren(...voices.map((v) => el("option", { value: v }, v)));
  if (voices.includes(keep)) $("chat-voice").value = keep;
}

/** Plays pcm16 pieces back to back as they arrive (Web Audio), and keeps them for the WAV. */
class PcmPlayer {
  constructor() {
    this.ctx = new AudioContext({ sampleRate: RATE });
    this.sources = new Set();
    this.reset();
  }

  reset() { this.at = 0; this.rest = null; this.chunks = []; this.samples = 0; }

  push(bytes) {
    if (this.rest) { const b = new Uint8Array(this.rest.length + bytes.length); b.set(this.rest); b.set(bytes, this.rest.length); bytes = b; }
    const even = bytes.length - (bytes.length % 2);
    this.rest = even < bytes.length ? bytes.slice(even) : null;
    if (!even) return;
    const pcm = bytes.slice(0, even);
    this.chunks.push(pcm);
    const view = new DataView(pcm.buffer);
    const f = new Float32Array(even / 2);
    for (let i = 0; i < f.length; i++) f[i] = view.getInt16(i * 2, true) / 32768;
    this.samples += f.length;
    const buf = this.ctx.createBuffer(1, f.length, RATE);
    buf.copyToChannel(f, 0);
    const src = this.ctx.createBufferSource();
    src.buffer = buf;
    src.connect(this.ctx.destination);
    src.onended = () => this.sources.delete(src);
    this.sources.add(src);
    this.at = Math.max(this.at, this.ctx.currentTime + 0.05);
    src.start(this.at);
    this.at += buf.duration;
  }

  stop() {
    for (const s of this.sources) { try { s.stop(); } catch { /* not started */ } }
    this.sources.clear();
    this.reset();
  }

  wav() {
    const n = this.samples * 2, b = new ArrayBuffer(44 + n), v = new DataView(b);
    const str = (o, s) => [...s].forEach((c, i) => v.setUint8(o + i, c.charCodeAt(0)));
    str(0, "RIFF"); v.setUint32(4, 36 + n, true); str(8, "WAVEfmt "); v.setUint32(16, 16, true);
    v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, RATE, true); v.setUint32(28, RATE * 2, true);
    v.setUint16(32, 2, true); v.setUint16(34, 16, true); str(36, "data"); v.setUint32(40, n, true);
    let o = 44;
    for (const c of this.chunks) { new Uint8Array(b, o, c.length).set(c); o += c.length; }
    return new Blob([b], { type: "audio/wav" });
  }
}

function ensurePlayer() {
  if (!window.AudioContext) return;
  if (!player) player = new PcmPlayer();
  player.ctx.resume().catch(() => {});
}

const b64bytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const blobBase64 = (blob) => new Promise((resolve, reject) => {
  const r = new FileReader();
  r.onload = () => resolve(String(r.result).split(",", 2)[1] || "");
  r.onerror = () => reject(new Error("could not read the recording"));
  r.readAsDataURL(blob);
});

function turn(role, ...children) {
  const li = el("li", { class: `turn ${role}` }, el("strong", { class: "who" }, role === "user" ? "You" : "Assistant"), ...children);
  $("chat-log").append(li);
  return li;
}

function messages() {
  const soon = Date.now() / 1000 + 10;
  return history.map((h) => h.role === "user" ? { role: "user", content: h.content }
    : h.audioId && h.expiresAt > soon ? { role: "assistant", audio: { id: h.audioId } }
    : { role: "assistant", content: h.transcript });
}

async function send() {
  clearError();
  const text = $("chat-text").value.trim();
  const rec = pending;
  if (!text && !rec) { showError(new Error("type a question or record one first")); $("chat-text").focus(); return; }
  const model = $("chat-model").value;
  const parts = [];
  if (text) parts.push({ type: "text", text });
  if (rec) {
    const fmt = rec.name.split(".").pop();
    parts.push({ type: "input_audio", input_audio: { data: await blobBase64(rec.blob), format: fmt } });
  }
  const content = parts.length === 1 && text ? text : parts;
  const body = { model, stream: true, modalities: ["text", "audio"], audio: { voice: $("chat-voice").value || undefined, format: "pcm16" },
                 messages: [...messages(), { role: "user", content }] };
  // the question's turn: what was typed, and the recording with a player
  const said = el("p", { class: "said" }, text || (rec ? "(spoken question)" : ""));
  const userTurn = turn("user", said, rec ? el("audio", { controls: true, src: URL.createObjectURL(rec.blob), "aria-label": "Your recorded question" }) : null);
  const status = $("chat-status");
  status.textContent = "waiting for the answer…";
  const t0 = performance.now();
  let resp;
  try {
    resp = await api("/api/v1/chat/completions", { method: "POST", json: body });
  } catch (e) {
    userTurn.remove();
    status.textContent = "";
    throw e;
  }
  $("chat-text").value = "";
  pending = null;
  history.push({ role: "user", content });
  const answer = el("p", { class: "said" });
  const audio = el("audio", { controls: true, "aria-label": "The spoken answer" });
  const meta = el("dl", { class: "meta" });
  const aTurn = turn("assistant", answer, audio, meta);
  aTurn.setAttribute("aria-busy", "true");
  player?.stop();
  let audioId = null, expiresAt = null, transcript = "", usage = null, first = null, pieces = 0, failed = null;
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += value.replaceAll("\r\n", "\n");
    const cut = buf.lastIndexOf("\n\n");
    if (cut < 0) continue;
    const events = sseEvents(buf.slice(0, cut + 2));
    buf = buf.slice(cut + 2);
    for (const ev of events) {
      if (ev.error) { failed = ev.error; continue; }
      if (ev.usage) usage = ev.usage;
      const d = ev.choices?.[0]?.delta;
      if (!d) continue;
      if (d.content) transcript += d.content;
      if (d.audio) {
        if (d.audio.id) audioId = d.audio.id;
        if (d.audio.expires_at) expiresAt = d.audio.expires_at;
        if (d.audio.transcript) transcript += d.audio.transcript;
        if (d.audio.data) {
          if (first === null) { first = performance.now(); status.textContent = "playing while it streams…"; }
          pieces += 1;
          player?.push(b64bytes(d.audio.data));
        }
      }
      answer.textContent = transcript;
    }
  }
  aTurn.removeAttribute("aria-busy");
  status.textContent = "";
  if (failed) {
    history.pop();
    throw new ApiError(`Error ${failed.code ?? ""}: ${failed.message || "the answer failed"}`.replace(" :", ":"), Number(failed.code) || 0);
  }
  history.push({ role: "assistant", audioId, expiresAt, transcript });
  if (player?.samples) {
    audio.src = URL.createObjectURL(player.wav());
    aTurn.dataset.streamedPieces = String(pieces);
  } else audio.remove();
  const prov = resp.headers.get("X-Provider");
  const gid = resp.headers.get("X-Generation-Id");
  setMeta(meta, [
    ["Model", resp.headers.get("X-Model") || model],
    ["Provider", prov ? `${prov}${resp.headers.get("X-Provider-Substitute") ? " (local substitute)" : ""}` : ""],
    ["Cost", usage?.cost != null ? usd(usage.cost) : ""],
    ["Tokens", usage ? `${usage.prompt_tokens} in, ${usage.completion_tokens} out` : ""],
    ["Generation id", gid],
    ["First audio after", first ? `${((first - t0) / 1000).toFixed(2)} s` : ""],
    ["Time taken", `${((performance.now() - t0) / 1000).toFixed(2)} s`],
    ["Audio id", audioId ? `${audioId}${expiresAt ? ` (kept until ${new Date(expiresAt * 1000).toLocaleTimeString()})` : ""}` : ""]]);
  if (rec && $("chat-transcribe-question").checked) transcribeQuestion(rec, said, text);
}

/** The words of a recorded question, for its turn (the chat answer does not carry them). */
async function transcribeQuestion(rec, said, text) {
  const form = new FormData();
  form.append("file", rec.blob, rec.name);
  form.append("model", QUESTION_STT);
  form.append("response_format", "json");
  try {
    const r = await upload("/api/v1/audio/transcriptions", form);
    if (r.status >= 400) throw new Error(messageOf(r.status, r.text));
    const words = (JSON.parse(r.text).text || "").trim();
    said.textContent = `${text ? `${text} ` : ""}Spoken: “${words || "no words heard"}”`;
  } catch (e) {
    said.textContent = `${text ? `${text} ` : ""}(spoken question; no transcript: ${e.message})`;
  }
}

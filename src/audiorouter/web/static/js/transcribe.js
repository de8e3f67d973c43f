// Transcribe: a file (picker or drag and drop) or a microphone recording, sent as multipart to
// /api/v1/audio/transcriptions (or /translations); with "stream", the SSE deltas are shown as they arrive.
import { ApiError, getJSON, messageOf, showError, clearError, upload } from "./api.js";
import { $, busy, clock, el, fillModels, priceText, saveBlob, setMeta, sseEvents, usd } from "./util.js";
import { recordButton } from "./recorder.js";
import { generationMeta } from "./activity.js";

let models = [];
let audio = null; // {blob, name}
let last = null; // {text, ext, type}

export async function init() {
  $("stt-model").addEventListener("change", showPrice);
  $("stt-file").addEventListener("change", (e) => e.target.files[0] && choose(e.target.files[0], e.target.files[0].name));
  const drop = $("stt-drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) choose(f, f.name);
  });
  drop.addEventListener("keydown", (e) => {
    if (e.target === drop && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); $("stt-file").click(); }
  });
  recordButton($("stt-record"), $("stt-rec-time"), (blob, name) => choose(blob, name));
  $("stt-form").addEventListener("submit", (e) => { e.preventDefault(); busy($("stt-submit"), run); });
  $("stt-download").addEventListener("click", () => last && saveBlob(new Blob([last.text], { type: last.type }),
    `${(audio?.name || "transcript").replace(/\.[^.]+$/, "")}.${last.ext}`));
  $("stt-segments").addEventListener("click", (e) => {
    const t = e.target.closest("[data-start]");
    if (!t) return;
    const a = $("stt-audio");
    a.currentTime = Number(t.dataset.start);
    a.play().catch(() => {});
  });
  await refresh();
}

export async function refresh() {
  models = (await getJSON("/api/v1/models?output_modalities=transcription")).data;
  const keep = $("stt-model").value;
  fillModels($("stt-model"), models, keep || "local/whisper-base");
  showPrice();
}

function showPrice() {
  const m = models.find((x) => x.id === $("stt-model").value);
  $("stt-price").textContent = m ? `Price: ${priceText(m.pricing)}${m.available ? "" : " · no usable endpoint now"}` : "";
}

function choose(blob, name) {
  audio = { blob, name };
  $("stt-file-name").textContent = `Chosen: ${name} (${(blob.size / 1024).toFixed(0)} KiB)`;
  const a = $("stt-audio");
  if (a.src) URL.revokeObjectURL(a.src);
  a.src = URL.createObjectURL(blob);
}

async function run() {
  clearError();
  if (!audio) { showError(new Error("choose an audio file, drop one, or record first")); $("stt-file").focus(); return; }
  const words = $("stt-words").checked, segs = $("stt-segts").checked;
  let fmt = $("stt-format").value;
  if ((words || segs) && fmt === "json") fmt = "verbose_json";
  const stream = $("stt-stream").checked && (fmt === "json" || fmt === "text");
  const form = new FormData();
  form.append("file", audio.blob, audio.name);
  form.append("model", $("stt-model").value);
  form.append("response_format", fmt);
  const lang = $("stt-language").value.trim(), prompt = $("stt-prompt").value.trim();
  if (lang) form.append("language", lang);
  if (prompt) form.append("prompt", prompt);
  if (fmt === "verbose_json") {
    form.append("timestamp_granularities[]", "segment");
    if (words) form.append("timestamp_granularities[]", "word");
  }
  if (stream) form.append("stream", "true");
  const path = $("stt-translate").checked ? "/api/v1/audio/translations" : "/api/v1/audio/transcriptions";
  const status = $("stt-status"), progress = $("stt-progress"), textBox = $("stt-text");
  $("stt-result").hidden = true;
  $("stt-timeline").hidden = true;
  textBox.textContent = "";
  progress.value = 0;
  status.textContent = "uploading…";
  const t0 = performance.now();
  const r = await upload(path, form, {
    onUpload: (p) => { progress.value = p; status.textContent = p < 1 ? `uploading ${Math.round(p * 100)}%` : "transcribing…"; },
    onText: stream ? (text) => {
      const deltas = sseEvents(text).filter((e) => e.type === "transcript.text.delta").map((e) => e.delta);
      if (deltas.length) {
        $("stt-result").hidden = false;
        textBox.textContent = deltas.join("");
        status.textContent = `transcribing… ${deltas.length} parts so far`;
      }
    } : null,
  });
  const took = (performance.now() - t0) / 1000;
  status.textContent = "";
  if (r.status >= 400) throw new ApiError(messageOf(r.status, r.text), r.status);
  let text = r.text, body = null, ext = fmt === "srt" || fmt === "vtt" ? fmt : fmt === "text" ? "txt" : "json";
  if (stream) {
    const events = sseEvents(r.text + "\n\n");
    const err = events.find((e) => e.type === "error");
    if (err) throw new ApiError(`Error ${err.error?.code ?? ""}: ${err.error?.message ?? "the transcription failed"}`, 0);
    const done = events.find((e) => e.type === "transcript.text.done");
    body = { text: done?.text ?? "", usage: done?.usage };
    text = body.text;
    ext = "txt";
  } else if (fmt === "json" || fmt === "verbose_json") {
    body = JSON.parse(r.text);
    text = body.text;
  }
  last = { text: ext === "json" ? JSON.stringify(body, null, 2) : text, ext,
           type: { srt: "application/x-subrip", vtt: "text/vtt", txt: "text/plain", json: "application/json" }[ext] };
  textBox.textContent = text;
  $("stt-download").textContent = `Download .${ext}`;
  renderTimeline(body);
  const gid = r.header("X-Generation-Id");
  const meta = [["Model", r.header("X-Model") || $("stt-model").value],
                ["Provider", r.header("X-Provider") ? `${r.header("X-Provider")}${r.header("X-Provider-Substitute") ? " (local substitute)" : ""}` : ""],
                ["Duration", body?.usage?.seconds != null ? `${body.usage.seconds} s` : body?.duration ? `${body.duration} s` : ""],
                ["Cost", body?.usage?.cost != null ? usd(body.usage.cost) : ""],
                ["Generation id", gid], ["Time taken", `${took.toFixed(2)} s`]];
  setMeta($("stt-meta"), meta);
  $("stt-result").hidden = false;
  if (gid) fillFromLedger(gid, meta);
}

async function fillFromLedger(gid, meta) {
  // the ledger knows what the response body may not carry (srt/vtt/text): cost, provider, seconds
  try {
    const g = await generationMeta(gid);
    const get = (k) => meta.find((m) => m[0] === k);
    if (!get("Provider")[1] && g.provider) get("Provider")[1] = `${g.provider}${g.substitute ? " (local substitute)" : ""}`;
    if (!get("Duration")[1] && g.seconds != null) get("Duration")[1] = `${Number(g.seconds).toFixed(2)} s`;
    if (!get("Cost")[1]) get("Cost")[1] = usd(g.total_cost);
    setMeta($("stt-meta"), meta);
  } catch { /* the ledger lookup is a nicety; the transcript is shown already */ }
}

function renderTimeline(body) {
  const list = $("stt-segments");
  list.replaceChildren();
  const segs = body?.segments || [];
  if (!segs.length) return;
  const words = body.words || [];
  for (const s of segs) {
    const inSeg = words.filter((w) => w.start >= s.start - 0.01 && w.start < s.end + 0.01);
    const content = inSeg.length
      ? inSeg.map((w) => el("button", { type: "button", class: "word", dataset: { start: w.start },
                                        title: `${clock(w.start)}–${clock(w.end)}` }, w.word))
      : [s.text];
    list.append(el("li", {}, el("button", { type: "button", class: "seg-time", dataset: { start: s.start },
                                            "aria-label": `play from ${clock(s.start)}` },
                                `${clock(s.start)}–${clock(s.end)}`), ...content));
  }
  $("stt-timeline").hidden = false;
}

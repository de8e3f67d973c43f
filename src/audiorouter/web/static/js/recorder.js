// Recording from the microphone with MediaRecorder, shared by the Transcribe and Audio chat tabs: a toggle
// button (aria-pressed), the time recorded so far, and the finished recording handed to `onRecorded`.
import { showError } from "./api.js";
import { clock } from "./util.js";

/** Make `button` start and stop a recording; `onRecorded(blob, name, seconds)` gets each finished one. */
export function recordButton(button, timeEl, onRecorded) {
  const label = button.textContent;
  let recorder = null;
  button.setAttribute("aria-pressed", "false");
  button.addEventListener("click", async () => {
    if (recorder) { recorder.stop(); return; }
    if (!navigator.mediaDevices?.getUserMedia || !window.MediaRecorder) {
      showError(new Error("recording needs a browser with MediaRecorder, on https or localhost"));
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e) {
      showError(new Error(`the microphone is not available: ${e.message}`));
      return;
    }
    const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4"].find((t) => MediaRecorder.isTypeSupported(t));
    const rec = new MediaRecorder(stream, type ? { mimeType: type } : {});
    const parts = [];
    const t0 = Date.now();
    const tick = setInterval(() => { timeEl.textContent = `recording ${clock((Date.now() - t0) / 1000)}`; }, 250);
    rec.ondataavailable = (e) => e.data.size && parts.push(e.data);
    rec.onstop = () => {
      clearInterval(tick);
      stream.getTracks().forEach((t) => t.stop());
      const mime = rec.mimeType || "audio/webm";
      const ext = mime.includes("ogg") ? "ogg" : mime.includes("mp4") ? "m4a" : "webm";
      const seconds = (Date.now() - t0) / 1000;
      timeEl.textContent = `recorded ${clock(seconds)}`;
      button.textContent = label;
      button.setAttribute("aria-pressed", "false");
      recorder = null;
      onRecorded(new Blob(parts, { type: mime.split(";")[0] }), `recording.${ext}`, seconds);
    };
    recorder = rec;
    rec.start(250);
    button.textContent = "Stop recording";
    button.setAttribute("aria-pressed", "true");
  });
}

// The app shell: one view per hash (#transcribe, #speech, #chat, #models, #activity, #keys), the API key form.
import { api, clearError, getKey, setKey, showError } from "./api.js";
import { $ } from "./util.js";
import * as transcribe from "./transcribe.js";
import * as speech from "./speech.js";
import * as chat from "./chat.js";
import * as models from "./models.js";
import * as activity from "./activity.js";
import * as keys from "./keys.js";

const views = { transcribe, speech, chat, models, activity, keys };
const started = new Set();

async function show() {
  const name = location.hash.slice(1).split("/")[0];
  const view = views[name] ? name : "transcribe";
  for (const v of Object.keys(views)) $(`view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll("nav a[data-view]")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  document.title = `${view[0].toUpperCase()}${view.slice(1)} · audiorouter`;
  try {
    if (!started.has(view)) { started.add(view); await views[view].init(); } else await views[view].refresh();
  } catch (e) {
    showError(e);
  }
}

async function authState() {
  const out = $("auth-state");
  try {
    const k = (await (await api("/api/v1/key")).json()).data;
    out.textContent = getKey() ? `using key “${k.name || k.label}”${k.is_management_key ? " (management)" : ""}`
                               : "no key needed (this server has none yet)";
  } catch (e) {
    out.textContent = getKey() ? "this key was refused" : "this server needs an API key";
    if (e.status === 401) showError(e);
  }
}

$("auth").addEventListener("submit", (e) => {
  e.preventDefault();
  const v = $("api-key").value.trim();
  $("api-key").value = "";
  setKey(v);
});
$("auth-forget").addEventListener("click", () => setKey(""));
$("error-close").addEventListener("click", clearError);
window.addEventListener("audiorouter:key", () => {
  clearError();
  authState();
  show();
});
window.addEventListener("hashchange", () => { clearError(); show(); });
window.addEventListener("unhandledrejection", (e) => showError(e.reason));
authState();
show();

// Calls to this server's API: same-origin only, the key (if any) from this tab's sessionStorage, every error
// turned into words from the error envelope ({"error": {"message", ...}}) and shown in the alert banner.
const KEY = "audiorouter.api_key";

export const getKey = () => sessionStorage.getItem(KEY) || "";
export function setKey(k) {
  if (k) sessionStorage.setItem(KEY, k); else sessionStorage.removeItem(KEY);
  window.dispatchEvent(new Event("audiorouter:key"));
}

export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

export function authHeaders(extra = {}) {
  const h = { ...extra };
  const k = getKey();
  if (k) h.Authorization = `Bearer ${k}`;
  return h;
}

/** The words to show for an error answer: the envelope's message (both dialects put it at error.message). */
export function messageOf(status, text) {
  let msg = "";
  try {
    const e = JSON.parse(text).error;
    if (e && typeof e.message === "string") msg = e.message;
  } catch { /* not JSON */ }
  if (!msg) msg = (text || "").trim().slice(0, 300) || "the server answered with an error and gave no message";
  if (status === 401) msg += " (enter an API key at the top of the page)";
  return `Error ${status}: ${msg}`;
}

export async function api(path, { method = "GET", json, body, headers = {} } = {}) {
  const init = { method, headers: authHeaders(headers), mode: "same-origin", credentials: "same-origin",
                 cache: "no-store" };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(`Network error: ${e.message} (is the server running?)`, 0);
  }
  if (!resp.ok) throw new ApiError(messageOf(resp.status, await resp.text().catch(() => "")), resp.status);
  return resp;
}

export const getJSON = async (path) => (await api(path)).json();

/** POST a form with upload progress and the response text as it arrives (XMLHttpRequest gives both). */
export function upload(path, form, { onUpload, onText } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    if (onUpload) xhr.upload.onprogress = (e) => e.lengthComputable && onUpload(e.loaded / e.total);
    if (onText) xhr.onprogress = () => onText(xhr.responseText);
    xhr.onload = () => resolve({ status: xhr.status, text: xhr.responseText,
                                 header: (n) => xhr.getResponseHeader(n) });
    xhr.onerror = () => reject(new ApiError("Network error: the upload failed (is the server running?)", 0));
    xhr.send(form);
  });
}

// ---- the alert banner ----------------------------------------------------------------------------------
export function showError(e) {
  const text = e instanceof ApiError ? e.message : `Error: ${e && e.message ? e.message : e}`;
  document.getElementById("error-text").textContent = text;
  document.getElementById("error").hidden = false;
  if (e && e.status === 401) document.getElementById("api-key").focus();
}
export function clearError() { document.getElementById("error").hidden = true; }

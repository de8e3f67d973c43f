// Keys (management key, or a local server with no keys yet): create (the secret is shown once), set a
// spend limit, disable / enable, delete; provider keys of your own (BYOK): add, remove.
import { api, clearError, getJSON, setKey, showError } from "./api.js";
import { $, busy, el, usd } from "./util.js";

let secret = "";
let providersLoaded = false;

export async function init() {
  $("key-form").addEventListener("submit", (e) => { e.preventDefault(); busy($("key-create"), create); });
  $("key-secret-copy").addEventListener("click", () => navigator.clipboard.writeText(secret).catch(showError));
  $("key-secret-use").addEventListener("click", () => { setKey(secret); forgetSecret(); });
  $("keys-table").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-act]");
    if (b) busy(b, () => keyAction(b.dataset.act, b.dataset.hash, b.dataset.name));
  });
  $("byok-form").addEventListener("submit", (e) => { e.preventDefault(); busy(e.submitter || $("byok-form"), addByok); });
  $("byok-table").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-byok]");
    if (b) busy(b, () => removeByok(b.dataset.byok, b.dataset.name));
  });
  await refresh();
}

export async function refresh() {
  const [keys, byok] = await Promise.all([getJSON("/api/v1/keys?include_disabled=true"), getJSON("/api/v1/byok")]);
  $("keys-table").tBodies[0].replaceChildren(...keys.data.map((k) => el("tr", {},
    el("th", { scope: "row" }, k.name, el("div", { class: "muted" }, k.label)),
    el("td", {}, k.is_management_key ? "management" : "regular"),
    el("td", {}, usd(k.usage)),
    el("td", {}, k.limit == null ? "none" : `${usd(k.limit)}${k.limit_reset ? ` ${k.limit_reset}` : ""} (left ${usd(k.limit_remaining)})`),
    el("td", { class: k.disabled ? "bad" : "ok" }, k.disabled ? "disabled" : "enabled"),
    el("td", {},
      el("button", { type: "button", dataset: { act: "limit", hash: k.hash, name: k.name } }, "Set limit"),
      el("button", { type: "button", dataset: { act: k.disabled ? "enable" : "disable", hash: k.hash, name: k.name } },
         k.disabled ? "Enable" : "Disable"),
      el("button", { type: "button", dataset: { act: "delete", hash: k.hash, name: k.name } }, "Delete")))));
  $("byok-table").tBodies[0].replaceChildren(...byok.data.map((b) => el("tr", {},
    el("td", {}, b.provider), el("td", {}, b.name || "—"), el("td", {}, b.label || "—"),
    el("td", { class: b.disabled ? "bad" : "ok" }, b.disabled ? "disabled" : "enabled"),
    el("td", {}, el("button", { type: "button", dataset: { byok: b.id, name: b.name || b.provider } }, "Remove")))));
  if (!providersLoaded) await loadProviders();
}

async function loadProviders() {
  // the providers that serve some model (every endpoint's tag), less the built-in local engine
  const models = (await getJSON("/api/v1/models")).data;
  const tags = new Set();
  await Promise.all(models.map(async (m) => {
    const path = m.id.split("/").map(encodeURIComponent).join("/");
    for (const e of (await getJSON(`/api/v1/models/${path}/endpoints`)).data.endpoints) if (e.tag !== "local") tags.add(e.tag);
  }));
  $("byok-provider").replaceChildren(...[...tags].sort().map((t) => el("option", { value: t }, t)));
  providersLoaded = true;
}

function forgetSecret() {
  secret = "";
  $("key-secret-value").textContent = "";
  $("key-secret-note").textContent = "";
  $("key-secret").hidden = true;
}

async function create() {
  clearError();
  const body = { name: $("key-name").value.trim() };
  const limit = $("key-limit").value.trim();
  if (limit) body.limit = Number(limit);
  if ($("key-reset").value) body.limit_reset = $("key-reset").value;
  if ($("key-mgmt").checked) body.is_management_key = true;
  const r = await (await api("/api/v1/keys", { method: "POST", json: body })).json();
  secret = r.key;
  $("key-secret-value").textContent = secret;
  $("key-secret").hidden = false;
  $("key-form").reset();
  $("key-secret-copy").focus();
  $("key-secret-note").textContent = "";
  await refresh().catch((e) => { // creating the first key turns authentication on: this tab now needs a key
    if (e.status !== 401) throw e;
    $("key-secret-note").textContent = "Authentication is now on: this tab needs a management key to go on managing keys.";
  });
}

async function keyAction(act, hash, name) {
  clearError();
  const path = `/api/v1/keys/${encodeURIComponent(hash)}`;
  if (act === "delete") {
    if (!confirm(`Delete the key “${name}”? Programs using it stop working.`)) return;
    await api(path, { method: "DELETE" });
  } else if (act === "limit") {
    const v = prompt(`Spend limit for “${name}” in USD (empty for none):`, "");
    if (v === null) return;
    await api(path, { method: "PATCH", json: { limit: v.trim() === "" ? null : Number(v) } });
  } else {
    await api(path, { method: "PATCH", json: { disabled: act === "disable" } });
  }
  await refresh();
}

async function addByok() {
  clearError();
  const body = { provider: $("byok-provider").value, key: $("byok-key").value };
  const name = $("byok-name").value.trim();
  if (name) body.name = name;
  await api("/api/v1/byok", { method: "POST", json: body });
  $("byok-form").reset();
  await refresh();
}

async function removeByok(id, name) {
  clearError();
  if (!confirm(`Remove the provider key “${name}”?`)) return;
  await api(`/api/v1/byok/${encodeURIComponent(id)}`, { method: "DELETE" });
  await refresh();
}

// What both pages share: requests to this server with the API key, which is asked for
// once (when the server answers 401) and kept in this tab's sessionStorage only.
const KEY = "palm.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

// The page's key dialog, made on first use (both pages share it).
function keyDialog() {
  let dialog = document.getElementById("key-dialog");
  if (dialog) return dialog;
  dialog = el("dialog", { id: "key-dialog" });
  const form = el("form", { method: "dialog" });
  const buttons = el("div", { class: "row", style: "margin-top:.8rem" },
    el("button", { value: "ok", class: "primary" }, "Use key"), el("button", { value: "cancel" }, "Cancel"));
  form.append(el("p", { class: "why" }), el("label", {}, "API key ", el("input", { type: "password", autocomplete: "off" })), buttons);
  dialog.append(form);
  document.body.append(dialog);
  return dialog;
}

// Resolves to the key the user typed, or "" if they cancelled.
function askForKey(message) {
  const dialog = keyDialog();
  const input = dialog.querySelector("input");
  dialog.querySelector(".why").textContent = message;
  input.value = "";
  return new Promise((resolve) => {
    dialog.onclose = () => resolve(dialog.returnValue === "ok" ? input.value.trim() : "");
    dialog.showModal();
    input.focus();
  });
}

// fetch() against this server with the key; on 401 asks for it and tries again.
export async function api(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers || {});
    if (apiKey()) headers.set("Authorization", "Bearer " + apiKey());
    const res = await fetch(path, { ...init, headers });
    if (res.status !== 401) return res;
    const key = await askForKey(apiKey() ? "That key was refused." : "This server requires an API key.");
    if (!key) return res;
    sessionStorage.setItem(KEY, key);
  }
}

// The message of an error answer ({"error": {"message"}}), or the status line.
export async function errorMessage(res) {
  try {
    const j = await res.json();
    if (j && j.error && j.error.message) return `${res.status}: ${j.error.message}`;
  } catch (e) {
    /* not JSON */
  }
  return `${res.status} ${res.statusText}`;
}

export async function getJson(path) {
  const res = await api(path);
  if (!res.ok) throw new Error(await errorMessage(res));
  return res.json();
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// The playground: chat and completion against this server's OpenAI API, streamed.
import { api, errorMessage, el } from "/assets/common.js";

const $ = (id) => document.getElementById(id);
let model = null;       // {id, context_length}
let running = null;     // the AbortController of the request in flight
const chat = [];        // the conversation: {role, content}

function settings() {
  const body = {
    model: model.id,
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    max_tokens: Math.max(1, Math.floor(Number($("max-tokens").value) || 1)),
    stream: true,
    stream_options: { include_usage: true },
  };
  const seed = $("seed").value.trim();
  if (seed !== "") body.seed = Number.parseInt(seed, 10);
  const stop = $("stop-strings").value;
  if (stop !== "") body.stop = [stop];
  return body;
}

// Streams one request (Server-Sent Events in OpenAI's chunk format); onText gets the
// text as it arrives. Resolves to what the stream said: text, usage, logprobs, finish
// reason and timings. Rejects on a server error; an abort ends it with stopped = true.
async function stream(path, body, onText, signal) {
  const r = { text: "", usage: null, logprobs: null, finish: null, stopped: false, start: performance.now(), first: null, end: null };
  const res = await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal });
  if (!res.ok) throw new Error(await errorMessage(res));
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const j = JSON.parse(data);
          if (j.error) throw new Error(j.error.message);
          if (j.usage) r.usage = j.usage;
          for (const c of j.choices || []) {
            const piece = c.delta ? c.delta.content || "" : c.text || "";
            if (piece) {
              if (r.first === null) r.first = performance.now();
              r.text += piece;
              onText(r.text);
            }
            if (c.finish_reason) r.finish = c.finish_reason;
            if (c.logprobs) r.logprobs = c.logprobs;
          }
        }
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") throw e;
    r.stopped = true;
  }
  r.end = performance.now();
  return r;
}

function statsText(r) {
  const parts = [];
  const tokens = r.usage ? r.usage.completion_tokens : null;
  if (tokens !== null) parts.push(`${tokens} tokens`);
  if (r.usage) parts.push(`prompt ${r.usage.prompt_tokens}`);
  if (r.first !== null) parts.push(`first token ${((r.first - r.start) / 1000).toFixed(2)} s`);
  if (tokens > 1 && r.end > r.first) parts.push(`${((tokens - 1) / ((r.end - r.first) / 1000)).toFixed(1)} tokens/s`);
  if (r.stopped) parts.push("stopped");
  else if (r.finish) parts.push(`finish: ${r.finish}`);
  return parts.join(" · ");
}

// Generated text as one span per token, its log-probability on hover (when the tokens
// spell the text exactly; a stop string cut inside a token leaves plain text).
function tokenSpans(pieces, logprobs, text) {
  if (!pieces || pieces.join("") !== text) return null;
  const frag = document.createDocumentFragment();
  pieces.forEach((p, i) => {
    const lp = logprobs[i];
    frag.append(el("span", { class: "tok", "data-tip": `logprob ${lp.toFixed(3)} (p = ${(100 * Math.exp(lp)).toFixed(1)}%)`, "data-logprob": String(lp) }, p));
  });
  return frag;
}

function setRunning(controller) {
  running = controller;
  const busy = controller !== null;
  $("send").disabled = busy;
  $("generate").disabled = busy;
  $("stop-chat").disabled = !busy;
  $("stop-completion").disabled = !busy;
}

function stop() {
  if (running) running.abort();
}

async function sendChat() {
  const text = $("chat-input").value;
  if (!model || running || text.trim() === "") return;
  $("error").textContent = "";
  $("chat-input").value = "";
  chat.push({ role: "user", content: text });
  const messages = $("messages");
  messages.append(el("div", { class: "msg user" }, text));
  const bubble = el("div", { class: "msg assistant", "data-state": "streaming" });
  const body = el("span", { class: "body" });
  const stats = el("span", { class: "stats" });
  bubble.append(body, stats);
  messages.append(bubble);
  messages.scrollTop = messages.scrollHeight;
  const controller = new AbortController();
  setRunning(controller);
  try {
    const r = await stream("/v1/chat/completions", { ...settings(), messages: chat, logprobs: true }, (t) => {
      body.textContent = t;
      messages.scrollTop = messages.scrollHeight;
    }, controller.signal);
    chat.push({ role: "assistant", content: r.text });
    const lp = r.logprobs && r.logprobs.content;
    const spans = lp ? tokenSpans(lp.map((x) => x.token), lp.map((x) => x.logprob), r.text) : null;
    if (spans) body.replaceChildren(spans);
    stats.textContent = statsText(r);
    bubble.dataset.state = r.stopped ? "stopped" : "done";
    if (r.usage) bubble.dataset.tokens = String(r.usage.completion_tokens);
  } catch (e) {
    bubble.dataset.state = "error";
    $("error").textContent = e.message;
    chat.pop();
  } finally {
    setRunning(null);
    $("chat-input").focus();
  }
}

async function generate() {
  const prompt = $("prompt").value;
  if (!model || running || prompt === "") return;
  $("error").textContent = "";
  const out = $("completion");
  const generated = el("span", { class: "generated" });
  out.replaceChildren(el("span", { class: "prompt" }, prompt), generated);
  out.dataset.state = "streaming";
  $("completion-stats").textContent = "";
  const controller = new AbortController();
  setRunning(controller);
  try {
    const r = await stream("/v1/completions", { ...settings(), prompt, logprobs: 1 }, (t) => {
      generated.textContent = t;
    }, controller.signal);
    const spans = r.logprobs ? tokenSpans(r.logprobs.tokens, r.logprobs.token_logprobs, r.text) : null;
    if (spans) generated.replaceChildren(spans);
    $("completion-stats").textContent = statsText(r);
    out.dataset.state = r.stopped ? "stopped" : "done";
  } catch (e) {
    out.dataset.state = "error";
    $("error").textContent = e.message;
  } finally {
    setRunning(null);
  }
}

function mode(which) {
  $("mode-chat").setAttribute("aria-pressed", String(which === "chat"));
  $("mode-completion").setAttribute("aria-pressed", String(which === "completion"));
  $("chat-view").classList.toggle("hidden", which !== "chat");
  $("completion-view").classList.toggle("hidden", which !== "completion");
  (which === "chat" ? $("chat-input") : $("prompt")).focus();
}

async function connect() {
  const res = await api("/v1/models");
  if (!res.ok) {
    $("model-info").textContent = "not connected";
    $("error").textContent = await errorMessage(res);
    return;
  }
  const m = (await res.json()).data[0];
  model = { id: m.id, context_length: m.context_length };
  $("model-info").textContent = `model ${m.id} · context ${m.context_length} tokens`;
  $("max-tokens").max = String(m.context_length);
  document.body.dataset.ready = "true";
}

// The log-probability of the token under the pointer, shown at once (a title attribute
// would wait a second and cannot be styled).
document.addEventListener("mouseover", (e) => {
  const tip = $("tip");
  const tok = e.target.closest && e.target.closest(".tok");
  if (!tok) return tip.classList.add("hidden");
  tip.textContent = tok.dataset.tip;
  const r = tok.getBoundingClientRect();
  tip.style.left = `${Math.max(4, Math.min(r.left, window.innerWidth - 220))}px`;
  tip.style.top = `${r.bottom + 6}px`;
  tip.classList.remove("hidden");
});

$("mode-chat").addEventListener("click", () => mode("chat"));
$("mode-completion").addEventListener("click", () => mode("completion"));
$("send").addEventListener("click", sendChat);
$("generate").addEventListener("click", generate);
$("stop-chat").addEventListener("click", stop);
$("stop-completion").addEventListener("click", stop);
$("clear").addEventListener("click", () => {
  chat.length = 0;
  $("messages").replaceChildren();
});
$("chat-input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    sendChat();
  }
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    generate();
  }
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && running) stop();
});
connect();

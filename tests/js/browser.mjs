// The web pages in a real browser: Debian's headless Chromium driven by Playwright
// (playwright-core, pinned in package.json), against the real palm binary.
//   node tests/js/browser.mjs BUILD/palm OUT_DIR
// Builds a tokenizer and data set, trains a finished run (card, datasheet, an eval) and
// starts a second one that keeps training, serves a random model with --runs and an API
// key, then checks what a person would: the key is asked for, a chat reply streams in
// and equals the API's, a completion shows each token's log-probability on hover, Stop
// frees the server's slot (/health, /metrics), the runs page's curve gains points while
// the run trains, the documents render, the pages fit a phone's width, and no page
// requests anything from any host but the server. Screenshots land in OUT_DIR.
import { chromium } from "playwright-core";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const [palm, outDir] = process.argv.slice(2);
if (!palm || !outDir) {
  console.error("usage: node browser.mjs PALM_BINARY OUT_DIR");
  process.exit(2);
}
const CHROMIUM = process.env.PALM_CHROMIUM || "/usr/bin/chromium";
const source = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const text = path.join(source, "tests/fixtures/text/english.txt");
const work = fs.mkdtempSync(path.join(os.tmpdir(), "palm_browser_"));
const w = (f) => path.join(work, f);
const KEY = "sk-browser";
fs.mkdirSync(outDir, { recursive: true });

const children = [];
let failures = 0;
async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}
function assert(cond, message) {
  if (!cond) throw new Error(message);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, fn, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
}
function run(...args) {
  execFileSync(palm, args, { stdio: ["ignore", "ignore", "pipe"] });
}
// A palm process in the background; resolves to its port once it listens.
function server(args, log) {
  const child = spawn(palm, args, { stdio: ["ignore", "ignore", fs.openSync(log, "w")] });
  children.push(child);
  return until("the server to listen", () => {
    const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(fs.readFileSync(log, "utf8"));
    return m && Number(m[1]);
  });
}
function cleanup() {
  for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
}
process.on("exit", cleanup);

// ------------------------------------------------------------------ fixtures
run("tokenizer", "train", "--input", text, "--vocab-size", "600", "--out", w("tok"));
run("data", "build", "--tokenizer", w("tok"), "--source", `english=${text}:format=lines`, "--val-fraction", "0.05", "--out", w("data"));
const trainArgs = ["--preset", "tiny", "--data", w("data"), "--batch-size", "4", "--seq-len", "64", "--threads", "1"];
run("train", ...trainArgs, "--out", w("runs/finished"), "--steps", "40", "--eval-every", "10", "--checkpoint-every", "20");
run("eval", "--model", w("runs/finished"), "--task", "perplexity", "--data", text, "--limit", "20");
// a run that is still training while the page watches it
const live = spawn(palm, ["train", ...trainArgs, "--out", w("runs/live"), "--steps", "100000", "--eval-every", "25",
  "--checkpoint-every", "100000", "--no-card"], { stdio: "ignore" });
children.push(live);
// a run with a rollback in its record and a restart in palm launch's
fs.mkdirSync(w("runs/marked"), { recursive: true });
fs.writeFileSync(w("runs/marked/metrics.jsonl"), Array.from({ length: 30 }, (_, i) => JSON.stringify({ step: i + 1, loss: 5 - i / 10, lr: 0.01 }))
  .concat([JSON.stringify({ event: "rollback", spike_step: 24, loss: 9.5, median: 2.6, to_step: 20, skipped_batches: 200, step: 20 })]).join("\n") + "\n");
fs.writeFileSync(w("runs/marked/events.jsonl"), [{ time: 1, event: "start", np: 2 }, { time: 2, event: "failure", cause: "exit", rank: 1 },
  { time: 3, event: "restart", restart: 1, from_checkpoint: "step-10" }].map((e) => JSON.stringify(e)).join("\n") + "\n");
// a random model with a long context, so a reply of thousands of tokens takes seconds
fs.writeFileSync(w("slow.json"), JSON.stringify({ vocab_size: 600, d_model: 256, n_layers: 4, n_heads: 4, head_dim: 64, d_ff: 1024, max_seq_len: 4096 }));
run("init", "--config", w("slow.json"), "--tokenizer", w("tok"), "--seed", "3", "--out", w("slow.safetensors"));
fs.writeFileSync(w("key"), KEY + "\n");
const port = await server(["serve", "--model", w("slow.safetensors"), "--tokenizer", w("tok"), "--model-name", "tiny",
  "--api-key-file", w("key"), "--runs", w("runs"), "--threads", "1", "--max-batch", "2", "--port", "0"], w("serve.log"));
const origin = `http://127.0.0.1:${port}`;
const auth = { Authorization: `Bearer ${KEY}` };
async function apiPost(p, body) {
  const r = await fetch(origin + p, { method: "POST", headers: { ...auth, "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`${p}: ${r.status} ${await r.text()}`);
  return r.json();
}
async function metric(name) {
  const t = await (await fetch(origin + "/metrics", { headers: auth })).text();
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(t);
  return m ? Number(m[1]) : NaN;
}
await until("the live run's first steps", () => fs.existsSync(w("runs/live/metrics.jsonl")) &&
  fs.readFileSync(w("runs/live/metrics.jsonl"), "utf8").split("\n").length > 3, 60000);

// ------------------------------------------------------------------ the browser
// Debian's Chromium as root on a machine without network: no sandbox, no GPU, and none
// of its background traffic (which would try hosts it cannot reach); a new profile.
const browser = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(work, "profile-")), {
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 900 },
});
const foreign = [];
const requested = [];
await browser.route("**/*", (route) => {
  const url = route.request().url();
  requested.push(url);
  if (url.startsWith(origin + "/")) return route.continue();
  foreign.push(url);
  return route.abort();
});
const page = browser.pages()[0] || (await browser.newPage());
const consoleErrors = [];
page.on("console", (m) => {
  if (m.type() === "error" && !/401 \(Unauthorized\)/.test(m.text())) consoleErrors.push(m.text());
});
page.on("pageerror", (e) => consoleErrors.push(String(e)));

// The key dialog appears on a tab's first 401 (the key lives in that tab's sessionStorage).
async function enterKey(tab) {
  await tab.waitForSelector("#key-dialog[open]");
  await tab.fill("#key-dialog input", KEY);
  await tab.click("#key-dialog button[value=ok]");
  await tab.waitForSelector("body[data-ready=true]");
}

await check("the playground asks for the API key, then a chat reply streams in and equals the API's", async () => {
  await page.goto(origin + "/");
  await enterKey(page);
  assert((await page.textContent("#model-info")).includes("tiny"), "the header names the model");
  await page.fill("#temperature", "0");
  await page.fill("#max-tokens", "120");
  // every text the reply shows on its way, to see it stream
  await page.evaluate(() => {
    window.seen = new Set();
    new MutationObserver(() => {
      const b = document.querySelector(".msg.assistant .body");
      if (b) window.seen.add(b.textContent.length);
    }).observe(document.getElementById("messages"), { subtree: true, childList: true, characterData: true });
  });
  await page.fill("#chat-input", "Hello there");
  await page.press("#chat-input", "Enter");
  await page.waitForSelector(".msg.assistant[data-state=done]", { timeout: 60000 });
  const shown = await page.textContent(".msg.assistant .body");
  const want = await apiPost("/v1/chat/completions", { model: "tiny", messages: [{ role: "user", content: "Hello there" }],
    temperature: 0, max_tokens: 120 });
  assert(shown === want.choices[0].message.content, `the page shows ${JSON.stringify(shown)}, the API says ${JSON.stringify(want.choices[0].message.content)}`);
  const lengths = await page.evaluate(() => window.seen.size);
  assert(lengths >= 3, `the reply appeared in ${lengths} steps: not streamed`);
  const tokens = await page.getAttribute(".msg.assistant", "data-tokens");
  assert(Number(tokens) === want.usage.completion_tokens, `token count ${tokens} vs ${want.usage.completion_tokens}`);
  assert(/tokens\/s/.test(await page.textContent(".msg.assistant .stats")), "tokens/s shown");
  await page.screenshot({ path: path.join(outDir, "playground.png") });
});

await check("a completion shows each token's log-probability on hover, equal to the API's", async () => {
  await page.click("#mode-completion");
  await page.fill("#prompt", "The meaning of");
  await page.fill("#max-tokens", "12");
  await page.click("#generate");
  await page.waitForSelector("#completion[data-state=done]", { timeout: 60000 });
  const shown = await page.$$eval("#completion .tok", (s) => s.map((x) => [x.textContent, Number(x.dataset.logprob), x.dataset.tip]));
  const want = await apiPost("/v1/completions", { model: "tiny", prompt: "The meaning of", temperature: 0, max_tokens: 12, top_p: 0.95, logprobs: 1 });
  const lp = want.choices[0].logprobs;
  assert(shown.length === lp.tokens.length && shown.length > 0, `${shown.length} token spans, the API has ${lp.tokens.length}`);
  shown.forEach(([t, v, title], i) => {
    assert(t === lp.tokens[i], `token ${i}: ${JSON.stringify(t)} vs ${JSON.stringify(lp.tokens[i])}`);
    assert(Math.abs(v - lp.token_logprobs[i]) < 1e-9, `token ${i} logprob ${v} vs ${lp.token_logprobs[i]}`);
    assert(/^logprob -?\d+\.\d{3} \(p = /.test(title), `tip ${title}`);
  });
  await page.hover("#completion .tok >> nth=2");
  await page.waitForSelector("#tip:not(.hidden)");
  const tip = await page.textContent("#tip");
  assert(tip === shown[2][2], `the hover shows ${JSON.stringify(tip)}, want ${JSON.stringify(shown[2][2])}`);
  await page.screenshot({ path: path.join(outDir, "completion.png") });
});

await check("Stop cancels the generation on the server: its slot is free at once (/health, /metrics)", async () => {
  const before = await metric("palm_generated_tokens_total");
  await page.fill("#prompt", "x");
  await page.fill("#max-tokens", "3500");
  await page.fill("#temperature", "1");
  await page.click("#generate");
  await page.waitForFunction(() => document.querySelector("#completion .generated")?.textContent.length > 0, null, { timeout: 30000 });
  const active = (await (await fetch(origin + "/health")).json()).active;
  assert(active === 1, `/health says ${active} active while the page streams`);
  await page.click("#stop-completion");
  await page.waitForSelector("#completion[data-state=stopped]");
  const t0 = Date.now();
  await until("the server to free the slot", async () => {
    const h = await (await fetch(origin + "/health")).json();
    return h.active === 0 && h.queued === 0;
  }, 3000);
  const freedAfter = Date.now() - t0;
  await sleep(300);
  const generated = (await metric("palm_generated_tokens_total")) - before;
  assert(generated < 3000, `${generated} tokens generated for a request stopped early (of 3500)`);
  assert(await page.isEnabled("#generate"), "Generate is usable again");
  console.log(`     slot free ${freedAfter} ms after the page stopped; ${generated} tokens generated of 3500`);
});

const liveId = "runs/live";
await check("the runs page shows a training run's loss curve gaining points as it trains", async () => {
  await page.goto(`${origin}/runs#${encodeURIComponent(liveId)}`);
  await page.waitForSelector("body[data-ready=true]");
  assert((await page.textContent("#run-title")) === liveId, "the run in the address is open");
  const first = Number(await page.getAttribute("#charts", "data-points"));
  assert(first > 0, "the curve has points");
  const later = await until("the curve to gain points", async () => {
    const n = Number(await page.getAttribute("#charts", "data-points"));
    return n > first && n;
  }, 20000);
  assert((await page.$$("#charts canvas")).length >= 5, "five charts drawn");
  assert(await page.isVisible("#run-list li.active .live"), "the run is marked live");
  // overlay the finished run: both runs' training and validation series on the loss chart
  await page.check(`#run-list li:has(button[data-run="runs/finished"]) input`);
  await until("the overlay", async () => (await page.$$("#chart-loss .u-legend .u-series")).length === 5, 10000);
  console.log(`     ${first} -> ${later} points`);
  await page.screenshot({ path: path.join(outDir, "runs.png"), fullPage: true });
});

await check("a finished run's config, evaluations, model card and datasheet render", async () => {
  await page.click('button[data-run="runs/finished"]');
  await until("the run to open", async () => (await page.textContent("#run-title")) === "runs/finished");
  await page.click("#tab-config");
  await page.waitForSelector("#details td:text-is('preset')");
  await page.click("#tab-evals");
  await page.waitForSelector("#details td:text-is('perplexity')");
  await page.click("#tab-card");
  await page.waitForSelector("#details .markdown h1");
  assert((await page.textContent("#details .markdown h1")).startsWith("Model card"), "the card's title");
  assert((await page.$$("#details .markdown table")).length > 0, "the card's tables render");
  await page.screenshot({ path: path.join(outDir, "runs-card.png"), fullPage: true });
  await page.click("#tab-datasheet");
  await until("the datasheet", async () => ((await page.textContent("#details .markdown h1")) || "").startsWith("Datasheet"));
});

await check("rollbacks and palm launch's restarts are marked on the curves", async () => {
  await page.goto(`${origin}/runs#${encodeURIComponent("runs/marked")}`);  // the same page: a new fragment
  await until("the run to open", async () => (await page.textContent("#run-title")) === "runs/marked");
  const legend = await until("the marks", async () => await page.textContent("#marks-legend"));
  assert(legend.includes("step 24: rollback (loss 9.50)"), `legend: ${legend}`);
  assert(legend.includes("step 10: restart 1"), `legend: ${legend}`);
  await page.click("#tab-events");
  await page.waitForSelector("#details td:text-is('restart')");
});

await check("palm serve --model RUN shows that run on /runs without --runs", async () => {
  const own = await server(["serve", "--model", w("runs/finished"), "--port", "0", "--quiet"], w("own.log"));
  const listed = await (await fetch(`http://127.0.0.1:${own}/api/runs`)).json();
  assert(listed.runs.length === 1 && listed.runs[0].id === "finished", JSON.stringify(listed));
});

await check("both pages fit a phone's width", async () => {
  const phone = await browser.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  for (const p of ["/", "/runs"]) {
    await phone.goto(origin + p);
    if (p === "/") await enterKey(phone);
    await phone.waitForSelector("body[data-ready=true]");
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 1, `${p} is ${overflow}px wider than the phone`);
  }
  await phone.goto(origin + "/");
  await phone.waitForSelector("body[data-ready=true]");
  await phone.screenshot({ path: path.join(outDir, "playground-phone.png") });
  await phone.close();
});

await check("the pages requested nothing from any host but the server, and logged no errors", async () => {
  assert(requested.length > 10, `${requested.length} requests seen`);
  assert(foreign.length === 0, `requests to other hosts: ${foreign.join(", ")}`);
  assert(consoleErrors.length === 0, `console errors: ${consoleErrors.join(" | ")}`);
});

await browser.close();
cleanup();
fs.rmSync(work, { recursive: true, force: true });
console.log(failures ? `${failures} FAILED` : "all passed");
process.exit(failures ? 1 : 0);

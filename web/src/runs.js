// The runs page: every run under the served directories, its curves updating while it
// trains (metrics.jsonl polled from the byte where the last poll ended), rollbacks and
// restarts marked, its config, evaluations, model card and datasheet; ticked runs are
// overlaid for comparison. Charts by uPlot; markdown by marked, sanitized by DOMPurify.
import { api, getJson, errorMessage, el } from "/assets/common.js";

const $ = (id) => document.getElementById(id);
const COLORS = ["#2450c8", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285", "#5f3dc4", "#e67700"];
const POLL_MS = 2000;
const LIST_MS = 10000;

const state = {
  runs: [],             // from /api/runs
  focus: null,          // the run whose details are shown
  compare: new Set(),   // runs overlaid on the focus's curves
  data: new Map(),      // id -> the run's records so far
  details: null,        // /api/runs/run of the focus
  tab: "config",
  charts: new Map(),    // chart key -> {plot, runs}
};

function emptyRun() {
  return {
    from: 0, gen: "",
    train: { step: [], loss: [], lr: [], grad: [], tps: [], mfu: [] },
    val: { step: [], loss: [] },
    rollbacks: [],
  };
}

function plotted() {
  const ids = state.focus ? [state.focus] : [];
  for (const id of state.compare) if (id !== state.focus && state.runs.some((r) => r.id === id)) ids.push(id);
  return ids;
}

function colorOf(id) {
  return COLORS[Math.max(0, plotted().indexOf(id)) % COLORS.length];
}

// ------------------------------------------------------------------ data
function take(run, records) {
  for (const r of records) {
    if (r.event === "rollback") run.rollbacks.push(r);
    else if (typeof r.val_loss === "number") {
      run.val.step.push(r.step);
      run.val.loss.push(r.val_loss);
    } else if (typeof r.loss === "number") {
      const t = run.train;
      t.step.push(r.step);
      t.loss.push(r.loss);
      t.lr.push(r.lr ?? null);
      t.grad.push(r.grad_norm ?? null);
      t.tps.push(r.tokens_per_s ?? null);
      t.mfu.push(typeof r.mfu === "number" ? 100 * r.mfu : null);
    }
  }
}

// Reads a run's metrics from where the last read ended (all pages until caught up).
async function poll(id) {
  let run = state.data.get(id);
  if (!run) state.data.set(id, (run = emptyRun()));
  for (let page = 0; page < 64; page++) {
    const q = `/api/runs/metrics?id=${encodeURIComponent(id)}&from=${run.from}&gen=${encodeURIComponent(run.gen)}`;
    const m = await getJson(q);
    if (m.reset) {  // rewritten (a rollback or a resume): read it again from the start
      Object.assign(run, emptyRun());
    }
    take(run, m.records);
    run.gen = m.gen;
    if (m.next === run.from && !m.reset) break;
    run.from = m.next;
    if (m.next >= m.size) break;
  }
}

// ------------------------------------------------------------------ charts
const CHARTS = [
  { key: "loss", el: "chart-loss", series: (run) => [["train", run.train.step, run.train.loss], ["val", run.val.step, run.val.loss]] },
  { key: "lr", el: "chart-lr", series: (run) => [["lr", run.train.step, run.train.lr]] },
  { key: "grad", el: "chart-grad", series: (run) => [["|g|", run.train.step, run.train.grad]] },
  { key: "tps", el: "chart-tps", series: (run) => [["tokens/s", run.train.step, run.train.tps]] },
  { key: "mfu", el: "chart-mfu", series: (run) => [["MFU %", run.train.step, run.train.mfu]] },
];

function shortName(id) {
  const parts = id.split("/");
  return parts.length > 2 ? parts.slice(-2).join("/") : id;
}

// Vertical marks: rollbacks (from metrics.jsonl) and palm launch's restarts and failures.
function marksOf(id) {
  const run = state.data.get(id);
  const marks = [];
  if (run) for (const r of run.rollbacks) marks.push({ step: r.spike_step, label: `rollback (loss ${Number(r.loss).toFixed(2)})`, color: "#d97706" });
  if (id === state.focus && state.details) {
    for (const e of state.details.events || []) {
      if (e.event !== "restart") continue;
      const m = /step-(\d+)/.exec(e.from_checkpoint || "");
      marks.push({ step: m ? Number(m[1]) : 0, label: `restart ${e.restart}`, color: "#b3261e" });
    }
  }
  return marks;
}

function drawMarks(u) {
  const ctx = u.ctx;
  const { left, top, width, height } = u.bbox;
  ctx.save();
  for (const id of plotted()) {
    for (const m of marksOf(id)) {
      const x = Math.round(u.valToPos(m.step, "x", true));
      if (x < left || x > left + width) continue;
      ctx.strokeStyle = m.color;
      ctx.setLineDash([4, 3]);
      ctx.lineWidth = 1.5 * uPlot.pxRatio;
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
    }
  }
  ctx.restore();
}

function chartData(def, ids) {
  const tables = [];
  const series = [{ label: "step" }];
  for (const id of ids) {
    const run = state.data.get(id) || emptyRun();
    for (const [name, xs, ys] of def.series(run)) {
      tables.push([xs.slice(), ys.slice()]);
      const color = colorOf(id);
      const val = name === "val";
      series.push({
        label: ids.length > 1 ? `${shortName(id)} ${name}` : name,
        stroke: color,
        width: val ? 1.5 : 1.25,
        dash: val ? [6, 4] : undefined,
        spanGaps: true,
        points: { show: val, size: 5, fill: color },
      });
    }
  }
  const data = tables.length ? uPlot.join(tables) : [[]];
  return { data, series };
}

function redraw() {
  const ids = plotted();
  const signature = ids.join("\n");
  for (const def of CHARTS) {
    const box = $(def.el);
    const { data, series } = chartData(def, ids);
    let c = state.charts.get(def.key);
    if (!c || c.signature !== signature) {
      if (c) c.plot.destroy();
      box.replaceChildren();
      const plot = new uPlot({
        width: Math.max(200, box.clientWidth),
        height: 220,
        scales: { x: { time: false } },
        axes: [{ label: "step" }, { size: 60 }],
        series,
        hooks: { draw: [drawMarks] },
        legend: { live: true },
      }, data, box);
      c = { plot, signature };
      state.charts.set(def.key, c);
    } else {
      c.plot.setData(data);
    }
  }
  const focus = state.focus && state.data.get(state.focus);
  $("charts").dataset.points = String(focus ? focus.train.step.length : 0);
  $("charts").dataset.valPoints = String(focus ? focus.val.step.length : 0);
  const legend = [];
  for (const id of ids) for (const m of marksOf(id)) legend.push(`step ${m.step}: ${m.label}${ids.length > 1 ? " (" + shortName(id) + ")" : ""}`);
  $("marks-legend").textContent = legend.length ? "Marked: " + legend.join("; ") : "";
}

window.addEventListener("resize", () => {
  for (const def of CHARTS) {
    const c = state.charts.get(def.key);
    if (c) c.plot.setSize({ width: Math.max(200, $(def.el).clientWidth), height: 220 });
  }
});

// ------------------------------------------------------------------ details
function flatten(obj, prefix = "", out = []) {
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
    else out.push([key, typeof v === "string" ? v : JSON.stringify(v)]);
  }
  return out;
}

function table(head, rows) {
  const t = el("table");
  t.append(el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { text: h })))));
  const body = el("tbody");
  for (const r of rows) body.append(el("tr", {}, ...r.map((c) => el("td", { text: c === undefined || c === null ? "" : String(c) }))));
  t.append(body);
  return t;
}

function fmt(x) {
  return typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toPrecision(4)) : x === undefined ? "" : JSON.stringify(x);
}

async function renderDetails() {
  const box = $("details");
  for (const t of ["config", "evals", "card", "datasheet", "events"]) $("tab-" + t).setAttribute("aria-selected", String(t === state.tab));
  const d = state.details;
  if (!d) return box.replaceChildren(el("p", { class: "muted", text: "Select a run." }));
  if (state.tab === "config") {
    box.replaceChildren(d.config ? table(["setting", "value"], flatten(d.config)) : el("p", { class: "muted", text: "No config.json in this run." }));
  } else if (state.tab === "evals") {
    const metrics = ["accuracy", "accuracy_norm", "pass@1", "pass@10", "pass@100", "bits_per_byte", "perplexity"];
    const rows = d.evals.map((e) => [e.task, e.data, e.shots, e.n ?? e.tokens, ...metrics.map((m) => fmt(e[m]))]);
    box.replaceChildren(rows.length ? table(["task", "data", "shots", "n", ...metrics], rows)
      : el("p", { class: "muted", text: "No evaluations yet: palm eval --model RUN keeps its results in RUN/eval/." }));
  } else if (state.tab === "events") {
    const rows = (d.events || []).map((e) => [e.time ? new Date(e.time * 1000).toLocaleString() : "", e.event,
      JSON.stringify(Object.fromEntries(Object.entries(e).filter(([k]) => k !== "time" && k !== "event")))]);
    box.replaceChildren(rows.length ? table(["time", "event", "details"], rows)
      : el("p", { class: "muted", text: "No palm launch events (the run was not started by palm launch)." }));
  } else {
    const name = state.tab === "card" ? "MODEL_CARD.md" : "DATASHEET.md";
    if (!d.documents[name]) {
      return box.replaceChildren(el("p", { class: "muted", text: `No ${name} yet (palm train writes it at the end; palm card RUN on demand).` }));
    }
    const res = await api(`/api/runs/file?id=${encodeURIComponent(d.id)}&name=${name}`);
    if (!res.ok) return box.replaceChildren(el("p", { class: "error", text: await errorMessage(res) }));
    const doc = el("div", { class: "markdown" });
    doc.innerHTML = DOMPurify.sanitize(marked.parse(await res.text()));
    box.replaceChildren(doc);
  }
}

async function loadDetails() {
  if (!state.focus) return;
  state.details = await getJson(`/api/runs/run?id=${encodeURIComponent(state.focus)}`);
  await renderDetails();
}

// ------------------------------------------------------------------ the list
function renderList() {
  const list = $("run-list");
  const filter = $("filter").value.toLowerCase();
  list.replaceChildren();
  for (const r of state.runs) {
    if (filter && !r.id.toLowerCase().includes(filter)) continue;
    const live = state.now - r.modified < 30;
    const box = el("input", { type: "checkbox", "aria-label": `overlay ${r.id}` });
    box.checked = state.compare.has(r.id) || r.id === state.focus;
    box.disabled = r.id === state.focus;
    box.addEventListener("change", async () => {
      if (box.checked) state.compare.add(r.id);
      else state.compare.delete(r.id);
      await refresh();
    });
    const name = el("button", { class: "link", title: r.dir, "data-run": r.id }, r.id);
    name.addEventListener("click", () => focus(r.id));
    const item = el("li", { class: r.id === state.focus ? "active" : "" }, box, name);
    if (live) item.append(el("span", { class: "live", title: "metrics.jsonl changed in the last 30 s" }, "live"));
    list.append(item);
  }
}

async function loadList() {
  const j = await getJson("/api/runs");
  state.runs = j.runs;
  state.now = j.now;
  $("runs-note").textContent = j.note || (j.runs.length ? "" : "No runs found (a run is a directory with metrics.jsonl).");
  renderList();
}

async function focus(id) {
  state.focus = id;
  history.replaceState(null, "", "#" + encodeURIComponent(id));
  $("run-title").textContent = id;
  renderList();
  await refresh();
  await loadDetails();
  redraw();
}

async function refresh() {
  for (const id of plotted()) await poll(id);
  redraw();
  renderList();
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function showError(e) {
  $("error").textContent = e.message || String(e);
}

async function start() {
  for (const t of ["config", "evals", "card", "datasheet", "events"]) {
    $("tab-" + t).addEventListener("click", () => {
      state.tab = t;
      renderDetails().catch(showError);
    });
  }
  $("filter").addEventListener("input", renderList);
  // a link to another run of this page (or the browser's back button) opens that run
  window.addEventListener("hashchange", async () => {
    const id = decodeURIComponent(location.hash.slice(1));
    if (id === state.focus) return;
    if (!state.runs.some((r) => r.id === id)) await loadList();
    if (state.runs.some((r) => r.id === id)) await focus(id);
  });
  await loadList();
  const wanted = decodeURIComponent(location.hash.slice(1));
  const first = state.runs.find((r) => r.id === wanted) || state.runs[0];
  if (first) await focus(first.id);
  else redraw();
  document.body.dataset.ready = "true";
  let sinceList = 0;
  for (;;) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    try {
      sinceList += POLL_MS;
      if (sinceList >= LIST_MS) {
        sinceList = 0;
        await loadList();
        if (state.focus) {
          state.details = await getJson(`/api/runs/run?id=${encodeURIComponent(state.focus)}`);
        }
      }
      await refresh();
      $("error").textContent = "";
    } catch (e) {
      showError(e);
    }
  }
}

start().catch(showError);

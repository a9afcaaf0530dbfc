// lepton_nn studio: the page's main script (no library; drawing helpers in charts.js, the
// graph and its op nodes in graph.js, the panels that run the model in detail.js). It reads the
// training events (server-sent events) into the loss and metric charts, the per-layer table
// and the histograms, drives pause / step / resume, and steps through one batch's backward.
"use strict";
const state = { losses: [], epochs: {}, nEpochs: 0, last: null, steps: [], at: -1, nodes: {},
  detail: null, dirty: false };

// -- training events: kept in state on arrival, drawn at most every 30 ms
function drawLoss() {
  const svg = $("loss-chart");
  svg.setAttribute("data-points", state.losses.length);
  drawLines(svg, [{ name: "loss", values: downsample(state.losses, MAX_DRAWN) }], 400, 180);
  const n = state.losses.length;
  if (n) $("loss-now").textContent = `step ${n}: ${fmt(state.losses[n - 1])}`;
}
function drawMetrics() {
  const svg = $("metric-chart");
  svg.setAttribute("data-epochs", state.nEpochs);
  const keys = Object.keys(state.epochs).filter((k) => k !== "lr");
  const series = keys.map((k, i) => ({ name: k, values: state.epochs[k], color: COLORS[i % COLORS.length] }));
  drawLines(svg, series, 400, 160);
  const legend = $("metric-legend");
  legend.innerHTML = "";
  series.forEach((s) => {
    const v = s.values[s.values.length - 1];
    html("span", { style: `color:${s.color}` }, legend, `${s.name} ${fmt(v)}`);
  });
}
const COLS = ["value_norm", "grad_norm", "act_mean", "act_std", "grad_std", "dead", "update_ratio"];
function drawLayers(layers) {
  const t = $("layer-stats");
  t.innerHTML = "<tr><th>layer</th>" + COLS.map((c) => `<th>${c}</th>`).join("") + "</tr>";
  for (const [name, s] of Object.entries(layers)) {
    const tr = html("tr", { "data-testid": "stats-" + name }, t);
    html("td", {}, tr, name);
    for (const c of COLS) html("td", { "data-stat": c }, tr, fmt(s[c]));
    const n = state.nodes[name];
    if (n) n.sub.textContent = `||y|| ${fmt(s.value_norm)}  ||g|| ${fmt(s.grad_norm)}`;
    histFigure(name, "hist-", s.hist, "activations y");
    histFigure(name, "grad-hist-", s.grad_hist, "gradients dL/dy");
  }
}
function histFigure(name, prefix, h, what) {
  if (!h) return;
  let svg = document.querySelector(`[data-testid="${prefix}${CSS.escape(name)}"]`);
  if (!svg) {
    const fig = html("figure", {}, $("hists"));
    svg = el("svg", { "data-testid": prefix + name, width: 160, height: 60, viewBox: "0 0 160 60",
      class: "hist" + (prefix === "grad-hist-" ? " grad" : "") }, fig);
    html("figcaption", {}, fig);
  }
  drawHist(svg, h, 160, 60);
  svg.dataset.updates = Number(svg.dataset.updates || 0) + 1;
  svg.parentNode.querySelector("figcaption").textContent =
    `${name} ${what}: ${fmt(h.lo)} .. ${fmt(h.hi)}`;
}
function setStatus(e) {
  $("status").textContent = (e.paused ? "paused" : e.training === false ? "idle" : "training") +
    ` at step ${e.step}`;
}
function onEvent(e) {
  if (e.type === "losses" || e.type === "batch") {
    for (const v of e.losses) if (v !== null) state.losses.push(v);
  }
  if (e.type === "batch") {
    if (e.layers) state.last = e; // (an old event replayed keeps only its losses)
    if (e.lr !== null && e.lr !== undefined) $("lr").textContent = fmt(e.lr);
    setStatus(e);
  } else if (e.type === "epoch") {
    for (const [k, v] of Object.entries(e.logs)) {
      const s = (state.epochs[k] = state.epochs[k] || []);
      while (s.length < state.nEpochs) s.push(null);
      s.push(v);
    }
    state.nEpochs += 1;
    if (e.logs.lr !== null && e.logs.lr !== undefined) $("lr").textContent = fmt(e.logs.lr);
  } else if (e.type === "done") {
    $("status").textContent = `done after ${e.step} steps`;
  } else if (e.type === "state") {
    setStatus(e);
  }
  // the run stopped (parked or done): the node panel's tensors, with the weights as they are now
  if (state.detail && (e.type === "done" || (e.type === "state" && e.paused))) loadTensors(state.detail.name);
  if (e.type === "done" || (e.type === "state" && e.paused)) refreshOps();
  else if (e.type === "epoch") refreshOps(1000); // open layers follow a run epoch by epoch
  if (!state.dirty) {
    state.dirty = true;
    setTimeout(redraw, 30); // at most ~30 redraws a second, however fast events come
  }
}
function redraw() {
  state.dirty = false;
  drawLoss();
  drawMetrics();
  if (state.last) {
    drawLayers(state.last.layers);
    if (state.detail) renderNorms(state.last.layers[state.detail.name]);
  }
}

// -- control
async function control(action) {
  const [, s] = await getJSON("/api/control", { method: "POST",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ action }) });
  if (!s.training) setStatus(s); // during a run the events say it (this answer may be older)
}

// -- backprop stepping
async function loadBackward() {
  const ops = $("bw-ops").checked; // through the op nodes inside the layers
  if (ops) await setAllOps(true);
  const [status, d] = await getJSON(ops ? "/api/backward-ops" : "/api/backward");
  const box = $("backprop-detail");
  if (status !== 200) { box.textContent = d.error; return; }
  state.steps = d.steps;
  const ol = $("backprop-steps");
  ol.innerHTML = "";
  for (const s of d.steps) {
    html("li", { "data-testid": "bw-" + s.id }, ol,
      `${s.id} ${s.label} ${s.shape}` + (s.layer ? ` [${s.layer}` +
      (s.op !== null && s.op !== undefined ? ` op ${s.op}` : "") + "]" : ""));
  }
  showStep(0);
}
function showStep(i) {
  if (!state.steps.length) return;
  state.at = Math.max(0, Math.min(i, state.steps.length - 1));
  const s = state.steps[state.at];
  const srcs = new Set(s.inputs.map((x) => x[0]));
  for (const li of $("backprop-steps").children) {
    const id = li.getAttribute("data-testid").slice(3);
    li.classList.toggle("current", id === s.id);
    li.classList.toggle("source", srcs.has(id));
  }
  markBackward();
  const box = $("backprop-detail");
  box.classList.remove("muted");
  box.dataset.step = state.at;
  const outs = s.inputs.map(([id, label, n]) => `  -> ${id} ${label}: ` +
    (n === null ? "no gradient needed" : `norm ${fmt(n)}`)).join("\n");
  box.innerHTML = `<b>step ${state.at + 1} of ${state.steps.length}</b>: ` +
    `g = dL/d(${s.id} ${s.label}) ${s.shape}, norm ${fmt(s.grad_norm)}<code class="block"></code>`;
  box.querySelector("code").textContent = `${s.words}\n${s.math}\n${outs || "  (a leaf: g is added into .grad)"}`;
}

window.addEventListener("DOMContentLoaded", async () => {
  $("pause").onclick = () => control("pause");
  $("step").onclick = () => control("step");
  $("resume").onclick = () => control("resume");
  $("bw-load").onclick = loadBackward;
  $("bw-next").onclick = () => showStep(state.at + 1);
  $("bw-prev").onclick = () => showStep(state.at - 1);
  $("node-refresh").onclick = () => state.detail && loadTensors(state.detail.name);
  $("explain-load").onclick = loadExplain;
  $("features-load").onclick = loadFeatures;
  $("ops-toggle").onclick = () => setAllOps(!$("ops-toggle").textContent.startsWith("hide"));
  const [, g] = await getJSON("/api/graph");
  drawGraph(g);
  const [, s] = await getJSON("/api/state");
  setStatus(s);
  const src = new EventSource("/api/events");
  src.onmessage = (m) => onEvent(JSON.parse(m.data));
  document.body.dataset.readyMs = performance.now().toFixed(1); // for the benchmark
  document.body.dataset.ready = "1";
});

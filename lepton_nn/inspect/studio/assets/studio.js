// lepton_nn studio: the page's own script (no library). It draws the layer graph as SVG,
// reads the training events (server-sent events) into the loss curve, the per-layer table
// and the histograms, and steps through one batch's backward pass.
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const state = { losses: [], last: null, selected: null, steps: [], at: -1, nodes: {} };

function el(tag, attrs, parent, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function fmt(v) {
  if (v === null || v === undefined) return "-";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(2) : v.toFixed(4);
}
async function getJSON(url, opts) {
  const r = await fetch(url, opts);
  return [r.status, await r.json()];
}

// -- the graph: a row per depth (longest path from an input), boxes centred in their row
function drawGraph(g) {
  const svg = $("graph");
  svg.innerHTML = "";
  const defs = el("defs", {}, svg);
  const m = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
  el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8890a8" }, m);
  const depth = {};
  g.inputs.forEach((n) => (depth[n] = 0));
  g.nodes.forEach((n) => (depth[n.name] = 1 + Math.max(...n.inputs.map((i) => depth[i] ?? 0))));
  const rows = [];
  const all = g.inputs.map((n) => ({ name: n, input: true })).concat(g.nodes);
  all.forEach((n) => (rows[depth[n.name]] = rows[depth[n.name]] || []).push(n));
  const W = 190, H = 44, GX = 24, GY = 26;
  const width = Math.max(...rows.map((r) => r.length)) * (W + GX) + GX;
  svg.setAttribute("viewBox", `0 0 ${width} ${rows.length * (H + GY) + GY}`);
  svg.setAttribute("height", Math.min(900, rows.length * (H + GY) + GY));
  const pos = {};
  rows.forEach((r, d) => r.forEach((n, i) => {
    const x0 = (width - r.length * (W + GX) + GX) / 2;
    pos[n.name] = { x: x0 + i * (W + GX), y: GY + d * (H + GY) };
  }));
  for (const [a, b] of g.edges) {
    const p = pos[a], q = pos[b];
    el("path", { class: "edge", d: `M${p.x + W / 2},${p.y + H} C${p.x + W / 2},${p.y + H + 14} ` +
      `${q.x + W / 2},${q.y - 14} ${q.x + W / 2},${q.y}` }, svg);
  }
  for (const n of all) {
    const p = pos[n.name];
    const grp = el("g", { class: "node" + (n.input ? " input" : ""),
      "data-testid": (n.input ? "input-" : "node-") + n.name, transform: `translate(${p.x},${p.y})` }, svg);
    el("rect", { width: W, height: H }, grp);
    el("text", { x: 8, y: 17 }, grp, n.input ? `${n.name} (input)` : `${n.name}  ${n.kind}  ${n.shape}`);
    const sub = el("text", { x: 8, y: 34, class: "sub" }, grp, n.input ? "" : `${n.params} parameters`);
    if (!n.input) {
      state.nodes[n.name] = { g: grp, sub: sub, params: n.params };
      grp.addEventListener("click", () => selectNode(n.name));
    }
  }
}

async function selectNode(name) {
  for (const [k, v] of Object.entries(state.nodes)) v.g.classList.toggle("selected", k === name);
  state.selected = name;
  const [status, d] = await getJSON("/api/node/" + encodeURIComponent(name));
  if (status !== 200) return;
  renderDetail(d, state.last ? state.last.layers[name] : d.stats);
}
function renderDetail(d, stats) {
  const box = $("node-detail");
  box.classList.remove("muted");
  box.dataset.layer = d.name;
  const params = Object.entries(d.params).map(([k, s]) => `${k} ${s}`).join(", ") || "none";
  const rules = d.rules.map((r) => `${r.op}: ${r.words}\n  ${r.math}`).join("\n");
  const s = stats || {};
  box.innerHTML = `<b>${d.name}</b> (${d.kind}) parameters: ${params}` +
    `<div>forward</div><code data-testid="node-forward"></code>` +
    `<div>local derivative (g = dL/dy)</div><code data-testid="node-derivative"></code>` +
    `<div>ops inside</div><code data-testid="node-rules"></code>` +
    `<div data-testid="node-norms">after the last step: ||y|| ${fmt(s.value_norm)}, ` +
    `||dL/dy|| ${fmt(s.grad_norm)}, ||W|| ${fmt(s.weight_norm)}, ` +
    `||dL/dW|| ${fmt(s.weight_grad_norm)}, update/weight ${fmt(s.update_ratio)}</div>`;
  box.querySelector("[data-testid=node-forward]").textContent = d.forward;
  box.querySelector("[data-testid=node-derivative]").textContent = d.derivative;
  box.querySelector("[data-testid=node-rules]").textContent = rules;
  state.detail = d;
}

// -- training events
function drawLoss() {
  const svg = $("loss-chart");
  const pts = state.losses;
  svg.innerHTML = "";
  svg.setAttribute("data-points", pts.length);
  if (!pts.length) return;
  const lo = Math.min(...pts), hi = Math.max(...pts), span = hi - lo || 1;
  const n = Math.max(pts.length - 1, 1);
  const xy = pts.map((v, i) => `${(i / n) * 396 + 2},${176 - ((v - lo) / span) * 170}`);
  el("polyline", { points: xy.join(" "), fill: "none", stroke: "#c03030", "stroke-width": 1.5,
    "vector-effect": "non-scaling-stroke" }, svg);
  $("loss-now").textContent = `step ${pts.length}: ${fmt(pts[pts.length - 1])}`;
}
const COLS = ["value_norm", "grad_norm", "act_mean", "act_std", "grad_std", "dead", "update_ratio"];
function drawLayers(layers) {
  const t = $("layer-stats");
  t.innerHTML = "<tr><th>layer</th>" + COLS.map((c) => `<th>${c}</th>`).join("") + "</tr>";
  for (const [name, s] of Object.entries(layers)) {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td>${name}</td>` + COLS.map((c) => `<td>${fmt(s[c])}</td>`).join("");
    t.appendChild(tr);
    const n = state.nodes[name];
    if (n) n.sub.textContent = `||y|| ${fmt(s.value_norm)}  ||g|| ${fmt(s.grad_norm)}`;
    if (s.hist) drawHist(name, s.hist);
  }
}
function drawHist(name, h) {
  let fig = document.querySelector(`[data-testid="hist-${CSS.escape(name)}"]`);
  if (!fig) {
    const wrap = document.createElement("figure");
    wrap.className = "hist";
    wrap.style.margin = "0";
    fig = el("svg", { "data-testid": "hist-" + name, width: 160, height: 60, viewBox: "0 0 160 60" });
    wrap.appendChild(fig);
    const cap = document.createElement("figcaption");
    wrap.appendChild(cap);
    $("hists").appendChild(wrap);
  }
  fig.innerHTML = "";
  const top = Math.max(...h.counts, 1), w = 160 / h.counts.length;
  h.counts.forEach((c, i) => el("rect", { x: i * w + 0.5, width: w - 1, y: 60 - (c / top) * 58,
    height: (c / top) * 58 }, fig));
  fig.parentNode.querySelector("figcaption").textContent =
    `${name}: ${fmt(h.edges[0])} .. ${fmt(h.edges[h.edges.length - 1])}`;
}
function onEvent(e) {
  if (e.type === "losses") {
    for (const v of e.losses) if (v !== null) state.losses.push(v);
    drawLoss();
  } else if (e.type === "batch") {
    for (const v of e.losses) if (v !== null) state.losses.push(v);
    state.last = e;
    drawLoss();
    drawLayers(e.layers);
    if (state.detail && e.layers[state.detail.name]) renderDetail(state.detail, e.layers[state.detail.name]);
    $("status").textContent = (e.paused ? "paused" : "training") + ` at step ${e.step}`;
  } else if (e.type === "done") {
    $("status").textContent = `done after ${e.step} steps`;
  } else if (e.type === "state") {
    $("status").textContent = (e.paused ? "paused" : "training") + ` at step ${e.step}`;
  }
}

// -- control
async function control(action) {
  const [, s] = await getJSON("/api/control", { method: "POST",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ action }) });
  $("status").textContent = (s.paused ? "paused" : s.training ? "training" : "idle") + ` at step ${s.step}`;
}

// -- backprop stepping
async function loadBackward() {
  const [status, d] = await getJSON("/api/backward");
  const box = $("backprop-detail");
  if (status !== 200) { box.textContent = d.error; return; }
  state.steps = d.steps;
  const ol = $("backprop-steps");
  ol.innerHTML = "";
  for (const s of d.steps) {
    const li = document.createElement("li");
    li.dataset.testid = "bw-" + s.id;
    li.setAttribute("data-testid", "bw-" + s.id);
    li.textContent = `${s.id} ${s.label} ${s.shape}` + (s.layer ? ` [${s.layer}]` : "");
    ol.appendChild(li);
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
  for (const [k, v] of Object.entries(state.nodes)) v.g.classList.toggle("bw-current", k === s.layer);
  const box = $("backprop-detail");
  box.classList.remove("muted");
  box.dataset.step = state.at;
  const outs = s.inputs.map(([id, label, n]) => `  -> ${id} ${label}: ` +
    (n === null ? "no gradient needed" : `norm ${fmt(n)}`)).join("\n");
  box.innerHTML = `<b>step ${state.at + 1} of ${state.steps.length}</b>: ` +
    `g = dL/d(${s.id} ${s.label}) ${s.shape}, norm ${fmt(s.grad_norm)}<code></code>`;
  box.querySelector("code").textContent = `${s.words}\n${s.math}\n${outs || "  (a leaf: g is added into .grad)"}`;
}

window.addEventListener("DOMContentLoaded", async () => {
  $("pause").onclick = () => control("pause");
  $("step").onclick = () => control("step");
  $("resume").onclick = () => control("resume");
  $("bw-load").onclick = loadBackward;
  $("bw-next").onclick = () => showStep(state.at + 1);
  $("bw-prev").onclick = () => showStep(state.at - 1);
  const [, g] = await getJSON("/api/graph");
  drawGraph(g);
  const [, s] = await getJSON("/api/state");
  $("status").textContent = s.paused ? "paused" : s.training ? "training" : "idle";
  const src = new EventSource("/api/events");
  src.onmessage = (m) => onEvent(JSON.parse(m.data));
  document.body.dataset.ready = "1";
});

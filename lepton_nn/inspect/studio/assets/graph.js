// lepton_nn studio, the graph: a row per depth (longest path from an input), boxes centred in
// their row. A layer with ops inside has a toggle ("+ ops") that opens it into its op nodes
// (testid op-<layer>-<index>, in the order they run), each with its output shape and, once
// loaded from /api/ops, its value and gradient norms on the sample rows; click one for its
// formula, local derivative and tensors. Needs charts.js (el, html, fmt, getJSON, drawTensor).
"use strict";
const G = { graph: null, open: new Set(), ops: {}, selected: null, opSel: null, bwOp: null };
const W = 200, H = 44, GX = 24, GY = 26, OH = 34, OG = 12;

function nodeHeight(n) {
  return G.open.has(n.name) && n.ops && n.ops.length ? H + n.ops.length * (OH + OG) + 4 : H;
}

function drawGraph(g) {
  G.graph = g || G.graph;
  g = G.graph;
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
  const width = Math.max(...rows.map((r) => r.length)) * (W + GX) + GX;
  const rowH = rows.map((r) => Math.max(...r.map((n) => (n.input ? H : nodeHeight(n)))));
  const top = [GY];
  rowH.forEach((h, d) => top.push(top[d] + h + GY));
  const height = top[rows.length];
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", Math.min(1400, height));
  svg.dataset.open = [...G.open].join(",");
  const pos = {};
  rows.forEach((r, d) => r.forEach((n, i) => {
    const x0 = (width - r.length * (W + GX) + GX) / 2;
    pos[n.name] = { x: x0 + i * (W + GX), y: top[d], h: n.input ? H : nodeHeight(n) };
  }));
  for (const [a, b] of g.edges) {
    const p = pos[a], q = pos[b];
    el("path", { class: "edge", d: `M${p.x + W / 2},${p.y + p.h} C${p.x + W / 2},${p.y + p.h + 14} ` +
      `${q.x + W / 2},${q.y - 14} ${q.x + W / 2},${q.y}` }, svg);
  }
  state.nodes = {};
  for (const n of all) {
    const p = pos[n.name];
    const grp = el("g", { class: "node" + (n.input ? " input" : ""),
      "data-testid": (n.input ? "input-" : "node-") + n.name, transform: `translate(${p.x},${p.y})` }, svg);
    el("rect", { width: W, height: p.h }, grp);
    el("text", { x: 8, y: 17 }, grp, n.input ? `${n.name} (input)` : `${n.name}  ${n.kind}  ${n.shape}`);
    const sub = el("text", { x: 8, y: 34, class: "sub" }, grp, n.input ? "" : `${n.params} parameters`);
    if (n.input) continue;
    state.nodes[n.name] = { g: grp, sub: sub, params: n.params };
    grp.classList.toggle("selected", G.selected === n.name && G.opSel === null);
    grp.addEventListener("click", () => selectNode(n.name));
    if (n.ops && n.ops.length) {
      const open = G.open.has(n.name);
      const t = el("g", { class: "toggle", "data-testid": "expand-" + n.name,
        transform: `translate(${W - 46},24)` }, grp);
      el("rect", { width: 40, height: 16 }, t);
      el("text", { x: 20, y: 12, "text-anchor": "middle" }, t, open ? "- ops" : "+ ops");
      t.addEventListener("click", (e) => { e.stopPropagation(); toggleOps(n.name); });
      if (open) drawOps(grp, n);
    }
  }
  if (state.last) drawLayers(state.last.layers); // the norms of the last recorded batch
  markBackward();
}

// the op nodes of layer n inside its box: a column in run order, arrows from each op's inputs
// (a dashed one on the left from a later op: the recurrence from the step before)
function drawOps(grp, n) {
  const x = 8, w = W - 16, y0 = H;
  const at = (k) => y0 + k * (OH + OG);
  const got = G.ops[n.name];
  n.ops.forEach((o, k) => {
    for (const i of o.inputs) {
      if (typeof i !== "number") continue;
      const d = i < k && i === k - 1 ? `M${x + w / 2},${at(i) + OH} L${x + w / 2},${at(k)}`
        : i < k ? `M${x + w},${at(i) + OH / 2} C${x + w + 14},${at(i) + OH / 2} ${x + w + 14},` +
          `${at(k) + OH / 2} ${x + w},${at(k) + OH / 2}`
        : `M${x},${at(i) + OH / 2} C${x - 8},${at(i) + OH / 2} ${x - 8},${at(k) + OH / 2} ${x},${at(k) + OH / 2}`;
      el("path", { class: "edge op-edge" + (i >= k ? " recurrent" : ""), d }, grp);
    }
  });
  n.ops.forEach((o, k) => {
    const live = got && got.ops[k];
    const og = el("g", { class: "op", "data-testid": `op-${n.name}-${o.id}`, "data-shape": o.shape,
      "data-op": o.op, transform: `translate(${x},${at(k)})` }, grp);
    if (live) {
      og.dataset.valueNorm = live.value_norm;
      og.dataset.gradNorm = live.grad_norm === null ? "" : live.grad_norm;
    }
    og.classList.toggle("selected", G.selected === n.name && G.opSel === o.id);
    el("rect", { width: w, height: OH }, og);
    el("text", { x: 6, y: 14 }, og, `${o.id} ${o.label} (${o.op})  ${o.shape}`);
    el("text", { x: 6, y: 28, class: "sub" }, og, live
      ? `||v|| ${fmt(live.value_norm)}  ||g|| ${fmt(live.grad_norm)}` : "norms: loading...");
    og.addEventListener("click", (e) => { e.stopPropagation(); selectOp(n.name, o.id); });
  });
}

async function loadOps(name) {
  const [status, d] = await getJSON("/api/ops/" + encodeURIComponent(name));
  if (status !== 200) return null;
  G.ops[name] = d;
  return d;
}
async function toggleOps(name, open) {
  const want = open === undefined ? !G.open.has(name) : open;
  if (want) G.open.add(name); else G.open.delete(name);
  drawGraph();
  if (want) { await loadOps(name); drawGraph(); }
}
async function setAllOps(open) {
  const names = G.graph.nodes.filter((n) => n.ops && n.ops.length).map((n) => n.name);
  names.forEach((n) => (open ? G.open.add(n) : G.open.delete(n)));
  drawGraph();
  if (open) { await Promise.all(names.map(loadOps)); drawGraph(); }
  $("ops-toggle").textContent = open ? "hide the ops" : "show the ops inside every layer";
}
// the run parked, ended or finished an epoch: the open layers' norms (and the selected op)
// with the weights as they are now; `every` ms at most (0: now) as each asks the fit thread
// for a forward and backward pass of the sample rows between two batches
async function refreshOps(every = 0) {
  const now = performance.now();
  if (!G.open.size || now - (G.refreshed || -1e9) < every) return;
  G.refreshed = now;
  await Promise.all([...G.open].map(loadOps));
  drawGraph();
  if (G.opSel !== null) renderOp(G.selected, G.opSel);
}

async function selectNode(name) {
  G.selected = name;
  G.opSel = null;
  for (const [k, v] of Object.entries(state.nodes)) v.g.classList.toggle("selected", k === name);
  document.querySelectorAll("#graph .op.selected").forEach((e) => e.classList.remove("selected"));
  const [status, d] = await getJSON("/api/node/" + encodeURIComponent(name));
  if (status !== 200) return;
  state.detail = d;
  renderDetail(d, state.last ? state.last.layers[name] : d.stats);
  loadTensors(name);
}

async function selectOp(layer, id) {
  G.selected = layer;
  G.opSel = id;
  state.detail = null;
  drawGraph();
  if (!G.ops[layer]) await loadOps(layer);
  renderOp(layer, id);
}

// the detail panel for one op: formula, local rule, inputs, value and gradient on sample rows
function renderOp(layer, id) {
  const box = $("node-detail");
  const d = G.ops[layer];
  const node = G.graph.nodes.find((n) => n.name === layer);
  const o = (d && d.ops[id]) || node.ops[id];
  box.classList.remove("muted");
  box.dataset.layer = layer;
  box.dataset.op = id;
  const name = (i) => (typeof i === "number" ? `op ${i} (${node.ops[i].label})` : i);
  box.innerHTML = `<b data-testid="op-title"></b><div>forward</div>` +
    `<code class="block" data-testid="node-forward"></code>` +
    `<div>local derivative (g = dL/d output)</div><code class="block" data-testid="node-derivative">` +
    `</code><div data-testid="op-inputs"></div><div data-testid="node-tensors" class="muted"></div>`;
  box.querySelector("[data-testid=op-title]").textContent =
    `${layer} op ${id}: ${o.label} (${o.op}) ${o.shape}` + (o.steps > 1 ? `, ${o.steps} time steps` : "");
  box.querySelector("[data-testid=node-forward]").textContent = o.forward;
  box.querySelector("[data-testid=node-derivative]").textContent = `${o.words}\n  ${o.derivative}`;
  box.querySelector("[data-testid=op-inputs]").textContent = "reads: " + o.inputs.map(name).join(", ");
  const t = box.querySelector("[data-testid=node-tensors]");
  if (!d || !d.ops[id]) { t.textContent = "the op's tensors could not be computed"; return; }
  t.classList.remove("muted");
  html("h3", {}, t, d.loss === null ? `on ${d.rows} sample rows`
    : `on ${d.rows} sample rows (eval mode), ${d.objective} = ${fmt(d.loss)}`);
  drawTensor(t, "value", o.value, "tensor-op-value");
  drawTensor(t, "gradient dL/d(value)", o.grad, "tensor-op-grad");
}

// backprop stepping: the current step's layer, and its op node when the steps go through ops
function markBackward() {
  const s = state.steps && state.at >= 0 ? state.steps[state.at] : null;
  for (const [k, v] of Object.entries(state.nodes)) v.g.classList.toggle("bw-current", !!s && k === s.layer);
  document.querySelectorAll("#graph .op").forEach((e) => e.classList.toggle("bw-current",
    !!s && s.op !== null && s.op !== undefined && e.dataset.testid === `op-${s.layer}-${s.op}`));
}

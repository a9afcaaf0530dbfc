// lepton_nn studio, the panels that ask the server to run the model on sample rows: a node's
// formulas, norms and tensors (x, y, dL/dy, dL/dx, W, dL/dW, the ops inside), a row's
// attributions and the global importances, and an image's saliency and feature maps.
"use strict";

function renderDetail(d, stats) {
  const box = $("node-detail");
  box.classList.remove("muted");
  box.dataset.layer = d.name;
  delete box.dataset.op; // a layer, not one of its ops
  const params = Object.entries(d.params).map(([k, s]) => `${k} ${s}`).join(", ") || "none";
  const rules = d.rules.map((r) => `${r.op}: ${r.words}\n  ${r.math}`).join("\n");
  box.innerHTML = `<b>${d.name}</b> (${d.kind}) parameters: ${params}` +
    `<div>forward</div><code class="block" data-testid="node-forward"></code>` +
    `<div>local derivative (g = dL/dy)</div><code class="block" data-testid="node-derivative"></code>` +
    `<div>ops inside</div><code class="block" data-testid="node-rules"></code>` +
    `<div data-testid="node-norms"></div><div data-testid="node-tensors" class="muted">` +
    `loading the tensors of the sample rows...</div>`;
  box.querySelector("[data-testid=node-forward]").textContent = d.forward;
  box.querySelector("[data-testid=node-derivative]").textContent = d.derivative;
  box.querySelector("[data-testid=node-rules]").textContent = rules;
  renderNorms(stats);
}
function renderNorms(stats) {
  const s = stats || {};
  const e = document.querySelector("[data-testid=node-norms]");
  if (e) e.textContent = `after the last recorded step: ||y|| ${fmt(s.value_norm)}, ` +
    `||dL/dy|| ${fmt(s.grad_norm)}, ||W|| ${fmt(s.weight_norm)}, ` +
    `||dL/dW|| ${fmt(s.weight_grad_norm)}, update/weight ${fmt(s.update_ratio)}`;
}

async function loadTensors(name) {
  const [status, t] = await getJSON("/api/tensors/" + encodeURIComponent(name));
  const box = document.querySelector("[data-testid=node-tensors]");
  const at = $("node-detail").dataset;
  if (!box || at.layer !== name || at.op !== undefined) return; // another node was clicked
  box.innerHTML = "";
  if (status !== 200) { box.textContent = t.error; return; }
  box.classList.remove("muted");
  box.dataset.loss = t.loss;
  html("h3", {}, box, t.loss === null ? `on ${t.rows} sample rows: ${t.objective}`
    : `on ${t.rows} sample rows (eval mode), ${t.objective} = ${fmt(t.loss)}`);
  const fwd = html("div", {}, box);
  t.inputs.forEach((x, i) => drawTensor(fwd, `input x${t.inputs.length > 1 ? i : ""}`, x, `tensor-x${i}`));
  drawTensor(fwd, "output y", t.output, "tensor-y");
  if (t.loss !== null) {
    html("h3", {}, box, "gradients: incoming g = dL/dy, outgoing dL/dx = J^T g (this node's share)");
    const bwd = html("div", {}, box);
    drawTensor(bwd, "incoming dL/dy", t.grad_in, "tensor-grad-in");
    t.grad_out.forEach((g, i) => drawTensor(bwd, `outgoing dL/dx${t.grad_out.length > 1 ? i : ""}`, g, `tensor-grad-out${i}`));
  }
  if (Object.keys(t.weights).length) {
    html("h3", {}, box, "parameters and this call's dL/dW");
    const w = html("div", {}, box);
    for (const [k, v] of Object.entries(t.weights)) {
      drawTensor(w, k, v, `tensor-${k}`);
      if (t.loss !== null) drawTensor(w, `dL/d ${k}`, t.weight_grads[k], `tensor-grad-${k}`);
    }
  }
  if (t.ops.length) {
    html("h3", {}, box, "the engine's ops in this call, as they ran (fused; \"+ ops\" in the graph shows them unfused)");
    const table = html("table", { "data-testid": "node-ops" }, box);
    table.innerHTML = "<tr><th>op</th><th>shape</th><th>||value||</th><th>||grad||</th></tr>";
    for (const o of t.ops) {
      const tr = html("tr", {}, table);
      for (const v of [o.op, o.shape, fmt(o.value_norm), fmt(o.grad_norm)]) html("td", {}, tr, v);
    }
  }
}

// -- attributions: one bar per feature (signed, from the middle), then the importances
function bars(parent, names, values, testid, errs) {
  const W = 460, row = 16, mid = 150;
  const svg = el("svg", { width: W, height: names.length * row + 4, "data-testid": testid }, parent);
  const top = Math.max(...values.map((v) => Math.abs(v)), 1e-12);
  const area = W - mid - 130, neg = values.some((u) => u < 0);
  const x0 = neg ? mid + area / 2 : mid, scale = (neg ? area / 2 : area) / top;
  names.forEach((n, i) => {
    const v = values[i], len = Math.abs(v) * scale;
    el("text", { x: mid - 4, y: i * row + 12, "font-size": 11, "text-anchor": "end" }, svg, n);
    el("rect", { x: v < 0 ? x0 - len : x0, y: i * row + 3, width: Math.max(len, 0.5), height: row - 5,
      fill: v < 0 ? "#3060c0" : "#c03030", "data-value": v }, svg);
    el("text", { x: W - 124, y: i * row + 12, "font-size": 10, fill: "#556" }, svg,
      fmt(v) + (errs ? ` ± ${fmt(errs[i])}` : ""));
  });
  return svg;
}
async function loadExplain() {
  const box = $("attributions");
  const [status, d] = await getJSON("/api/explain?row=" + Number($("explain-row").value || 0));
  box.innerHTML = "";
  if (status !== 200) { box.textContent = d.error; box.classList.add("muted"); return; }
  box.classList.remove("muted");
  box.dataset.row = d.row;
  html("div", {}, box, `row ${d.row} of ${d.rows}: output ${d.output.map(fmt).join(", ")}; ` +
    `${d.method}, completeness gap ${fmt(d.delta)}`);
  const shown = (v) => (v === null ? "missing" : typeof v === "number" ? fmt(v) : v);
  bars(box, d.features.map((n, i) => `${n} = ${shown(d.values[i])}`), d.attributions, "attr-bars");
  if (d.importances) {
    const imp = d.importances;
    html("h3", {}, box, `global importance over the sample rows: drop of ${imp.metric} ` +
      `(${fmt(imp.baseline_score)}) when a column is shuffled`);
    bars(box, d.features, imp.mean, "importances", imp.std);
  } else {
    html("div", { class: "muted" }, box, "global importances need labelled sample rows");
  }
}

// -- feature maps of one image: a row of small heat maps per 4-D layer output
async function loadFeatures() {
  loadSaliency();
  const box = $("feature-maps");
  const [status, d] = await getJSON("/api/features?row=" + Number($("features-row").value || 0));
  box.innerHTML = "";
  if (status !== 200) { box.textContent = d.error; box.classList.add("muted"); return; }
  if (!d.layers.length) { box.textContent = "no layer of this model makes (N, C, H, W) maps"; return; }
  box.classList.remove("muted");
  box.dataset.image = d.index;
  if (d.image) {
    html("h3", {}, box, `image ${d.index}`);
    const row = html("div", { class: "maps" }, box);
    d.image.forEach((c, i) => drawHeat(row, c, 96, 96, `image-${i}`));
  }
  for (const l of d.layers) {
    html("h3", {}, box, `${l.name} (${l.kind}) ${l.shape.join(" x ")}` +
      (l.maps.length < l.shape[0] ? `, first ${l.maps.length} channels` : ""));
    const row = html("div", { class: "maps", "data-testid": "maps-" + l.name }, box);
    l.maps.forEach((c, i) => drawHeat(row, c, 64, 64, `map-${l.name}-${i}`));
  }
}

// -- saliency of one image: the image in grey, the map over it in colour (opacity ~ |value|)
function drawOverlay(parent, base, sal, size, testid, signed) {
  const cw = size / sal.cols, ch = size / sal.rows;
  const svg = el("svg", { width: size, height: size, class: "heat", "data-testid": testid,
    "data-cells": sal.rows * sal.cols }, parent);
  const top = Math.max(Math.abs(sal.lo), Math.abs(sal.hi), 1e-12);
  const span = base.hi - base.lo || 1;
  for (let r = 0; r < sal.rows; r++) {
    for (let c = 0; c < sal.cols; c++) {
      const i = r * sal.cols + c;
      const g = Math.round(255 * ((base.values[i] ?? base.lo) - base.lo) / span);
      el("rect", { x: c * cw, y: r * ch, width: cw, height: ch, fill: `rgb(${g},${g},${g})` }, svg);
      const v = sal.values[i] ?? 0;
      el("rect", { x: c * cw, y: r * ch, width: cw, height: ch, "data-value": v,
        fill: signed && v < 0 ? "#2050ff" : "#ff2020", "fill-opacity": (0.85 * Math.abs(v) / top).toFixed(3) }, svg);
    }
  }
  return svg;
}
async function loadSaliency() {
  const box = $("saliency");
  const target = $("saliency-target").value;
  const [status, d] = await getJSON("/api/saliency?row=" + Number($("features-row").value || 0) +
    (target === "" ? "" : "&target=" + Number(target)));
  box.innerHTML = "";
  if (status !== 200) { box.textContent = d.error; box.classList.add("muted"); return; }
  box.classList.remove("muted");
  box.dataset.image = d.index;
  box.dataset.target = d.target;
  html("h3", {}, box, `image ${d.index}: output ${d.target} = ${fmt(d.score)} ` +
    `(outputs ${d.outputs.map(fmt).join(", ")})`);
  const row = html("div", { class: "maps" }, box);
  const fig = (title, fn) => { const f = html("figure", {}, row); fn(f); html("figcaption", {}, f, title); };
  fig("the image (mean of its channels)", (f) => drawOverlay(f, d.image, { ...d.image, values:
    d.image.values.map(() => 0) }, 160, "saliency-image", false));
  fig("|df/dx|: where a small change moves the output", (f) => drawOverlay(f, d.image, d.gradient, 160,
    "saliency-grad", false));
  fig(`integrated gradients (red +, blue -), completeness gap ${fmt(d.delta)}`, (f) =>
    drawOverlay(f, d.image, d.integrated, 160, "saliency-ig", true));
}

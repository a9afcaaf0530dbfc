// lepton_nn studio, drawing helpers (our own, no library): SVG elements, number format,
// line charts (the batch losses, downsampled to at most MAX_DRAWN points; the epoch logs),
// histograms, heat maps, and a tensor document (values in full, or heat map + histogram).
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const MAX_DRAWN = 800;
const COLORS = ["#c03030", "#3060c0", "#30a050", "#c08000", "#8040b0", "#308090", "#a05070"];
const $ = (id) => document.getElementById(id);

function el(tag, attrs, parent, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function html(tag, attrs, parent, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(2) : v.toFixed(4);
}
async function getJSON(url, opts) {
  const r = await fetch(url, opts);
  return [r.status, await r.json()];
}

// at most `max` points: the mean of each of `max` equal runs of the series
function downsample(pts, max) {
  if (pts.length <= max) return pts;
  const out = [], k = pts.length / max;
  for (let i = 0; i < max; i++) {
    const a = Math.floor(i * k), b = Math.max(a + 1, Math.floor((i + 1) * k));
    let s = 0;
    for (let j = a; j < b; j++) s += pts[j];
    out.push(s / (b - a));
  }
  return out;
}
// polylines of several series over one x range (index 0..n-1) in a W x H viewBox
function drawLines(svg, series, W, H) {
  svg.innerHTML = "";
  const all = series.flatMap((s) => s.values.filter((v) => v !== null));
  if (!all.length) return;
  let lo = Infinity, hi = -Infinity;
  for (const v of all) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const span = hi - lo || 1;
  const n = Math.max(...series.map((s) => s.values.length));
  series.forEach((s, k) => {
    const xy = [];
    s.values.forEach((v, i) => {
      if (v !== null) xy.push(`${(i / Math.max(n - 1, 1)) * (W - 4) + 2},${H - 4 - ((v - lo) / span) * (H - 10)}`);
    });
    el("polyline", { points: xy.join(" "), fill: "none", stroke: s.color || COLORS[k % COLORS.length],
      "stroke-width": 1.5, "vector-effect": "non-scaling-stroke", "data-series": s.name }, svg);
  });
  el("text", { x: 4, y: 10, "font-size": 9, fill: "#556" }, svg, fmt(hi));
  el("text", { x: 4, y: H - 2, "font-size": 9, fill: "#556" }, svg, fmt(lo));
}

// a histogram {counts, ...} (equal bins) into an SVG of w x h
function drawHist(svg, h, w, h0) {
  svg.innerHTML = "";
  if (!h) return;
  const top = Math.max(...h.counts, 1), bw = w / h.counts.length;
  h.counts.forEach((c, i) => el("rect", { x: i * bw + 0.5, width: Math.max(bw - 1, 0.5),
    y: h0 - (c / top) * (h0 - 2), height: (c / top) * (h0 - 2) }, svg));
}

// a colour for v in [lo, hi]: diverging blue-white-red around 0 when the range crosses 0
function heatColor(v, lo, hi) {
  if (v === null) return "#888";
  let t;
  if (lo < 0 && hi > 0) {
    const m = Math.max(-lo, hi);
    t = v / m;
    const c = Math.round(255 * (1 - Math.abs(t)));
    return t >= 0 ? `rgb(255,${c},${c})` : `rgb(${c},${c},255)`;
  }
  t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
  const c = Math.round(255 * (1 - t));
  return `rgb(${c},${Math.round(255 - 150 * t)},255)`;
}
// a heat map {rows, cols, values, lo, hi} into a new SVG of at most maxW x maxH pixels
function drawHeat(parent, hm, maxW, maxH, testid) {
  const cw = Math.max(1, Math.min(maxW / hm.cols, 12)), ch = Math.max(1, Math.min(maxH / hm.rows, 12));
  const svg = el("svg", { width: hm.cols * cw, height: hm.rows * ch, class: "heat",
    "data-testid": testid || "heat", "data-cells": hm.rows * hm.cols }, parent);
  for (let r = 0; r < hm.rows; r++) {
    for (let c = 0; c < hm.cols; c++) {
      el("rect", { x: c * cw, y: r * ch, width: cw, height: ch,
        fill: heatColor(hm.values[r * hm.cols + c], hm.lo, hm.hi) }, svg);
    }
  }
  return svg;
}

// one tensor document (see tensor_view.py): a caption, values in full or heat map + histogram
function drawTensor(parent, title, t, testid) {
  const box = html("figure", { class: "tensor", "data-testid": testid }, parent);
  if (!t) {
    html("figcaption", {}, box, `${title}: none`);
    return box;
  }
  html("figcaption", {}, box, `${title} (${t.shape.join(", ")})  ||.|| ${fmt(t.norm)}  ` +
    `min ${fmt(t.min)}  max ${fmt(t.max)}`);
  if (t.values !== null) {
    // a row per index of the first axis, the rest flattened (scalars and vectors: one row)
    const rows = !Array.isArray(t.values) ? [[t.values]]
      : Array.isArray(t.values[0]) ? t.values.map((r) => r.flat(Infinity)) : [t.values];
    const table = html("table", { "data-testid": testid + "-values" }, box);
    for (const r of rows) {
      const tr = html("tr", {}, table);
      for (const v of r) html("td", { "data-value": v }, tr, fmt(v));
    }
  } else {
    drawHeat(box, t.heat, 240, 160, testid + "-heat");
    html("div", { class: "muted" }, box, `heat map: block means of (${t.heat.shape.join(" x ")})`);
  }
  if (t.hist) {
    const svg = el("svg", { width: 160, height: 40, class: "hist", "data-testid": testid + "-hist" }, box);
    drawHist(svg, t.hist, 160, 40);
  }
  return box;
}

// Step charts (uPlot, cursor shared through uPlot's cursor sync) and heat maps on <canvas>.

import { h, fmt } from "./dom.js";
import { colour, colourRGB, MISSING_RGB, MARKER, SERIES } from "./palette.js";

const uPlot = globalThis.uPlot;

// A group of step charts with one cursor: moving over one moves all; setStep(s) puts it at step s.
export class StepCharts {
  constructor(readout) {
    this.charts = [];
    this.key = `steps-${Math.random().toString(36).slice(2)}`;
    this.readout = readout;
    this.step = null;
  }

  // x: step numbers; series: [{label, values, colour}]; markers: [{step, kind, name}]; boundary: x of a vertical rule.
  add(container, { title, x, series, markers = [], boundary = null, height = 150, bars = false }) {
    const width = Math.max(container.clientWidth || 560, 320);
    const group = this;
    const opts = {
      title,
      width,
      height,
      cursor: { sync: { key: this.key, setSeries: false }, drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: false } },
      axes: [{ label: "step", size: 36 }, { size: 50 }],
      series: [
        { label: "step", value: (u, v) => (v === null || v === undefined ? "—" : String(v)) },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: s.colour || SERIES[i % SERIES.length],
          width: 1.5,
          dash: s.dash,
          spanGaps: false,
          points: { show: x.length <= 60 },
          paths: bars ? uPlot.paths.bars({ size: [0.8, 20] }) : undefined,
          fill: bars ? (s.colour || SERIES[i % SERIES.length]) : undefined,
          value: (u, v) => fmt(v),
        })),
      ],
      hooks: {
        draw: [(u) => drawRules(u, markers, boundary)],
        setCursor: [(u) => group.cursorMoved(u)],
      },
    };
    const chart = new uPlot(opts, [x, ...series.map((s) => s.values)], container);
    chart.root.setAttribute("role", "img");
    chart.root.setAttribute("aria-label", `${title} over steps`);
    this.charts.push(chart);
    return chart;
  }

  cursorMoved(u) {
    const idx = u.cursor.idx;
    if (idx === null || idx === undefined) return;
    const step = u.data[0][idx];
    if (step === this.step) return;
    this.step = step;
    if (this.readout) {
      this.readout.dataset.step = String(step);
      this.readout.textContent = `cursor at step ${step}`;
    }
  }

  setStep(step) {
    for (const u of this.charts) {
      const left = u.valToPos(step, "x");
      if (!Number.isFinite(left)) continue;
      u.setCursor({ left, top: u.bbox.height / devicePixelRatio / 2 });
    }
    if (this.readout) {
      this.step = step;
      this.readout.dataset.step = String(step);
      this.readout.textContent = `cursor at step ${step}`;
    }
  }

  destroy() {
    for (const u of this.charts) u.destroy();
    this.charts = [];
  }
}

function drawRules(u, markers, boundary) {
  const ctx = u.ctx;
  const top = u.bbox.top;
  const bottom = u.bbox.top + u.bbox.height;
  ctx.save();
  ctx.lineWidth = devicePixelRatio;
  if (boundary !== null) {
    const x = u.valToPos(boundary, "x", true);
    ctx.strokeStyle = "#555";
    ctx.setLineDash([]);
    ctx.beginPath();
    ctx.moveTo(x, top);
    ctx.lineTo(x, bottom);
    ctx.stroke();
    ctx.fillStyle = "#555";
    ctx.font = `${11 * devicePixelRatio}px sans-serif`;
    ctx.textAlign = "right";
    ctx.fillText("prompt", x - 4 * devicePixelRatio, top + 12 * devicePixelRatio);
    ctx.textAlign = "left";
    ctx.fillText("generation", x + 4 * devicePixelRatio, top + 12 * devicePixelRatio);
  }
  ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
  for (const marker of markers) {
    if (marker.step === null || marker.step === undefined) continue;
    const x = u.valToPos(marker.step, "x", true);
    ctx.strokeStyle = MARKER[marker.kind] || "#000";
    ctx.beginPath();
    ctx.moveTo(x, top);
    ctx.lineTo(x, bottom);
    ctx.stroke();
  }
  ctx.restore();
}

// A heat map of rows (e.g. layers) × columns (e.g. steps) on a canvas, with a legend and click-to-inspect.
// onPick(row, firstColumn): offered as a "show on the charts" button; onSelect(row, firstColumn, lastColumn):
// called on every click or key move (the run page shows that layer at that step).
export function heatMap({ title, rows, palette = "viridis", log = false, domain = null, unit = "", block = 1, xLabel = "step", yLabel = "layer", columns = null, onPick = null, onSelect = null }) {
  const values = rows.flat().filter((v) => v !== null && v !== undefined).map((v) => (log ? Math.log10(v) : v));
  let lo = domain && !log ? domain[0] : Math.min(...values);
  let hi = domain && !log ? domain[1] : Math.max(...values);
  if (!(hi > lo)) hi = lo + 1;
  const nRows = rows.length;
  const nCols = Math.max(...rows.map((r) => r.length), 1);
  // One canvas pixel per cell, stretched by CSS (pixelated): the page never draws more cells than sent.
  const canvas = h("canvas", { width: nCols, height: nRows, class: "heat", tabindex: "0", "aria-label": `${title}: ${nRows} ${yLabel}s × ${nCols} columns` });
  canvas.style.height = `${Math.max(60, Math.min(260, nRows * 12))}px`;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(nCols, nRows);
  for (let r = 0; r < nRows; r++) {
    for (let c = 0; c < nCols; c++) {
      const v = rows[r][c];
      const rgb = v === null || v === undefined ? MISSING_RGB : colourRGB(palette, ((log ? Math.log10(v) : v) - lo) / (hi - lo));
      const at = (r * nCols + c) * 4;
      image.data[at] = rgb[0];
      image.data[at + 1] = rgb[1];
      image.data[at + 2] = rgb[2];
      image.data[at + 3] = 255;
    }
  }
  ctx.putImageData(image, 0, 0);
  const mark = h("span", { class: "heat-mark", hidden: true, "aria-hidden": "true" });
  const detail = h("span", { class: "pick-text" }, "Click a cell, or focus the map and use the arrow keys.");
  const show = h("button", { type: "button", class: "step-link", hidden: true }, "");
  const pickBox = h("p", { class: "pick muted", "aria-live": "polite" }, detail, " ", show);
  let at = null;
  const pick = (r, c) => {
    at = [r, c];
    // The picked cell, outlined over the canvas (in percent of it, so it follows the layout).
    Object.assign(mark.style, { left: `${(c / nCols) * 100}%`, top: `${(r / nRows) * 100}%`, width: `${100 / nCols}%`, height: `${100 / nRows}%` });
    mark.hidden = false;
    const v = rows[r] ? rows[r][c] : null;
    const first = c * block;
    const last = Math.min(first + block, columns ?? first + block) - 1;
    const span = last > first ? `${xLabel}s ${first}–${last}` : `${xLabel} ${first}`;
    detail.textContent = `${yLabel} ${r}, ${span}: ${fmt(v, 4)}${unit ? " " + unit : ""}`;
    pickBox.dataset.row = String(r);
    pickBox.dataset.col = String(first);
    if (onPick) {
      show.hidden = false;
      show.textContent = `show ${xLabel} ${first} on the charts →`;
      show.onclick = () => onPick(r, first);
    }
    if (onSelect) onSelect(r, first, last);
  };
  canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect();
    const c = Math.floor(((event.clientX - box.left) / box.width) * nCols);
    const r = Math.floor(((event.clientY - box.top) / box.height) * nRows);
    pick(Math.min(Math.max(r, 0), nRows - 1), Math.min(Math.max(c, 0), nCols - 1));
  });
  const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1], Home: [0, -Infinity], End: [0, Infinity] };
  canvas.addEventListener("keydown", (event) => {
    const move = moves[event.key];
    if (!move) return;
    event.preventDefault();
    const [r, c] = at || [0, 0];
    const step = event.shiftKey ? 10 : 1;
    const clamp = (v, n) => Math.min(Math.max(v, 0), n - 1);
    pick(clamp(at ? r + move[0] * step : 0, nRows), clamp(at ? c + move[1] * step : 0, nCols));
  });
  const legend = h("canvas", { width: 200, height: 10, class: "legend-bar", "aria-hidden": "true" });
  const lctx = legend.getContext("2d");
  for (let i = 0; i < 200; i++) {
    lctx.fillStyle = colour(palette, i / 199);
    lctx.fillRect(i, 0, 1, 10);
  }
  const tick = (v) => (log ? fmt(10 ** v, 2) : fmt(v, 2));
  const note = block > 1 ? ` · each column the mean of ${block} ${xLabel}s (downsampled on the server)` : "";
  return h(
    "figure",
    { class: "heatmap" },
    h("figcaption", { class: "muted" }, `${nRows} ${yLabel}s × ${nCols} columns${note}`),
    h("div", { class: "heat-body" },
      h("div", { class: "heat-rows", "aria-hidden": "true" }, h("span", null, `${yLabel} 0`), h("span", null, `${yLabel} ${nRows - 1}`)),
      h("div", { class: "heat-wrap" }, canvas, mark),
      h("span", null),
      h("div", { class: "heat-axis", "aria-hidden": "true" }, h("span", null, `${xLabel} 0`), h("span", null, `${xLabel} ${Math.min(nCols * block, columns ?? nCols * block) - 1}`))),
    h("div", { class: "legend" }, h("span", null, tick(lo)), legend, h("span", null, tick(hi)), h("span", { class: "muted" }, ` ${unit}`), h("span", { class: "swatch missing" }), h("span", { class: "muted" }, "no value")),
    pickBox,
  );
}

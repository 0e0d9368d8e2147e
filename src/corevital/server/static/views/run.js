// One run: header with risk band, narrative, factors, fired signals (each moves the charts' cursor
// to its step), blamed layers, step charts, tokens coloured by surprisal, heat maps, prompt
// analysis, performance, raw JSON and the HTML report download.

import { api, clear, errorBox, fileLink, fmt, fmtTime, h, riskBand, riskChip, section } from "./dom.js";
import { StepCharts, heatMap } from "./charts.js";
import { colour } from "./palette.js";
import { attentionExplorer } from "./attention.js";
import { layerDetail } from "./layer_detail.js";

const CHARTS = [
  ["entropy", "Entropy (bits)"],
  ["surprisal", "Surprisal (bits)"],
  ["margin", "Top-1 margin (p1 − p2)"],
  ["topk_mass", "Top-k mass"],
];

export async function renderRun(main, traceId) {
  const view = await api(`/api/v1/runs/${encodeURIComponent(traceId)}/view`);
  const d = view.digest;
  const id = d.trace_id || traceId;
  const readout = h("p", { class: "cursor-readout", id: "cursor-readout", "aria-live": "polite" }, "Move over a chart, or pick a signal below.");
  const charts = new StepCharts(readout);
  const chartsBox = h("div", { class: "charts", id: "step-charts" });

  const goToStep = (step) => {
    chartsBox.scrollIntoView({ block: "start" });
    charts.setStep(step);
    highlightToken(step);
  };

  const tabs = [
    ["overview", "Overview"],
    ["layers", "Layers"],
    ["prompt", "Prompt"],
    ["performance", "Performance"],
    ["raw", "Raw JSON"],
  ];
  const panels = {};
  const tabButtons = tabs.map(([key, label]) => {
    const button = h("button", { type: "button", role: "tab", id: `tab-${key}`, "aria-controls": `panel-${key}`, "aria-selected": key === "overview" ? "true" : "false" }, label);
    button.addEventListener("click", () => showTab(key));
    return button;
  });
  const tabList = h("div", { role: "tablist", class: "tabs", "aria-label": "Run sections" }, tabButtons);
  const rendered = new Set(["overview"]);
  const showTab = (key) => {
    for (const [k] of tabs) {
      panels[k].hidden = k !== key;
      document.getElementById(`tab-${k}`).setAttribute("aria-selected", k === key ? "true" : "false");
    }
    if (!rendered.has(key)) {
      rendered.add(key);
      fillPanel(key);
    }
  };
  for (const [key] of tabs) panels[key] = h("div", { role: "tabpanel", id: `panel-${key}`, "aria-labelledby": `tab-${key}`, hidden: key !== "overview" });

  const fillPanel = (key) => {
    const panel = panels[key];
    if (key === "layers") layerPanel(panel, id, goToStep);
    if (key === "prompt") {
      panel.append(...promptPanel(view, d));
      panel.append(attentionExplorer(id, d));
    }
    if (key === "performance") panel.append(performancePanel(view));
    if (key === "raw") rawPanel(panel, id);
  };

  const band = riskBand(d.risk_score);
  main.append(
    h(
      "header",
      { class: `run-head band-${band.name}` },
      h("div", null, h("h1", null, d.model_id || "unknown model"), h("p", { class: "muted mono" }, id)),
      h(
        "dl",
        { class: "facts" },
        fact("Created", fmtTime(d.created_at_utc)),
        fact("Tokens", `${fmt(d.prompt_tokens)} prompt + ${fmt(d.generated_tokens)} generated`),
        fact("Finish", d.finish_reason || "—"),
        fact("Device", [d.device, d.quantization].filter(Boolean).join(" · ") || "—"),
        fact("Risk", riskChip(d.risk_score)),
      ),
      h("div", { class: "head-links" }, fileLink(`/api/v1/runs/${encodeURIComponent(id)}/report.html`, `corevital-${id.slice(0, 8)}.html`, "Download HTML report", { class: "button" }), h("a", { class: "button", href: `#/compare?ids=${encodeURIComponent(id)}` }, "Compare with…")),
    ),
    tabList,
  );
  for (const [key] of tabs) main.append(panels[key]);

  const overview = panels.overview;
  overview.append(
    h("div", { class: "grid2" },
      section("Narrative", h("p", { class: "narrative" }, d.narrative || "No narrative in this report.")),
      section("Risk factors", factorsTable(d))),
    h("div", { class: "grid2" },
      section("Signals", signalsList(view, goToStep)),
      section("Blamed layers", blamedList(d, goToStep))),
    section("Steps", readout, chartsBox),
    section("Output, coloured by surprisal", tokensView(view, goToStep)),
  );
  const boundary = view.prompt.surprisals.length ? -0.5 : null;
  const promptX = view.prompt.surprisals.map((_, i) => i - view.prompt.surprisals.length);
  const x = [...promptX, ...view.series.entropy.map((_, i) => i)];
  const pad = (values, prompt = null) => [...(prompt || promptX.map(() => null)), ...values];
  if (!view.steps) chartsBox.append(h("p", { class: "muted" }, "This report has no generated steps."));
  else {
    for (const [key, title] of CHARTS) {
      const box = h("div", { class: "chart", dataset: { metric: key } });
      chartsBox.append(box);
      const values = pad(view.series[key], key === "surprisal" ? view.prompt.surprisals : null);
      charts.add(box, { title, x, series: [{ label: title.split(" (")[0], values }], markers: view.markers, boundary });
    }
  }
  return () => charts.destroy();
}

function fact(label, value) {
  return h("div", null, h("dt", null, label), h("dd", null, value));
}

function factorsTable(d) {
  if (!d.risk_factors || !d.risk_factors.length) return h("p", { class: "muted" }, "No risk factors.");
  const max = Math.max(...d.risk_factors.map((f) => Math.abs(f.contribution || 0)), 1e-9);
  return h("table", { class: "factors" }, h("tbody", null, d.risk_factors.map((f) =>
    h("tr", null,
      h("td", null, f.name),
      h("td", { class: "num" }, fmt(f.contribution)),
      h("td", { class: "barcell" }, f.contribution === null ? "" : h("span", { class: "bar", css: { width: `${Math.round((Math.abs(f.contribution) / max) * 100)}%` } }))),
  )));
}

function signalsList(view, goToStep) {
  if (!view.markers.length) return h("p", { class: "muted" }, "No flag, compound signal or early warning fired.");
  const kinds = { flag: "flag", compound: "compound signal", warning: "early warning" };
  return h("ul", { class: "signals", id: "signals" }, view.markers.map((m) =>
    h("li", { class: `sig sig-${m.kind}` },
      h("span", { class: "kind" }, kinds[m.kind] || m.kind), " ",
      h("strong", null, m.name.replaceAll("_", " ")), " ",
      m.step === null
        ? h("span", { class: "muted" }, "(step not recorded)")
        : h("button", { type: "button", class: "step-link", dataset: { step: String(m.step), kind: m.kind }, onclick: () => goToStep(m.step) }, `step ${m.step} →`),
      m.detail ? h("div", { class: "muted detail" }, m.detail) : null),
  ));
}

function ranges(numbers) {
  const parts = [];
  for (let i = 0; i < numbers.length; i++) {
    let j = i;
    while (j + 1 < numbers.length && numbers[j + 1] === numbers[j] + 1) j++;
    parts.push(j > i ? `${numbers[i]}–${numbers[j]}` : String(numbers[i]));
    i = j;
  }
  return parts.join(", ");
}

// Blamed layers with the same reasons, severity and first step are listed together.
function blamedList(d, goToStep) {
  if (!d.blamed_layers || !d.blamed_layers.length) return h("p", { class: "muted" }, "No layer blamed.");
  const groups = new Map();
  for (const b of d.blamed_layers) {
    const key = JSON.stringify([b.reasons || [], b.severity, b.first_step]);
    if (!groups.has(key)) groups.set(key, { ...b, layers: [] });
    groups.get(key).layers.push(b.layer);
  }
  return h("ul", { class: "blamed", id: "blamed" }, [...groups.values()].map((g) =>
    h("li", null,
      h("strong", null, `${g.layers.length > 1 ? "layers" : "layer"} ${ranges(g.layers.sort((a, b) => a - b))}`),
      g.severity === null || g.severity === undefined ? null : ` · severity ${fmt(g.severity, 2)}`, " ",
      g.first_step === null || g.first_step === undefined ? null : h("button", { type: "button", class: "step-link", dataset: { step: String(g.first_step) }, onclick: () => goToStep(g.first_step) }, `step ${g.first_step} →`),
      g.reasons && g.reasons.length ? h("ul", null, g.reasons.map((r) => h("li", null, r))) : h("span", { class: "muted" }, " (no reason recorded)")),
  ));
}

let tokenSpans = [];
function highlightToken(step) {
  for (const span of document.querySelectorAll(".tok.current")) span.classList.remove("current");
  if (tokenSpans[step]) tokenSpans[step].classList.add("current");
}

function tokensView(view, goToStep) {
  const values = view.tokens.map((t) => t.surprisal).filter((v) => v !== null);
  const hi = Math.max(...values, 1);
  tokenSpans = view.tokens.map((t, step) => {
    const top = t.top.map(([text, p]) => `  ${JSON.stringify(text)} ${fmt(p, 3)}`).join("\n");
    const title = `step ${step}\nentropy ${fmt(t.entropy)} bits\nsurprisal ${fmt(t.surprisal)} bits${top ? "\ntop-5:\n" + top : ""}`;
    const level = t.surprisal === null ? null : t.surprisal / hi;
    const span = h("span", { class: `tok lvl-${level === null ? "none" : Math.min(9, Math.floor(level * 10))}`, title, dataset: { step: String(step) } }, t.text);
    span.addEventListener("click", () => goToStep(step));
    return span;
  });
  const legend = h("div", { class: "legend" }, h("span", null, "0 bits"), ...Array.from({ length: 10 }, (_, i) => h("span", { class: `swatch lvl-${i}` })), h("span", null, `${fmt(hi, 1)} bits`), h("span", { class: "muted" }, " · hover a token for entropy, surprisal and the top-5 alternatives; click to put the cursor there"));
  if (!tokenSpans.length) return h("p", { class: "muted" }, "No generated tokens.");
  return h("div", null, legend, h("p", { class: "tokens", id: "tokens" }, tokenSpans));
}

async function layerPanel(panel, id, goToStep) {
  const loading = h("p", { class: "muted", id: "layers-loading" }, "Loading the heat maps…");
  panel.append(loading);
  try {
    const view = await api(`/api/v1/runs/${encodeURIComponent(id)}/layers`);
    const palettes = { "Hidden-state norm": "cividis" };
    const detail = layerDetail(id, view, (step) => goToStepLater(goToStep, step));
    const maps = view.heat_maps.map((m) => section(m.title, heatMap({ ...m, columns: view.steps, palette: palettes[m.title] || "viridis", onPick: (layer, step) => goToStepLater(goToStep, step), onSelect: detail.show })));
    loading.replaceWith(maps.length ? h("div", { class: "layers-grid" }, h("div", null, maps), detail.node) : h("p", { class: "muted" }, "This report has no per-layer data."));
  } catch (error) {
    loading.replaceWith(errorBox(error));
  }
  panel.dataset.loaded = "true";
}

function goToStepLater(goToStep, step) {
  // The charts live on the overview tab: switch to it, then move the cursor.
  document.getElementById("tab-overview").click();
  requestAnimationFrame(() => goToStep(step));
}

function promptPanel(view, d) {
  const out = [section("Prompt", h("pre", { class: "prompt-text" }, d.prompt_text || ""))];
  const p = view.prompt;
  if (p.surprisals.length) {
    const max = Math.max(...p.surprisals.filter((v) => v !== null), 1);
    out.push(section("Prompt token surprisal", h("p", { class: "muted" }, "Each prompt position after the first, coloured by its surprisal (bits); hover for the value."),
      h("p", { class: "prompt-bars" }, p.surprisals.map((v, i) => h("span", { class: "pbar", title: `prompt position ${i + 1}: ${fmt(v)} bits`, css: { background: v === null ? "" : colour("cividis", v / max) } })))));
  }
  if (p.transformations.length) {
    out.push(section("Layer transformations", h("table", { class: "transforms" }, h("tbody", null, p.transformations.map((v, i) => h("tr", null, h("td", null, `layer ${i} → ${i + 1}`), h("td", { class: "num" }, fmt(v))))))));
  }
  if (p.basins.length) {
    out.push(section("Basin scores", heatMap({ title: "Basin score", rows: p.basins, palette: "viridis", unit: "", xLabel: "head", yLabel: "layer" })));
  }
  if (out.length === 1) out.push(h("p", { class: "muted" }, "This report has no prompt analysis."));
  return out;
}

function performancePanel(view) {
  const perf = view.performance;
  if (!perf) return h("p", { class: "muted" }, "No performance breakdown: the run was made without --perf.");
  return section(`Performance (total ${fmt(perf.total_ms, 1)} ms)`, h("table", null, h("thead", null, h("tr", null, h("th", null, "operation"), h("th", { class: "num" }, "ms"), h("th", { class: "num" }, "%"), h("th", null, "share"))),
    h("tbody", null, perf.operations.map((op) => h("tr", null, h("td", null, op.name), h("td", { class: "num" }, fmt(op.ms, 1)), h("td", { class: "num" }, fmt(op.pct, 1)),
      h("td", { class: "barcell" }, op.pct === null ? "" : h("span", { class: "bar", css: { width: `${Math.min(100, Math.max(0, op.pct))}%` } })))))));
}

async function rawPanel(panel, id) {
  const pre = h("pre", { class: "raw", id: "raw-json" }, "Loading…");
  panel.append(h("p", null, fileLink(`/api/v1/runs/${encodeURIComponent(id)}`, `corevital-${id}.json`, "Download the JSON")), pre);
  try {
    const report = await api(`/api/v1/runs/${encodeURIComponent(id)}`);
    pre.textContent = JSON.stringify(report, null, 2);
  } catch (error) {
    pre.replaceWith(errorBox(error));
  }
}

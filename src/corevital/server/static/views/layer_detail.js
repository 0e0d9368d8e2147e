// One layer at one generated step, shown beside the heat maps when a cell is picked
// (/api/v1/runs/<id>/layers/<layer>/steps/<step>): attention and hidden-state statistics, each
// head's largest attention weight, and buttons to move to the neighbouring step or layer.

import { api, append, errorBox, fmt, h, latestOnly } from "./dom.js";
import { colour } from "./palette.js";

const ATTENTION_ROWS = [
  ["entropy_mean", "Entropy, mean over heads (nats)"],
  ["entropy_mean_normalized", "Entropy / ln(keys), mean"],
  ["entropy_min", "Entropy, lowest head (nats)"],
  ["entropy_max", "Entropy, highest head (nats)"],
  ["concentration_max", "Largest weight, most focused head"],
  ["concentration_min", "Largest weight, least focused head"],
  ["collapsed_head_count", "Collapsed heads"],
  ["collapsed_head_rate", "Collapsed-head rate"],
  ["focused_head_count", "Focused heads"],
  ["sink_mass_mean", "Weight on the first key (sink), mean"],
  ["prev_token_mass_mean", "Weight on the previous key, mean"],
  ["prev_token_mass_max", "Weight on the previous key, max"],
];
const HIDDEN_ROWS = [
  ["l2_norm_mean", "L2 norm"],
  ["mean", "Mean"],
  ["std", "Standard deviation"],
  ["max_abs", "Largest |value|"],
  ["clipped", "Clamped at ±1e6"],
  ["clip_fraction", "Share clamped"],
];

function valueTable(values, rows, id) {
  const present = rows.filter(([key]) => values && values[key] !== undefined);
  if (!present.length) return h("p", { class: "muted" }, "Not recorded.");
  return h("table", { class: "detail-table", id }, h("tbody", null, present.map(([key, label]) =>
    h("tr", { dataset: { key } }, h("th", { scope: "row" }, label), h("td", { class: "num" }, typeof values[key] === "boolean" ? (values[key] ? "yes" : "no") : fmt(values[key], 4))))));
}

// Bars scaled to the largest head (its value is written), coloured on the absolute 0–1 scale.
function headBars(weights) {
  if (!weights || !weights.length) return null;
  const top = Math.max(...weights.filter((w) => w !== null), 1e-9);
  return h("div", null,
    h("h3", null, "Largest attention weight of each head"),
    h("div", { class: "head-bars", role: "img", "aria-label": `largest weight of each of ${weights.length} heads, at most ${fmt(top, 3)}` },
      weights.map((w, head) => h("span", { class: "head-bar", title: `head ${head}: ${fmt(w, 3)}`, css: { height: `${Math.round(Math.max(0, (w ?? 0) / top) * 100)}%`, background: w === null ? "" : colour("viridis", w) } }))),
    h("div", { class: "heat-axis", "aria-hidden": "true" }, h("span", null, "head 0"), h("span", null, `tallest ${fmt(top, 3)} (colour: 0 to 1)`), h("span", null, `head ${weights.length - 1}`)));
}

export function layerDetail(id, view, showOnCharts) {
  const body = h("div", { id: "layer-detail-body" }, h("p", { class: "muted" }, "Click a heat-map cell (or focus a map and use the arrow keys) to see that layer at that step."));
  const node = h("section", { class: "card layer-detail", id: "layer-detail", "aria-live": "polite" }, h("h2", null, "Layer at a step"), body);
  const layers = Math.max(...view.heat_maps.map((m) => m.rows.length), 0);
  let timer = null;
  const nextLoad = latestOnly();

  const load = async (layer, step, last = step) => {
    const signal = nextLoad();
    node.dataset.loading = "true";
    try {
      const detail = await api(`/api/v1/runs/${encodeURIComponent(id)}/layers/${layer}/steps/${step}`, { signal });
      render(detail, last);
    } catch (error) {
      if (error.name === "AbortError") return;
      body.replaceChildren(errorBox(error));
      node.dataset.layer = String(layer);
      node.dataset.step = String(step);
    }
    delete node.dataset.loading;
  };

  const move = (layer, step) => {
    if (layer < 0 || layer >= layers || step < 0 || step >= view.steps) return;
    load(layer, step);
  };

  const render = (d, last) => {
    node.dataset.layer = String(d.layer);
    node.dataset.step = String(d.step);
    const nav = h("div", { class: "detail-nav" },
      h("button", { type: "button", disabled: d.step <= 0, onclick: () => move(d.layer, d.step - 1), "aria-label": "previous step" }, "← step"),
      h("button", { type: "button", disabled: d.step >= d.steps - 1, onclick: () => move(d.layer, d.step + 1), "aria-label": "next step" }, "step →"),
      h("button", { type: "button", disabled: d.layer <= 0, onclick: () => move(d.layer - 1, d.step), "aria-label": "previous layer" }, `↑ layer ${d.layer - 1}`),
      h("button", { type: "button", disabled: d.layer >= layers - 1, onclick: () => move(d.layer + 1, d.step), "aria-label": "next layer" }, `layer ${d.layer + 1} ↓`),
      h("button", { type: "button", class: "step-link", onclick: () => showOnCharts(d.step) }, `show step ${d.step} on the charts →`));
    body.replaceChildren();
    append(body, [
      h("p", { class: "detail-head" }, h("strong", { id: "layer-detail-title" }, `Layer ${d.layer} at step ${d.step}`), " · token ", h("span", { class: "mono tok-quote" }, JSON.stringify(d.token ?? ""))),
      last > d.step ? h("p", { class: "muted" }, `The cell is the mean of steps ${d.step}–${last}; this is step ${d.step}.`) : null,
      nav,
      h("h3", null, "Attention"),
      valueTable(d.attention, ATTENTION_ROWS, "detail-attention"),
      headBars(d.attention && d.attention.max_weight_per_head),
      d.cross_attention ? [h("h3", null, "Cross-attention"), valueTable(d.cross_attention, ATTENTION_ROWS, "detail-cross")] : null,
      h("h3", null, "Hidden state"),
      valueTable(d.hidden, HIDDEN_ROWS, "detail-hidden"),
      d.anomalies && (d.anomalies.has_nan || d.anomalies.has_inf) ? h("p", { class: "error" }, `NaN: ${d.anomalies.has_nan ? "yes" : "no"} · Inf: ${d.anomalies.has_inf ? "yes" : "no"}`) : null,
    ]);
  };

  const show = (layer, first, last) => {
    clearTimeout(timer);
    timer = setTimeout(() => load(layer, first, last), 60);
  };
  return { node, show };
}

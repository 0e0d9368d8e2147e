// Compare 2–4 runs: entropy and surprisal overlaid, a table of scalar differences, and the first
// generated step where their tokens diverge (when they share a prompt).

import { api, clear, errorBox, fmt, fmtTime, h, hashQuery, riskChip, section } from "./dom.js";
import { StepCharts } from "./charts.js";
import { SERIES } from "./palette.js";

// Each run its own colour and dash, so that lines that coincide stay visible.
const DASHES = [undefined, [7, 4], [2, 3], [10, 3, 2, 3]];

export async function renderCompare(main) {
  const ids = (hashQuery().get("ids") || "").split(",").map((s) => s.trim()).filter(Boolean);
  main.append(h("h1", null, "Compare runs"));
  if (ids.length < 2 || ids.length > 4) {
    main.append(await picker(ids));
    return null;
  }
  const query = ids.map((id) => `id=${encodeURIComponent(id)}`).join("&");
  const [comparison, ...summaries] = await Promise.all([
    api(`/api/v1/compare?${query}`),
    ...ids.map((id) => api(`/api/v1/runs/${encodeURIComponent(id)}/summary`)),
  ]);
  const runs = comparison.runs;
  const divergence = comparison.divergence;
  const divergenceText = !comparison.shared_prompt
    ? "The runs have different prompts: their tokens are not compared."
    : divergence.identical
      ? "The runs generated identical tokens."
      : `The tokens first diverge at generated step ${divergence.step} (common prefix of ${divergence.common_prefix} tokens).`;
  main.append(
    h("p", { class: "divergence", id: "divergence", dataset: { step: divergence && divergence.step !== null ? String(divergence.step) : "" } }, divergenceText),
    section("Runs", legend(runs)),
  );
  const readout = h("p", { class: "cursor-readout", id: "cursor-readout", "aria-live": "polite" }, "Move over a chart.");
  const chartsBox = h("div", { class: "charts" });
  main.append(section("Steps", readout, chartsBox), section("Scalar differences", scalarTable(runs)));
  const charts = new StepCharts(readout);
  const length = Math.max(...summaries.map((s) => (s.entropy || []).length), 0);
  const x = Array.from({ length }, (_, i) => i);
  const markers = divergence && divergence.step !== null ? [{ step: divergence.step, kind: "divergence" }] : [];
  for (const [key, title] of [["entropy", "Entropy (bits)"], ["surprisal", "Surprisal (bits)"]]) {
    const box = h("div", { class: "chart", dataset: { metric: key } });
    chartsBox.append(box);
    charts.add(box, {
      title,
      x,
      markers,
      series: summaries.map((s, i) => ({ label: `run ${i + 1}`, colour: SERIES[i], dash: DASHES[i], values: x.map((step) => (s[key] || [])[step] ?? null) })),
    });
  }
  if (markers.length) charts.setStep(markers[0].step);
  return () => charts.destroy();
}

function legend(runs) {
  return h("ol", { class: "run-legend" }, runs.map((run, i) =>
    h("li", null,
      h("span", { class: "swatch", css: { background: SERIES[i] } }), " ",
      h("a", { href: `#/run/${encodeURIComponent(run.trace_id)}` }, `run ${i + 1}: ${run.trace_id.slice(0, 8)}`),
      ` · ${run.model_id} · ${fmtTime(run.created_at_utc)} `,
      h("div", { class: "muted preview" }, run.output_text.slice(0, 200))),
  ));
}

function scalarTable(runs) {
  const rows = [
    ["risk score", (r) => r.risk_score, true],
    ["failure risk (early warning)", (r) => r.failure_risk, true],
    ["generated tokens", (r) => r.generated_tokens, true],
    ["entropy mean", (r) => r.entropy.mean, true],
    ["entropy p90", (r) => r.entropy.p90, true],
    ["surprisal mean", (r) => r.surprisal.mean, true],
    ["surprisal p90", (r) => r.surprisal.p90, true],
    ["finish reason", (r) => r.finish_reason, false],
    ["flags", (r) => r.flags.join(", ") || "none", false],
    ["compound signals", (r) => r.compound_signals.join(", ") || "none", false],
    ["early warnings", (r) => r.warning_signals.join(", ") || "none", false],
    ["blamed layers", (r) => r.blamed_layers.join(", ") || "none", false],
  ];
  const head = h("tr", null, h("th", { scope: "col" }, ""), runs.map((_, i) => h("th", { scope: "col" }, `run ${i + 1}`)));
  const body = rows.map(([label, get, numeric]) => {
    const base = get(runs[0]);
    return h("tr", null, h("th", { scope: "row" }, label), runs.map((run, i) => {
      const value = get(run);
      if (!numeric) return h("td", null, value ?? "—");
      const delta = i > 0 && typeof value === "number" && typeof base === "number" ? value - base : null;
      return h("td", { class: "num" }, label === "risk score" ? riskChip(value) : fmt(value), delta === null ? null : h("small", { class: "delta" }, ` (${delta >= 0 ? "+" : ""}${fmt(delta)})`));
    }));
  });
  return h("table", { class: "scalars", id: "scalars" }, h("thead", null, head), h("tbody", null, body));
}

async function picker(ids) {
  const chosen = new Set(ids);
  const box = h("div", null, h("p", null, "Choose 2 to 4 runs, then Compare (or select them on the Runs page)."));
  try {
    const page = await api("/api/v1/runs?limit=50");
    const button = h("button", { type: "button", class: "primary", id: "compare-go", disabled: true }, "Compare");
    const update = () => (button.disabled = chosen.size < 2 || chosen.size > 4);
    button.addEventListener("click", () => (location.hash = `#/compare?ids=${[...chosen].map(encodeURIComponent).join(",")}`));
    box.append(h("ul", { class: "pick-list" }, page.runs.map((run) => {
      const input = h("input", { type: "checkbox", checked: chosen.has(run.trace_id), dataset: { traceId: run.trace_id } });
      input.addEventListener("change", () => { input.checked ? chosen.add(run.trace_id) : chosen.delete(run.trace_id); update(); });
      return h("li", null, h("label", null, input, ` ${fmtTime(run.created_at_utc)} · ${run.model_id} · `, riskChip(run.risk_score), ` · ${run.prompt_preview || ""}`));
    })), button);
    update();
  } catch (error) {
    box.append(errorBox(error));
  }
  return box;
}

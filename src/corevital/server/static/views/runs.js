// The runs page: filters (kept in the URL), sort, cursor pages, a risk histogram and a compare picker.

import { api, clear, errorBox, fmt, fmtTime, h, hashQuery, latestOnly, riskBand, riskChip, section, tail } from "./dom.js";

const FLAGS = ["nan", "inf", "attention_collapse", "repetition_loop", "mid_layer_anomaly"];
const FLAG_FIELDS = {
  nan: "nan_detected",
  inf: "inf_detected",
  attention_collapse: "attention_collapse_detected",
  repetition_loop: "repetition_loop_detected",
  mid_layer_anomaly: "mid_layer_anomaly_detected",
};
const FILTERS = ["model_id", "since", "until", "min_risk", "max_risk"];

export const selected = new Set();
const BAND_COLOURS = { low: "#0072b2", medium: "#e69f00", high: "#c1272d" };

function filterParams(query) {
  const params = new URLSearchParams();
  for (const key of FILTERS) if (query.get(key)) params.set(key, query.get(key));
  for (const flag of query.getAll("flag")) params.append("flag", flag);
  return params;
}

export async function renderRuns(main) {
  const query = hashQuery();
  const filters = filterParams(query);
  const form = filterForm(query);
  const histogram = h("div", { class: "histogram" });
  const table = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  const compareButton = h("button", { type: "button", class: "primary", id: "compare-selected", disabled: true }, "Compare selected");
  const selection = h("span", { class: "muted", id: "selection" });
  const updateSelection = () => {
    compareButton.disabled = selected.size < 2 || selected.size > 4;
    selection.textContent = `${selected.size} selected (2–4 to compare)`;
  };
  compareButton.addEventListener("click", () => {
    location.hash = `#/compare?ids=${[...selected].map(encodeURIComponent).join(",")}`;
  });
  updateSelection();
  main.append(
    h("h1", null, "Runs"),
    h("div", { class: "runs-top" }, section("Filters", form), section("Risk of the matching runs", histogram)),
    h("div", { class: "toolbar" }, compareButton, selection),
    table,
    pager,
  );
  loadHistogram(histogram, filters);
  const cursors = [null];
  const nextLoad = latestOnly(); // a newer click on the pager aborts the page being loaded
  const load = async (index) => {
    const params = new URLSearchParams(filters);
    params.set("sort", query.get("sort") || "time");
    params.set("order", query.get("order") || "desc");
    params.set("limit", query.get("limit") || "50");
    if (cursors[index]) params.set("cursor", cursors[index]);
    const signal = nextLoad();
    clear(table).append(h("p", { class: "muted" }, "Loading…"));
    try {
      const page = await api(`/api/v1/runs?${params}`, { signal });
      if (signal.aborted) return;
      cursors[index + 1] = page.next_cursor;
      clear(table).append(runsTable(page.runs, updateSelection));
      clear(pager).append(
        h("button", { type: "button", disabled: index === 0, onclick: () => load(index - 1) }, "← Previous page"),
        h("span", { class: "muted" }, ` page ${index + 1} `),
        h("button", { type: "button", id: "next-page", disabled: !page.next_cursor, onclick: () => load(index + 1) }, "Next page →"),
      );
    } catch (error) {
      if (error.name !== "AbortError") clear(table).append(errorBox(error));
    }
  };
  await load(0);
}

function filterForm(query) {
  const input = (name, label, attrs = {}) =>
    h("label", null, label, h("input", { name, id: `f-${name}`, value: query.get(name) || "", ...attrs }));
  const models = h("datalist", { id: "models" });
  api("/api/v1/models").then((data) => {
    for (const group of data.groups || []) models.append(h("option", { value: group.key ?? group.model_id ?? "" }));
  }).catch(() => {});
  const flags = FLAGS.map((flag) =>
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "flag", value: flag, checked: query.getAll("flag").includes(flag) }), flag.replaceAll("_", " ")),
  );
  const select = (name, label, options) =>
    h("label", null, label, h("select", { name, id: `f-${name}` }, options.map(([value, text]) => h("option", { value, selected: (query.get(name) || options[0][0]) === value }, text))));
  const form = h(
    "form",
    { class: "filters", id: "filters" },
    input("model_id", "Model", { list: "models", placeholder: "any model", autocomplete: "off" }),
    models,
    input("since", "From (UTC)", { type: "datetime-local" }),
    input("until", "To (UTC)", { type: "datetime-local" }),
    input("min_risk", "Risk ≥", { type: "number", min: 0, max: 1, step: 0.05, placeholder: "0" }),
    input("max_risk", "Risk ≤", { type: "number", min: 0, max: 1, step: 0.05, placeholder: "1" }),
    h("fieldset", null, h("legend", null, "Flags set"), flags),
    select("sort", "Sort by", [["time", "time"], ["risk", "risk"]]),
    select("order", "Order", [["desc", "newest / riskiest first"], ["asc", "oldest / safest first"]]),
    select("limit", "Per page", [["50", "50"], ["20", "20"], ["100", "100"], ["500", "500"]]),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Apply"), h("a", { href: "#/runs", class: "button" }, "Reset")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value !== "") params.append(key, value);
    location.hash = `#/runs?${params}`;
  });
  return form;
}

function runsTable(runs, onSelect) {
  if (!runs.length) return h("p", { class: "muted", id: "no-runs" }, "No run matches these filters.");
  const head = h("tr", null, ["", "Created (UTC)", "Model", "Prompt", "Risk", "Flags", "Tokens", "Finish"].map((t) => h("th", { scope: "col" }, t)));
  const rows = runs.map((run) => {
    const flags = FLAGS.filter((flag) => run[FLAG_FIELDS[flag]]);
    const box = h("input", { type: "checkbox", "aria-label": `select run ${run.trace_id.slice(0, 8)} to compare`, checked: selected.has(run.trace_id) });
    box.addEventListener("change", () => {
      if (box.checked) selected.add(run.trace_id);
      else selected.delete(run.trace_id);
      onSelect();
    });
    return h(
      "tr",
      { dataset: { traceId: run.trace_id } },
      h("td", null, box),
      h("td", null, h("a", { href: `#/run/${encodeURIComponent(run.trace_id)}`, class: "run-link", title: run.trace_id }, fmtTime(run.created_at_utc).replace(" UTC", ""))),
      h("td", { class: "model" }, tail(run.model_id)),
      h("td", { class: "preview" }, run.prompt_preview || ""),
      h("td", null, riskChip(run.risk_score)),
      h("td", null, flags.length ? flags.map((flag) => h("span", { class: "flag" }, flag.replaceAll("_", " "))) : h("span", { class: "muted" }, "none")),
      h("td", { class: "num" }, `${fmt(run.prompt_tokens)} + ${fmt(run.generated_tokens)}`),
      h("td", null, run.finish_reason || "—"),
    );
  });
  return h("table", { class: "runs", id: "runs-table" }, h("thead", null, head), h("tbody", null, rows));
}

async function loadHistogram(container, filters) {
  try {
    const data = await api(`/api/v1/risk-histogram?${filters}`);
    const max = Math.max(...data.counts, 1);
    const width = 380;
    const height = 120;
    const canvas = h("canvas", { width, height, id: "risk-histogram", role: "img", "aria-label": `risk histogram of ${data.runs} runs` });
    const ctx = canvas.getContext("2d");
    const bar = width / data.counts.length;
    data.counts.forEach((count, i) => {
      const barH = (count / max) * (height - 16);
      ctx.fillStyle = BAND_COLOURS[riskBand((i + 0.5) / data.counts.length).name];
      ctx.fillRect(i * bar + 1, height - 14 - barH, bar - 2, barH);
    });
    ctx.fillStyle = "#333";
    ctx.font = "11px sans-serif";
    ctx.fillText("0", 0, height - 2);
    ctx.fillText("0.5", width / 2 - 8, height - 2);
    ctx.fillText("1", width - 8, height - 2);
    ctx.fillText(String(max), 2, 10);
    const note = `${data.runs} runs${data.unscored ? `, ${data.unscored} without a score` : ""}${data.capped ? " (first 10,000)" : ""}; tallest bar ${max}`;
    clear(container).append(canvas, h("p", { class: "muted" }, note));
  } catch (error) {
    clear(container).append(errorBox(error));
  }
}

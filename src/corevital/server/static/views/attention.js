// The attention explorer of the Prompt tab (/api/v1/runs/<id>/attention): pick a prompt token,
// a layer and a head (or all heads) to see which prompt tokens it attends to and which attend to
// it, from the report's sparse prompt attention (the strongest entries of each head); and the
// heads whose basin score says they skip the middle of the prompt.

import { api, errorBox, fmt, h, latestOnly, section } from "./dom.js";
import { colour } from "./palette.js";

const SHOWN_ANOMALIES = 24;

function tokenLabel(info, i) {
  const text = info.token_texts[i];
  return text === null || text === undefined ? `#${i}` : text;
}

// A token in a sentence or a list: its quoted text and position, or only its position.
function tokenName(info, i) {
  const text = info.token_texts[i];
  return text === null || text === undefined ? [h("span", { class: "mono" }, `#${i}`)] : [h("span", { class: "mono" }, JSON.stringify(text)), ` #${i}`];
}

export function attentionExplorer(id, digest) {
  const node = section("Attention explorer", h("p", { class: "muted", id: "attention-loading" }, "Loading the prompt's attention…"));
  node.id = "attention";
  node.classList.add("attention");
  load(node, id).catch((error) => node.append(errorBox(error)));
  return node;
}

async function load(node, id) {
  const info = await api(`/api/v1/runs/${encodeURIComponent(id)}/attention`);
  node.querySelector("#attention-loading").remove();
  if (!info.layers) {
    node.append(h("p", { class: "muted", id: "attention-none" }, "This report has no sparse prompt attention (it is kept in full capture, for prompts of at least a few tokens)."));
    node.dataset.loaded = "true";
    return;
  }
  const layerSelect = h("select", { id: "attention-layer", name: "layer" }, Array.from({ length: info.layers }, (_, l) => h("option", { value: String(l) }, `layer ${l}`)));
  const headSelect = h("select", { id: "attention-head", name: "head" });
  const fillHeads = () => {
    const layer = Number(layerSelect.value);
    const current = headSelect.value;
    headSelect.replaceChildren(h("option", { value: "" }, "all heads (mean)"), ...Array.from({ length: info.heads[layer] }, (_, k) => h("option", { value: String(k) }, `head ${k}`)));
    if ([...headSelect.options].some((o) => o.value === current)) headSelect.value = current;
  };
  fillHeads();
  const direction = h("select", { id: "attention-direction", name: "direction" }, h("option", { value: "attends_to" }, "what it attends to"), h("option", { value: "attended_by" }, "what attends to it"));
  const result = h("div", { class: "attention-result", id: "attention-result", "aria-live": "polite" }, h("p", { class: "muted" }, "Click a prompt token."));
  let selected = null;
  let answer = null;
  const chips = Array.from({ length: info.prompt_tokens }, (_, i) => {
    const chip = h("button", { type: "button", class: "ptok", dataset: { index: String(i) }, title: `prompt token ${i}, id ${info.token_ids[i] ?? "?"}`, "aria-pressed": "false" }, tokenLabel(info, i));
    chip.addEventListener("click", () => select(i));
    return chip;
  });

  const paint = () => {
    const weights = new Map();
    if (answer) for (const row of answer.query[direction.value]) weights.set(row.token, row.weight);
    const top = Math.max(...weights.values(), 1e-9);
    for (const [i, chip] of chips.entries()) {
      const w = weights.get(i);
      chip.setAttribute("aria-pressed", i === selected ? "true" : "false");
      chip.classList.toggle("hit", w !== undefined);
      chip.style.background = w === undefined ? "" : colour("viridis", 0.25 + 0.75 * (w / top));
      chip.style.color = w !== undefined && w / top > 0.55 ? "#000" : w !== undefined ? "#fff" : "";
    }
  };

  const listOf = (rows, heading, key) => h("div", null,
    h("h3", null, heading),
    rows.length
      ? h("table", { class: "attention-list", id: `attention-${key}` }, h("thead", null, h("tr", null, h("th", null, "token"), h("th", { class: "num" }, "weight"), h("th", { class: "num" }, answer.query.head === null ? "heads" : "head"))),
        h("tbody", null, rows.map((row) => h("tr", { dataset: { token: String(row.token) } },
          h("td", null, h("button", { type: "button", class: "linkish", onclick: () => select(row.token) }, tokenName(info, row.token))),
          h("td", { class: "num" }, fmt(row.weight, 3)),
          h("td", { class: "num" }, answer.query.head === null ? `${row.heads}/${answer.query.layer_heads}` : String(row.head))))))
      : h("p", { class: "muted" }, "No stored entry."));

  const show = () => {
    const q = answer.query;
    const scope = q.head === null ? `layer ${q.layer}, all ${q.layer_heads} heads (weights averaged over them)` : `layer ${q.layer}, head ${q.head}`;
    result.dataset.token = String(q.token);
    result.dataset.layer = String(q.layer);
    result.dataset.head = q.head === null ? "all" : String(q.head);
    result.replaceChildren(
      h("p", null, h("strong", null, "Token "), tokenName(info, q.token), ` · ${scope}`),
      h("div", { class: "grid2" }, listOf(q.attends_to, "It attends to", "attends-to"), listOf(q.attended_by, "Attended to by", "attended-by")),
    );
    paint();
  };

  const nextSelect = latestOnly();
  const select = async (i) => {
    selected = i;
    const params = new URLSearchParams({ token: String(i), layer: layerSelect.value });
    if (headSelect.value !== "") params.set("head", headSelect.value);
    const signal = nextSelect();
    result.dataset.loading = "true";
    try {
      answer = await api(`/api/v1/runs/${encodeURIComponent(id)}/attention?${params}`, { signal });
      show();
    } catch (error) {
      if (error.name === "AbortError") return; // a newer choice is loading: its flag stays
      result.replaceChildren(errorBox(error));
    }
    delete result.dataset.loading;
  };
  layerSelect.addEventListener("change", () => {
    fillHeads();
    if (selected !== null) select(selected);
  });
  headSelect.addEventListener("change", () => selected !== null && select(selected));
  direction.addEventListener("change", paint);

  const anomalies = info.basin_anomalies;
  const anomalyList = anomalies.length
    ? h("ul", { class: "anomalies", id: "basin-anomalies" }, anomalies.slice(0, SHOWN_ANOMALIES).map((a) =>
        h("li", null, h("button", { type: "button", class: "linkish", dataset: { layer: String(a.layer), head: String(a.head) }, onclick: () => {
          layerSelect.value = String(a.layer);
          fillHeads();
          headSelect.value = String(a.head);
          if (selected !== null) select(selected);
          else result.replaceChildren(h("p", { class: "muted" }, `Layer ${a.layer}, head ${a.head} chosen: click a prompt token.`));
        } }, `layer ${a.layer}, head ${a.head}`), ` · basin score ${fmt(a.score, 3)}`)),
        anomalies.length > SHOWN_ANOMALIES ? h("li", { class: "muted" }, `and ${anomalies.length - SHOWN_ANOMALIES} more`) : null)
    : h("p", { class: "muted" }, "None: every head with a score spreads some attention over the middle of the prompt.");

  const known = info.token_texts.filter((t) => t !== null && t !== undefined).length;
  node.append(
    h("p", { class: "muted" }, `From the strongest stored entries of each head (${info.entries} in all; weaker ones are not in the report). `,
      known < info.prompt_tokens ? `Reports keep no prompt token strings: a token is shown by its text where the run generated or ranked the same token id (${known} of ${info.prompt_tokens}), else by its position #i; hover for its id.` : ""),
    h("div", { class: "filters attention-controls" },
      h("label", { for: "attention-layer" }, "Layer", layerSelect),
      h("label", { for: "attention-head" }, "Head", headSelect),
      h("label", { for: "attention-direction" }, "Colour the tokens by", direction)),
    h("div", { class: "ptoks", id: "attention-tokens", role: "group", "aria-label": "Prompt tokens" }, chips),
    result,
    h("h3", null, `Basin anomalies: heads that skip the middle of the prompt (basin score below ${info.basin_threshold})`),
    anomalyList,
  );
  node.dataset.loaded = "true";
}

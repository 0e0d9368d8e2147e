// Runs as they land: the server's event stream (/api/v1/events), newest on top.

import { fmt, fmtTime, h, riskChip, section } from "./dom.js";

export async function renderLive(main) {
  const status = h("p", { class: "muted", id: "live-status", "aria-live": "polite" }, "Connecting…");
  const list = h("tbody", { id: "live-rows" });
  main.append(
    h("h1", null, "Live"),
    section("New runs", status, h("table", { class: "runs" }, h("thead", null, h("tr", null, ["Created", "Model", "Prompt", "Risk", "Tokens"].map((t) => h("th", { scope: "col" }, t)))), list)),
  );
  const source = new EventSource("/api/v1/events");
  let count = 0;
  source.addEventListener("open", () => (status.textContent = "Waiting for new runs…"));
  source.addEventListener("error", () => (status.textContent = "Disconnected; retrying…"));
  source.addEventListener("run", (event) => {
    const run = JSON.parse(event.data);
    count += 1;
    status.textContent = `${count} new run${count === 1 ? "" : "s"} since this page opened.`;
    list.prepend(h("tr", null,
      h("td", null, h("a", { href: `#/run/${encodeURIComponent(run.trace_id)}` }, fmtTime(run.created_at_utc))),
      h("td", null, run.model_id),
      h("td", { class: "preview" }, run.prompt_preview || ""),
      h("td", null, riskChip(run.risk_score)),
      h("td", { class: "num" }, `${fmt(run.prompt_tokens)} + ${fmt(run.generated_tokens)}`)));
  });
  return () => source.close();
}

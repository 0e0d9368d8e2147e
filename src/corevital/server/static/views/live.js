// The Live page: "Try a prompt" (when the server was started with --model: a run streamed step by
// step, with a Stop button), and runs as they are stored (the server's event stream), newest on top.

import { api, errorBox, fmt, fmtTime, h, riskBand, riskChip, section, streamEvents } from "./dom.js";
import { SERIES } from "./palette.js";

const uPlot = globalThis.uPlot;
const SURPRISAL_TOP = 15; // bits: the darkest token colour

export async function renderLive(main) {
  const aborts = new AbortController();
  const info = await api("/api/live");
  main.append(h("h1", null, "Live"));
  const tryBox = info.enabled ? tryPrompt(info, aborts.signal) : disabledNote();
  main.append(tryBox.node, newRuns(aborts.signal));
  return () => {
    aborts.abort();
    tryBox.destroy();
  };
}

function disabledNote() {
  const node = section(
    "Try a prompt",
    h("p", { id: "live-disabled" }, "This server was started without a model, so it only shows stored runs."),
    h("p", { class: "muted" }, "To try prompts here, start it with a model: ", h("code", null, "corevital serve --model default"), " (the embedded SmolLM2-135M-Instruct) or ", h("code", null, "--model <Hugging Face id or directory>"), ". Each run is stored like any other."),
  );
  return { node, destroy() {} };
}

function numberField(id, label, props) {
  const input = h("input", { type: "number", id, name: id, ...props });
  return [h("label", { for: id }, label, input), input];
}

function tryPrompt(info, pageSignal) {
  const limits = info.limits;
  const defaults = info.defaults;
  const prompt = h("textarea", { id: "live-prompt", name: "prompt", rows: 3, maxlength: limits.max_prompt_chars, required: true, placeholder: "Write a prompt, then Generate (Ctrl+Enter)." });
  const [maxLabel, maxInput] = numberField("live-max", "Max new tokens", { min: 1, max: limits.max_new_tokens, step: 1, value: defaults.max_new_tokens });
  const [tempLabel, tempInput] = numberField("live-temperature", "Temperature", { min: 0, max: limits.max_temperature, step: 0.1, value: defaults.temperature });
  const [seedLabel, seedInput] = numberField("live-seed", "Seed", { min: 0, step: 1, value: defaults.seed });
  const ignoreEos = h("input", { type: "checkbox", id: "live-ignore-eos", name: "ignore_eos" });
  const start = h("button", { type: "submit", class: "primary", id: "live-start" }, "Generate");
  const stop = h("button", { type: "button", id: "live-stop", disabled: true }, "Stop");
  const form = h(
    "form",
    { id: "live-form", class: "live-form" },
    h("label", { for: "live-prompt", class: "wide" }, "Prompt", prompt),
    h("div", { class: "filters" }, maxLabel, tempLabel, seedLabel, h("label", { class: "check", for: "live-ignore-eos" }, ignoreEos, "Keep going past end-of-sequence"), h("div", { class: "buttons" }, start, stop)),
  );
  const status = h("p", { id: "live-run-status", class: "cursor-readout", "aria-live": "polite" }, "No run yet.");
  const tokens = h("p", { id: "live-tokens", class: "tokens live-tokens", "aria-label": "Generated tokens" });
  const warnings = h("ul", { id: "live-warnings", class: "signals" });
  const noWarning = h("p", { class: "muted", id: "live-no-warning" }, "None so far.");
  const final = h("div", { id: "live-final" });
  const chartBox = h("div", { class: "chart", id: "live-chart" });
  const node = section(
    `Try a prompt on ${info.model}`,
    form,
    status,
    h("div", { class: "live-grid" },
      h("div", null, h("h3", null, "Output, coloured by surprisal"), legend(), tokens),
      h("div", null, h("h3", null, "Entropy and running risk"), chartBox, h("h3", null, "Early warnings as they fire"), noWarning, warnings)),
    final,
  );

  let chart = null;
  let runId = null;
  let running = null; // AbortController of the current run's stream
  const data = [[], [], []];
  let drawPending = false;
  const redraw = () => {
    if (drawPending || !chart) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      if (chart) chart.setData(data);
    });
  };
  const makeChart = () => {
    if (chart) chart.destroy();
    data.forEach((column) => (column.length = 0));
    chart = new uPlot(
      {
        width: Math.max(chartBox.clientWidth || 480, 320),
        height: 180,
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: false }, risk: { range: [0, 1] } },
        axes: [{ label: "step", size: 36, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }, { label: "bits", size: 50 }, { scale: "risk", side: 1, label: "risk", size: 50, grid: { show: false } }],
        series: [
          { label: "step" },
          { label: "entropy (bits)", stroke: SERIES[0], width: 1.5, value: (u, v) => fmt(v) },
          { label: "running risk (online estimate)", scale: "risk", stroke: SERIES[1], width: 1.5, dash: [5, 3], value: (u, v) => fmt(v) },
        ],
      },
      data,
      chartBox,
    );
    chart.root.setAttribute("role", "img");
    chart.root.setAttribute("aria-label", "Entropy and running risk of the live run over steps");
  };

  const setRunning = (on) => {
    start.disabled = on;
    stop.disabled = !on;
    form.dataset.running = on ? "true" : "false";
  };

  const onStep = (event) => {
    const step = event.step_index;
    data[0].push(step);
    data[1].push(event.entropy);
    data[2].push(event.running_risk);
    redraw();
    const level = event.surprisal === null ? "none" : Math.min(9, Math.floor((event.surprisal / SURPRISAL_TOP) * 10));
    const title = `step ${step}\nentropy ${fmt(event.entropy)} bits\nsurprisal ${fmt(event.surprisal)} bits\nrunning risk ${fmt(event.running_risk)}`;
    tokens.append(h("span", { class: `tok lvl-${level}`, title, dataset: { step: String(step) } }, event.token_text ?? ""));
    for (const signal of event.warning_signals || []) {
      noWarning.hidden = true;
      warnings.append(h("li", { class: "sig sig-warning" }, h("span", { class: "kind" }, "early warning"), " ", h("strong", null, signal.replaceAll("_", " ")), ` at step ${step}`));
    }
    const band = riskBand(event.running_risk);
    status.dataset.step = String(step);
    status.textContent = `Generating… step ${step} · token ${JSON.stringify(event.token_text ?? "")} · entropy ${fmt(event.entropy)} bits · running risk ${fmt(event.running_risk, 2)} (${band.label})`;
  };

  const onFinal = (summary) => {
    if (!noWarning.hidden) noWarning.textContent = "None fired.";
    const reason = summary.finish_reason || "—";
    status.textContent = `Finished: ${reason} after ${summary.generated_tokens} tokens.`;
    status.dataset.finish = reason;
    final.replaceChildren(
      h("p", { class: "live-done" },
        h("strong", null, reason === "stopped_by_callback" ? "Stopped by you" : "Finished"), ` (${reason}) · ${summary.generated_tokens} tokens · risk `,
        riskChip(summary.risk_score), " · ",
        h("a", { id: "live-open-run", href: `#/run/${encodeURIComponent(summary.trace_id)}` }, "Open the stored run →")),
    );
    if (summary.narrative) final.append(h("p", { class: "narrative muted" }, summary.narrative));
  };

  // Start a run (existing: the id of one already generating, which this page then follows).
  const run = async (existing = null) => {
    final.replaceChildren();
    tokens.replaceChildren();
    warnings.replaceChildren();
    noWarning.hidden = false;
    noWarning.textContent = "None so far.";
    delete status.dataset.finish;
    delete status.dataset.step;
    status.textContent = "Starting…";
    setRunning(true);
    makeChart();
    running = new AbortController();
    const signal = AbortSignal.any ? AbortSignal.any([running.signal, pageSignal]) : running.signal;
    try {
      const started = existing
        ? { run_id: existing, events: `/api/live/runs/${encodeURIComponent(existing)}/events` }
        : await api("/api/live/runs", {
            body: {
              prompt: prompt.value,
              max_new_tokens: Number(maxInput.value),
              temperature: Number(tempInput.value),
              seed: Number(seedInput.value),
              ignore_eos: ignoreEos.checked,
            },
          });
      runId = started.run_id;
      form.dataset.runId = runId;
      status.textContent = existing ? "A run started elsewhere is generating: following it (Stop stops it)…" : "Generating…";
      await streamEvents(started.events, {
        signal,
        until: (kind) => kind === "final" || kind === "error",
        onEvent: (kind, text) => {
          const event = JSON.parse(text);
          if (kind === "step") onStep(event);
          else if (kind === "final") onFinal(event);
          else if (kind === "error") final.replaceChildren(errorBox(`The run failed: ${event.detail}`));
        },
        onState: (state) => {
          if (state === "retrying") status.textContent = "Disconnected; reconnecting…";
        },
      });
    } catch (error) {
      if (!signal.aborted) {
        status.textContent = "No run.";
        final.replaceChildren(errorBox(error));
      }
    } finally {
      setRunning(false);
      runId = null;
    }
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!prompt.value.trim()) return;
    run();
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener("click", async () => {
    if (!runId) return;
    stop.disabled = true;
    status.textContent = `Stopping… ${status.textContent}`;
    try {
      await api(`/api/live/runs/${encodeURIComponent(runId)}/stop`, { body: {} });
    } catch (error) {
      final.replaceChildren(errorBox(error));
    }
  });
  setRunning(false);
  if (info.current) run(info.current); // a run started before this page opened: show it, offer Stop
  return {
    node,
    destroy() {
      if (chart) chart.destroy();
      chart = null;
    },
  };
}

function legend() {
  return h("div", { class: "legend" }, h("span", null, "0 bits"), ...Array.from({ length: 10 }, (_, i) => h("span", { class: `swatch lvl-${i}` })), h("span", null, `${SURPRISAL_TOP}+ bits`), h("span", { class: "muted" }, " · hover a token for its values"));
}

function newRuns(signal) {
  const status = h("p", { class: "muted", id: "live-status", "aria-live": "polite" }, "Connecting…");
  const list = h("tbody", { id: "live-rows" });
  let count = 0;
  streamEvents("/api/v1/events", {
    signal,
    onState: (state) => {
      if (state === "open" && count === 0) status.textContent = "Waiting for new runs…";
      if (state === "retrying") status.textContent = "Disconnected; retrying…";
    },
    onEvent: (kind, text) => {
      if (kind !== "run") return;
      const run = JSON.parse(text);
      count += 1;
      window.dispatchEvent(new Event("corevital:runs-changed")); // the top bar's run count
      status.textContent = `${count} new run${count === 1 ? "" : "s"} since this page opened.`;
      list.prepend(h("tr", null,
        h("td", null, h("a", { href: `#/run/${encodeURIComponent(run.trace_id)}` }, fmtTime(run.created_at_utc))),
        h("td", null, run.model_id),
        h("td", { class: "preview" }, run.prompt_preview || ""),
        h("td", null, riskChip(run.risk_score)),
        h("td", null, run.finish_reason || "—"),
        h("td", { class: "num" }, `${fmt(run.prompt_tokens)} + ${fmt(run.generated_tokens)}`)));
    },
  }).catch((error) => status.replaceWith(errorBox(error)));
  return section("New runs", status, h("table", { class: "runs" }, h("thead", null, h("tr", null, ["Created", "Model", "Prompt", "Risk", "Finish", "Tokens"].map((t) => h("th", { scope: "col" }, t)))), list));
}

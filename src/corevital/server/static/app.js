// The CoreVital dashboard: hash routes over the read-only JSON API of `corevital serve`.
//   #/runs?filters   the list        #/run/<id>   one run
//   #/compare?ids=a,b,...           #/live        runs as they land

import { api, clear, errorBox, h } from "./views/dom.js";
import { renderRuns } from "./views/runs.js";
import { renderRun } from "./views/run.js";
import { renderCompare } from "./views/compare.js";
import { renderLive } from "./views/live.js";

const main = document.getElementById("app");
let cleanup = null;

async function route() {
  delete document.body.dataset.ready;
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const hash = location.hash.slice(1) || "/runs";
  const path = hash.split("?")[0];
  const parts = path.split("/").filter(Boolean);
  const page = parts[0] || "runs";
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clear(main);
  try {
    if (page === "run" && parts[1]) cleanup = await renderRun(main, decodeURIComponent(parts[1]));
    else if (page === "compare") cleanup = await renderCompare(main);
    else if (page === "live") cleanup = await renderLive(main);
    else cleanup = await renderRuns(main);
  } catch (error) {
    main.append(errorBox(error));
  }
  document.body.dataset.ready = page;
}

async function serverInfo() {
  try {
    const info = await api("/api/v1");
    document.getElementById("server-info").textContent = `${info.store} · ${info.runs} runs · v${info.version}`;
  } catch {
    /* the pages say what failed */
  }
}

window.addEventListener("hashchange", route);
serverInfo();
route();

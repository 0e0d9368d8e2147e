// The CoreVital dashboard: hash routes over the JSON API of `corevital serve`.
//   #/runs?filters   the list        #/run/<id>   one run
//   #/compare?ids=a,b,...           #/live        runs as they land, and "Try a prompt"
// A server started with --token-file answers the API with 401 until the page sends its token:
// the page then asks for it (kept in sessionStorage for this tab, sent as a bearer header).

import { api, clear, errorBox, getToken, h, setToken } from "./views/dom.js";
import { renderRuns } from "./views/runs.js";
import { renderRun } from "./views/run.js";
import { renderCompare } from "./views/compare.js";
import { renderLive } from "./views/live.js";

const main = document.getElementById("app");
const tokenButton = document.getElementById("forget-token");
let cleanup = null;
let asking = false;

async function route() {
  asking = false;
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
  // The page is built in a container of its own. A newer route() or the token form replaces it:
  // what this call writes afterwards lands in a container no longer on the page, and what it
  // leaves to clean up is cleaned up at once.
  const view = h("div", { class: "view" });
  clear(main).append(view);
  let done = null;
  try {
    if (page === "run" && parts[1]) done = await renderRun(view, decodeURIComponent(parts[1]));
    else if (page === "compare") done = await renderCompare(view);
    else if (page === "live") done = await renderLive(view);
    else done = await renderRuns(view);
  } catch (error) {
    view.append(errorBox(error));
  }
  if (!view.isConnected) {
    if (done) done();
    return;
  }
  cleanup = done;
  document.body.dataset.ready = page;
}

// The token form, in place of the page, on the first 401 (see dom.js).
function askForToken(event) {
  if (asking) return;
  asking = true;
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const rejected = Boolean(getToken());
  const input = h("input", { type: "password", id: "token-input", name: "token", autocomplete: "off", spellcheck: "false", required: true, size: 48 });
  const form = h(
    "form",
    { id: "token-form", class: "token-form" },
    h("label", { for: "token-input" }, "Bearer token"),
    input,
    h("button", { type: "submit", class: "primary" }, "Use this token"),
  );
  form.addEventListener("submit", (submit) => {
    submit.preventDefault();
    setToken(input.value.trim());
    updateTokenButton();
    serverInfo();
    route();
  });
  clear(main).append(
    h("h1", null, "This server needs a token"),
    h(
      "section",
      { class: "card", role: "alert", id: "token-needed" },
      h("p", null, rejected ? "The server did not accept the token this tab sent (401). Enter the right one." : "The server answered 401: it was started with --token-file, and every request must carry that file's token."),
      h("p", { class: "muted" }, `Server: ${event.detail || "missing or wrong bearer token"}`),
      h("p", { class: "muted" }, "The token is kept in this browser tab only (sessionStorage) and sent as “Authorization: Bearer …” with each request."),
      form,
    ),
  );
  document.body.dataset.ready = "token";
  input.focus();
}

function updateTokenButton() {
  tokenButton.hidden = !getToken();
}

tokenButton.addEventListener("click", () => {
  setToken("");
  updateTokenButton();
  route();
});

async function serverInfo() {
  try {
    const info = await api("/api/v1");
    document.getElementById("server-info").textContent = `${info.store} · ${info.runs} runs · v${info.version}`;
  } catch {
    /* the pages say what failed */
  }
}

window.addEventListener("corevital:unauthorised", askForToken);
window.addEventListener("corevital:runs-changed", serverInfo);
window.addEventListener("hashchange", route);
updateTokenButton();
serverInfo();
route();

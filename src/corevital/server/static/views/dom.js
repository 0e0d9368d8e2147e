// DOM helpers. Every string is inserted as text (Text nodes, textContent, attribute values):
// nothing that came from a report is ever parsed as HTML.

export function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "css") Object.assign(node.style, value); // CSSOM: allowed under style-src 'self'

    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

// The bearer token of a server started with --token-file: asked for by the page (app.js) on the
// first 401, kept in this tab's sessionStorage only, and sent as `Authorization: Bearer` on every
// API call, event streams included (they are read with fetch, which can send headers).
const TOKEN_KEY = "corevital.token";

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// A 401 tells the page to ask for the token (app.js listens), wherever the call was made. A 401
// to a request that carried an older token (one sent before the user entered a new one) says
// nothing about the token the tab holds now: it fails its own call and asks for nothing.
export class AuthError extends Error {}

function unauthorised(detail, sent) {
  if (sent === getToken()) window.dispatchEvent(new CustomEvent("corevital:unauthorised", { detail }));
  return new AuthError(sent ? "The server did not accept the token." : "This server asks for a token.");
}

// `sent`: the token the request carried ("" for none).
async function failure(path, response, sent) {
  let detail = `${response.status}`;
  try {
    detail = (await response.json()).detail || detail;
  } catch {
    /* not JSON */
  }
  if (response.status === 401) return unauthorised(detail, sent);
  const error = new Error(`${path.split("?")[0]}: ${detail}`);
  error.status = response.status;
  error.detail = detail;
  return error;
}

// fetch() with the tab's token as a bearer header (when it has one); an answer that is not OK is
// thrown as the error failure() makes of it, told which token the request carried.
async function authorisedFetch(path, init = {}) {
  const sent = getToken();
  const headers = sent ? { ...init.headers, Authorization: `Bearer ${sent}` } : { ...init.headers };
  const response = await fetch(path, { ...init, headers });
  if (!response.ok) throw await failure(path, response, sent);
  return response;
}

// GET (or, with `body`, POST as JSON) an API path; the parsed JSON answer.
export async function api(path, { method, body, signal } = {}) {
  const init = { headers: { Accept: "application/json" }, signal };
  if (body !== undefined) {
    init.method = method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  } else if (method) init.method = method;
  return (await authorisedFetch(path, init)).json();
}

// For a view that loads one thing at a time (a page of the list, a layer at a step): each call
// aborts the request the previous call's signal was given and returns a signal for the next one.
export function latestOnly() {
  let controller = null;
  return () => {
    if (controller) controller.abort();
    controller = new AbortController();
    return controller.signal;
  };
}

// Server-sent events read with fetch (EventSource cannot send the Authorization header).
// onEvent(kind, data, id) for each event; reconnects after `retry` ms with Last-Event-ID unless
// `until(kind)` says the stream is over or `signal` is aborted. onState("open" | "retrying").
export async function streamEvents(path, { onEvent, onState = () => {}, until = () => false, signal }) {
  let lastId = null;
  let retry = 2000;
  while (!signal?.aborted) {
    let over = false;
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const response = await authorisedFetch(path, { headers, signal, cache: "no-store" });
      onState("open");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let kind = "message";
      let data = [];
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let at;
        while ((at = buffer.search(/\r\n|\n|\r/)) >= 0) {
          const line = buffer.slice(0, at);
          buffer = buffer.slice(at + (buffer.startsWith("\r\n", at) ? 2 : 1));
          if (line === "") {
            if (data.length) {
              onEvent(kind, data.join("\n"), lastId);
              if (until(kind)) over = true;
            }
            kind = "message";
            data = [];
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const field = colon >= 0 ? line.slice(0, colon) : line;
            const text = colon >= 0 ? line.slice(colon + 1).replace(/^ /, "") : "";
            if (field === "event") kind = text;
            else if (field === "data") data.push(text);
            else if (field === "id") lastId = text;
            else if (field === "retry" && /^\d+$/.test(text)) retry = Number(text);
          }
        }
        if (over) {
          reader.cancel().catch(() => {});
          return;
        }
      }
    } catch (error) {
      if (signal?.aborted) return;
      if (error instanceof AuthError || (error.status && error.status < 500 && error.status !== 429)) throw error;
    }
    if (over || signal?.aborted) return;
    onState("retrying");
    await new Promise((resolve) => setTimeout(resolve, retry));
  }
}

// A link to a file of the API: a plain download link, or, when a token is needed, fetched with
// it and handed to the browser as a blob (a navigation cannot send the Authorization header).
export function fileLink(href, filename, label, props = {}) {
  const link = h("a", { ...props, href, download: filename }, label);
  link.addEventListener("click", async (event) => {
    if (!getToken()) return;
    event.preventDefault();
    try {
      const response = await authorisedFetch(href);
      const url = URL.createObjectURL(await response.blob());
      const temporary = h("a", { href: url, download: filename });
      document.body.append(temporary);
      temporary.click();
      temporary.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (error) {
      link.after(errorBox(error));
    }
  });
  return link;
}

export function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(2);
  return value.toFixed(digits);
}

// A long name shown by its end (a local model's path ends with its name); the whole in the title.
export function tail(text, max = 34) {
  const value = String(text ?? "");
  return h("span", { title: value }, value.length > max ? `…${value.slice(value.length - max + 1)}` : value);
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC");
}

// Risk bands: labelled as well as coloured, so colour is never the only cue.
export function riskBand(risk) {
  if (risk === null || risk === undefined) return { name: "none", label: "no score" };
  if (risk < 0.3) return { name: "low", label: "low" };
  if (risk < 0.7) return { name: "medium", label: "medium" };
  return { name: "high", label: "high" };
}

export function riskChip(risk) {
  const band = riskBand(risk);
  const text = typeof risk === "number" ? risk.toFixed(2) : "—";
  return h("span", { class: `risk risk-${band.name}`, title: `risk ${band.label}` }, text, " ", h("small", null, band.label));
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", null, title), ...children);
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, String(error && error.message ? error.message : error));
}

export function hashQuery() {
  const hash = location.hash.slice(1);
  const at = hash.indexOf("?");
  return new URLSearchParams(at >= 0 ? hash.slice(at + 1) : "");
}

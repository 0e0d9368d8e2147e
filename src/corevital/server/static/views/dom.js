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

export async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    let detail = `${response.status}`;
    try {
      detail = (await response.json()).detail || detail;
    } catch {
      /* not JSON */
    }
    throw new Error(`${path.split("?")[0]}: ${detail}`);
  }
  return response.json();
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

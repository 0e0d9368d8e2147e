// Colour-vision-safe palettes (viridis, cividis) as anchor colours, linearly interpolated.

const VIRIDIS = [
  [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
];
const CIVIDIS = [
  [0, 32, 77], [0, 52, 110], [57, 72, 108], [87, 92, 109], [112, 113, 115],
  [138, 134, 120], [166, 157, 117], [196, 181, 107], [227, 208, 91], [255, 234, 70],
];
export const PALETTES = { viridis: VIRIDIS, cividis: CIVIDIS };
export const MISSING = "#d9d9d9";

export const MISSING_RGB = [217, 217, 217];

export function colourRGB(palette, t) {
  const stops = PALETTES[palette] || VIRIDIS;
  if (t === null || t === undefined || Number.isNaN(t)) return MISSING_RGB;
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  return stops[i].map((v, k) => Math.round(v + (stops[i + 1][k] - v) * f));
}

export function colour(palette, t) {
  const c = colourRGB(palette, t);
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// Okabe–Ito: distinguishable lines for overlays and markers.
export const SERIES = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"];
export const MARKER = { flag: "#D55E00", compound: "#CC79A7", warning: "#E69F00", divergence: "#000000" };

/**
 * Hand-written inline SVG plots for the run report: line charts (linear or log y, bands,
 * vertical event markers, reference lines) and heatmaps. No scripts, no external assets, so a
 * report opens offline in any browser.
 */

export const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Short, readable tick labels: 0.0012 -> 1.2e-3, 12000 -> 12k, 0.25 -> 0.25. */
export function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-3) {
    const [m, e] = v.toExponential(1).split('e');
    return `${m.replace(/\.0$/, '')}e${Number(e)}`;
  }
  if (a >= 1e4) return `${Number((v / 1000).toPrecision(3))}k`;
  return String(Number(v.toPrecision(3)));
}

/** "Nice" linear ticks (1-2-5 steps) covering [lo, hi]; integer steps only when `integer`. */
export function niceTicks(lo: number, hi: number, count = 5, integer = false): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const factors = integer ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10];
  let step = factors.map((f) => f * mag).find((s) => s >= raw) ?? 10 * mag;
  if (integer) step = Math.max(1, Math.round(step));
  const out: number[] = [];
  for (let t = Math.ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) out.push(Math.abs(t) < step * 1e-9 ? 0 : Number(t.toPrecision(12)));
  return out;
}

/** Log-axis ticks within [lo, hi] (positive): powers of ten, with 2x and 5x when the range is short. */
export function logTicks(lo: number, hi: number): number[] {
  const a = Math.floor(Math.log10(lo));
  const b = Math.ceil(Math.log10(hi));
  const inRange = (v: number) => v >= lo * 0.999 && v <= hi * 1.001;
  const stride = Math.max(1, Math.ceil((b - a) / 8));
  let out: number[] = [];
  for (let e = a; e <= b; e += stride) if (inRange(10 ** e)) out.push(10 ** e);
  if (out.length < 3) {
    out = [];
    for (let e = a; e <= b; e++) for (const f of [1, 2, 5]) if (inRange(f * 10 ** e)) out.push(Number((f * 10 ** e).toPrecision(6)));
  }
  return out.length >= 2 ? out : niceTicks(lo, hi, 4).filter((t) => t > 0);
}

export interface Series {
  name: string;
  color: string;
  x: number[];
  y: number[];
  width?: number;
  dash?: string;
  /** Draw points as dots (sparse metrics). */
  dots?: boolean;
}

export interface Band {
  name: string;
  color: string;
  x: number[];
  lo: number[];
  hi: number[];
}

export interface VMarker {
  x: number;
  label: string;
  color: string;
  dash?: string;
}

export interface HLine {
  y: number;
  label: string;
  color: string;
}

export interface LineChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  bands?: Band[];
  markers?: VMarker[];
  hlines?: HLine[];
  logY?: boolean;
  width?: number;
  height?: number;
  /** A CSS class on the <svg> (tests and the page look for it). */
  id?: string;
  /** Integer x ticks (steps). Default true. */
  integerX?: boolean;
}

const MAX_POINTS = 1500;
/** Clip-path ids must be unique within a page: from spec.id, else a counter. */
let clipId = 0;

/** Min/max decimation into buckets so long runs stay small but spikes stay visible. */
export function decimate(x: number[], y: number[], max = MAX_POINTS): { x: number[]; y: number[] } {
  if (x.length <= max) return { x, y };
  const per = Math.ceil(x.length / (max / 2));
  const ox: number[] = [];
  const oy: number[] = [];
  for (let i = 0; i < x.length; i += per) {
    let lo = i;
    let hi = i;
    for (let j = i; j < Math.min(x.length, i + per); j++) {
      if (y[j] < y[lo]) lo = j;
      if (y[j] > y[hi]) hi = j;
    }
    for (const j of lo <= hi ? [lo, hi] : [hi, lo]) {
      ox.push(x[j]);
      oy.push(y[j]);
    }
  }
  return { x: ox, y: oy };
}

function pathOf(xs: number[], ys: number[], sx: (v: number) => number, sy: (v: number) => number): string {
  const parts: string[] = [];
  let pen = false;
  for (let i = 0; i < xs.length; i++) {
    if (!Number.isFinite(ys[i]) || !Number.isFinite(xs[i])) {
      pen = false;
      continue;
    }
    parts.push(`${pen ? 'L' : 'M'}${sx(xs[i]).toFixed(1)},${sy(ys[i]).toFixed(1)}`);
    pen = true;
  }
  return parts.join('');
}

/** A line chart as one <svg> element. */
export function lineChart(spec: LineChartSpec): string {
  const W = spec.width ?? 640;
  const legend = legendItems(spec);
  const m = { l: 64, r: 16, t: 30, b: 46 + 14 * legendRows(legend, W - 16 - 64) };
  const H = (spec.height ?? 300) + m.b - 60;
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const series = spec.series.map((s) => ({ ...s, ...decimate(s.x, s.y) }));
  const logY = !!spec.logY;
  const ok = (v: number) => Number.isFinite(v) && (!logY || v > 0);
  const xs: number[] = [];
  const ys: number[] = [];
  for (const s of series) s.x.forEach((x, i) => ok(s.y[i]) && (xs.push(x), ys.push(s.y[i])));
  for (const b of spec.bands ?? []) b.x.forEach((x, i) => ok(b.lo[i]) && ok(b.hi[i]) && (xs.push(x), ys.push(b.lo[i], b.hi[i])));
  for (const h of spec.hlines ?? []) if (ok(h.y)) ys.push(h.y);
  let x0 = xs.length ? xs.reduce((a, b) => Math.min(a, b)) : 0;
  let x1 = xs.length ? xs.reduce((a, b) => Math.max(a, b)) : 1;
  for (const mk of spec.markers ?? []) {
    x0 = Math.min(x0, mk.x);
    x1 = Math.max(x1, mk.x);
  }
  if (x1 === x0) x1 = x0 + 1;
  let y0 = ys.length ? ys.reduce((a, b) => Math.min(a, b)) : 0;
  let y1 = ys.length ? ys.reduce((a, b) => Math.max(a, b)) : 1;
  if (logY) {
    y0 = y0 / 1.3;
    y1 = y1 * 1.3;
  } else {
    const pad = y1 > y0 ? 0.05 * (y1 - y0) : Math.abs(y0) * 0.1 || 1;
    y0 -= pad;
    y1 += pad;
  }
  const sx = (v: number) => m.l + ((v - x0) / (x1 - x0)) * pw;
  const sy = logY
    ? (v: number) => m.t + ph - ((Math.log10(v) - Math.log10(y0)) / (Math.log10(y1) - Math.log10(y0))) * ph
    : (v: number) => m.t + ph - ((v - y0) / (y1 - y0)) * ph;
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" class="chart${spec.id ? ` ${esc(spec.id)}` : ''}" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(spec.title)}">`);
  o.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#fff"/>`);
  o.push(`<text x="${W / 2}" y="18" text-anchor="middle" class="title">${esc(spec.title)}</text>`);
  // Grid and ticks.
  const xt = niceTicks(x0, x1, 6, spec.integerX ?? true).filter((t) => t >= x0 && t <= x1);
  const yt = (logY ? logTicks(y0, y1) : niceTicks(y0, y1, 5)).filter((t) => t >= y0 && t <= y1);
  o.push('<g class="grid">');
  for (const t of xt) o.push(`<line x1="${sx(t).toFixed(1)}" y1="${m.t}" x2="${sx(t).toFixed(1)}" y2="${m.t + ph}"/>`);
  for (const t of yt) o.push(`<line x1="${m.l}" y1="${sy(t).toFixed(1)}" x2="${m.l + pw}" y2="${sy(t).toFixed(1)}"/>`);
  o.push('</g>');
  o.push(`<g class="axis"><line x1="${m.l}" y1="${m.t + ph}" x2="${m.l + pw}" y2="${m.t + ph}"/><line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${m.t + ph}"/>`);
  for (const t of xt) o.push(`<line x1="${sx(t).toFixed(1)}" y1="${m.t + ph}" x2="${sx(t).toFixed(1)}" y2="${m.t + ph + 5}"/><text x="${sx(t).toFixed(1)}" y="${m.t + ph + 18}" text-anchor="middle">${fmt(t)}</text>`);
  for (const t of yt) o.push(`<line x1="${m.l - 5}" y1="${sy(t).toFixed(1)}" x2="${m.l}" y2="${sy(t).toFixed(1)}"/><text x="${m.l - 8}" y="${(sy(t) + 4).toFixed(1)}" text-anchor="end">${fmt(t)}</text>`);
  o.push('</g>');
  o.push(`<text x="${m.l + pw / 2}" y="${m.t + ph + 36}" text-anchor="middle" class="label">${esc(spec.xLabel)}</text>`);
  o.push(`<text transform="translate(14 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle" class="label">${esc(spec.yLabel)}${logY ? ' (log)' : ''}</text>`);
  const clip = `clip-${spec.id ? esc(spec.id) : `n${clipId++}`}`;
  o.push(`<defs><clipPath id="${clip}"><rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}"/></clipPath></defs>`);
  o.push(`<g clip-path="url(#${clip})">`);
  for (const b of spec.bands ?? []) {
    const idx = b.x.map((_, i) => i).filter((i) => ok(b.lo[i]) && ok(b.hi[i]));
    if (idx.length < 2) continue;
    const up = idx.map((i) => `${sx(b.x[i]).toFixed(1)},${sy(b.hi[i]).toFixed(1)}`);
    const dn = idx.reverse().map((i) => `${sx(b.x[i]).toFixed(1)},${sy(b.lo[i]).toFixed(1)}`);
    o.push(`<path class="band" d="M${up.join('L')}L${dn.join('L')}Z" fill="${b.color}" fill-opacity="0.2" stroke="none"/>`);
  }
  for (const h of spec.hlines ?? []) {
    if (!ok(h.y)) continue;
    o.push(`<line class="hline" x1="${m.l}" x2="${m.l + pw}" y1="${sy(h.y).toFixed(1)}" y2="${sy(h.y).toFixed(1)}" stroke="${h.color}" stroke-dasharray="6 4" stroke-width="1.5"/>`);
  }
  for (const s of series) {
    const ys2 = s.y.map((v) => (ok(v) ? v : NaN));
    if (s.dots) {
      s.x.forEach((x, i) => Number.isFinite(ys2[i]) && o.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(ys2[i]).toFixed(1)}" r="2.5" fill="${s.color}"/>`));
    }
    const d = pathOf(s.x, ys2, sx, sy);
    if (d) o.push(`<path class="series" data-name="${esc(s.name)}" d="${d}" fill="none" stroke="${s.color}" stroke-width="${s.width ?? 2}"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''} stroke-linejoin="round"/>`);
  }
  o.push('</g>');
  for (const mk of spec.markers ?? []) {
    const x = sx(mk.x).toFixed(1);
    o.push(`<g class="marker" data-label="${esc(mk.label)}"><line x1="${x}" x2="${x}" y1="${m.t}" y2="${m.t + ph}" stroke="${mk.color}" stroke-width="1.5" stroke-dasharray="${mk.dash ?? '4 3'}"/>`);
    o.push(`<path d="M${x},${m.t + 1}l-5,-8h10z" fill="${mk.color}"/><title>${esc(mk.label)}</title></g>`);
  }
  o.push(drawLegend(legend, m.l, W - m.r, m.t + ph + 52));
  o.push('</svg>');
  return o.join('');
}

type LegendItem = { name: string; color: string; dash?: string; band?: boolean };

function legendItems(spec: LineChartSpec): LegendItem[] {
  const items: LegendItem[] = [
    ...spec.series.map((s) => ({ name: s.name, color: s.color, dash: s.dash })),
    ...(spec.bands ?? []).map((b) => ({ name: b.name, color: b.color, band: true })),
    ...(spec.hlines ?? []).map((h) => ({ name: h.label, color: h.color, dash: '6 4' })),
  ];
  // One legend entry per kind of marker ("loss spike", "jump", "regime change").
  const seen = new Set<string>();
  for (const mk of spec.markers ?? []) {
    const key = mk.label.replace(/ at .*$/, '');
    if (seen.has(key + mk.color)) continue;
    seen.add(key + mk.color);
    items.push({ name: key, color: mk.color, dash: mk.dash ?? '4 3' });
  }
  return items;
}

const itemWidth = (it: LegendItem) => 34 + it.name.length * 6.2;

function legendRows(items: LegendItem[], width: number): number {
  let rows = items.length ? 1 : 0;
  let x = 0;
  for (const it of items) {
    if (x + itemWidth(it) > width && x > 0) {
      rows++;
      x = 0;
    }
    x += itemWidth(it);
  }
  return rows;
}

function drawLegend(items: LegendItem[], left: number, right: number, top: number): string {
  const o: string[] = ['<g class="legend">'];
  let lx = left;
  let ly = top;
  for (const it of items) {
    const w = itemWidth(it);
    if (lx + w > right && lx > left) {
      lx = left;
      ly += 14;
    }
    if (it.band) o.push(`<rect x="${lx}" y="${ly - 8}" width="20" height="9" fill="${it.color}" fill-opacity="0.25"/>`);
    else o.push(`<line x1="${lx}" x2="${lx + 20}" y1="${ly - 4}" y2="${ly - 4}" stroke="${it.color}" stroke-width="2.5"${it.dash ? ` stroke-dasharray="${it.dash}"` : ''}/>`);
    o.push(`<text x="${lx + 24}" y="${ly}">${esc(it.name)}</text>`);
    lx += w;
  }
  o.push('</g>');
  return o.join('');
}

/** Perceptual sequential colour scale (viridis anchors), t in [0, 1]. */
export function viridis(t: number): string {
  const stops = [
    [68, 1, 84],
    [59, 82, 139],
    [33, 145, 140],
    [94, 201, 98],
    [253, 231, 37],
  ];
  const u = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(u));
  const f = u - i;
  const c = stops[i].map((a, k) => Math.round(a + f * (stops[i + 1][k] - a)));
  return `#${c.map((v) => v.toString(16).padStart(2, '0')).join('')}`;
}

export interface HeatmapSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  /** Column positions (e.g. steps), ascending. */
  x: number[];
  /** values[row][col]. */
  values: number[][];
  rowLabels: string[];
  valueLabel: string;
  /** Colour range (default: data min..max). */
  range?: [number, number];
  width?: number;
  height?: number;
  id?: string;
  maxColumns?: number;
}

/** A heatmap (rows = e.g. experts, columns = steps, averaged into at most maxColumns bins). */
export function heatmap(spec: HeatmapSpec): string {
  const W = spec.width ?? 640;
  const rows = spec.values.length;
  const H = spec.height ?? Math.max(200, Math.min(420, 90 + rows * 14));
  const m = { l: 64, r: 86, t: 30, b: 50 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const n = spec.x.length;
  // At most ~16k cells per heatmap keeps the page light for long runs and many experts.
  const cols = Math.max(1, Math.min(n, spec.maxColumns ?? 300, Math.floor(16000 / Math.max(1, rows))));
  const per = n / cols;
  const cell: number[][] = spec.values.map((row) => {
    const out: number[] = [];
    for (let c = 0; c < cols; c++) {
      const a = Math.floor(c * per);
      const b = Math.max(a + 1, Math.floor((c + 1) * per));
      let s = 0;
      for (let i = a; i < b; i++) s += row[i];
      out.push(s / (b - a));
    }
    return out;
  });
  const flat = cell.flat().filter(Number.isFinite);
  const [v0, v1] = spec.range ?? [flat.length ? flat.reduce((a, b) => Math.min(a, b)) : 0, flat.length ? flat.reduce((a, b) => Math.max(a, b)) : 1];
  const norm = (v: number) => (v1 > v0 ? (v - v0) / (v1 - v0) : 0.5);
  const x0 = n ? spec.x[0] : 0;
  const x1 = n ? spec.x[n - 1] : 1;
  const cw = pw / cols;
  const rh = ph / Math.max(1, rows);
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" class="heatmap${spec.id ? ` ${esc(spec.id)}` : ''}" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(spec.title)}">`);
  o.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#fff"/>`);
  o.push(`<text x="${W / 2}" y="18" text-anchor="middle" class="title">${esc(spec.title)}</text>`);
  o.push('<g class="cells" shape-rendering="crispEdges">');
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      o.push(`<rect x="${(m.l + c * cw).toFixed(2)}" y="${(m.t + r * rh).toFixed(2)}" width="${(cw + 0.3).toFixed(2)}" height="${(rh + 0.3).toFixed(2)}" fill="${viridis(norm(cell[r][c]))}"/>`);
    }
  }
  o.push('</g><g class="axis">');
  o.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  const labelEvery = Math.max(1, Math.ceil(rows / Math.max(1, Math.floor(ph / 12))));
  for (let r = 0; r < rows; r += labelEvery) o.push(`<text x="${m.l - 6}" y="${(m.t + (r + 0.5) * rh + 4).toFixed(1)}" text-anchor="end">${esc(spec.rowLabels[r] ?? String(r))}</text>`);
  // Column c covers steps [x(c*per), x((c+1)*per)); place ticks by step value.
  const sx = (v: number) => m.l + (x1 > x0 ? ((v - x0) / (x1 - x0)) * (pw - cw) + cw / 2 : pw / 2);
  for (const t of niceTicks(x0, x1, 6, true).filter((t) => t >= x0 && t <= x1)) {
    o.push(`<line x1="${sx(t).toFixed(1)}" x2="${sx(t).toFixed(1)}" y1="${m.t + ph}" y2="${m.t + ph + 5}"/><text x="${sx(t).toFixed(1)}" y="${m.t + ph + 18}" text-anchor="middle">${fmt(t)}</text>`);
  }
  o.push('</g>');
  o.push(`<text x="${m.l + pw / 2}" y="${m.t + ph + 36}" text-anchor="middle" class="label">${esc(spec.xLabel)}</text>`);
  o.push(`<text transform="translate(14 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle" class="label">${esc(spec.yLabel)}</text>`);
  // Colour bar.
  const bx = W - m.r + 14;
  const steps = 32;
  o.push('<g class="colorbar" shape-rendering="crispEdges">');
  for (let i = 0; i < steps; i++) o.push(`<rect x="${bx}" y="${(m.t + ph - ((i + 1) * ph) / steps).toFixed(2)}" width="14" height="${(ph / steps + 0.5).toFixed(2)}" fill="${viridis((i + 0.5) / steps)}"/>`);
  o.push(`</g><g class="axis"><rect x="${bx}" y="${m.t}" width="14" height="${ph}" fill="none" stroke="#333"/>`);
  for (const t of niceTicks(v0, v1, 4).filter((t) => t >= v0 && t <= v1)) {
    const y = m.t + ph - norm(t) * ph;
    o.push(`<line x1="${bx + 14}" x2="${bx + 18}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}"/><text x="${bx + 20}" y="${(y + 4).toFixed(1)}">${fmt(t)}</text>`);
  }
  o.push(`</g><text x="${bx + 7}" y="${m.t + ph + 18}" text-anchor="middle" class="small">${esc(spec.valueLabel)}</text>`);
  o.push('</svg>');
  return o.join('');
}

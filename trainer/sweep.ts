/**
 * Hyperparameter sweeps on a proxy model (DESIGN.md section 3): a grid over peak LR and base
 * init std, one run directory per point, resumable (a finished point is never rerun; a point
 * cut short resumes from its last checkpoint). Each point's score is the mean lm_loss of its
 * last 10% of steps. Writes results.csv, results.json and an SVG plot of loss against LR.
 */
import * as fs from 'fs';
import * as path from 'path';
import { ConfigError, TrainingError } from '../core/errors';
import { latestCheckpoint } from '../core/checkpoint';
import { sha256Hex } from '../core/hash';
import { loadTrainConfig, TrainConfig } from './config';
import { readMetrics, StepMetrics } from './metrics';
import { runTraining } from './run';

export interface SweepOptions {
  configFile: string;
  sets?: string[];
  lrs: number[];
  /** Base init stds (model.initStd); default: the config's own. */
  initStds?: number[];
  steps: number;
  outDir: string;
  backend: string;
  onPoint?: (p: SweepPoint, what: 'skipped' | 'started' | 'resumed' | 'finished') => void;
  onStep?: (p: { name: string }, m: StepMetrics) => void;
}

export interface SweepPoint {
  name: string;
  lr: number;
  initStd: number;
  runDir: string;
  status: 'done' | 'diverged';
  /** Mean lm_loss over the last `lastSteps` steps; null when the run diverged. */
  finalLoss: number | null;
  steps: number;
  lastSteps: number;
  tokens: number;
  seconds: number;
  error?: string;
  /** sha256 of the point's config (YAML + overrides): a rerun with another config is refused. */
  configHash: string;
}

export interface SweepResults {
  proxy: { config: string; sets: string[]; dModel: number; model: TrainConfig['model'] };
  steps: number;
  lossDefinition: string;
  points: SweepPoint[];
  best: string | null;
}

/** Written when a point finishes (its result); a finished point is never rerun. */
export const POINT_FILE = 'point.json';
/** Written when a point starts, so a resumed point can be checked against the grid's config. */
export const START_FILE = 'point-start.json';
export const RESULTS_JSON = 'results.json';

/** Steps that the final loss averages: the last 10% (at least one). */
export function lastStepsCount(steps: number): number {
  return Math.max(1, Math.ceil(steps * 0.1));
}

export function lossDefinition(steps: number): string {
  const k = lastStepsCount(steps);
  return `mean lm_loss of steps ${steps - k + 1}..${steps}`;
}

export function pointName(lr: number, initStd: number): string {
  return `lr${lr.toExponential()}_init${initStd.toExponential()}`;
}

/** Mean lm_loss of the step lines with step > steps - k in a metrics.jsonl. */
export function finalLoss(metricsFile: string, steps: number): number {
  const k = lastStepsCount(steps);
  const last = readMetrics(metricsFile).filter((m) => m.fingerprint && m.step > steps - k && m.step <= steps);
  if (last.length !== k) throw new TrainingError(`expected ${k} step lines after step ${steps - k} in ${metricsFile}, found ${last.length}`);
  return last.reduce((a, m) => a + m.lm_loss, 0) / k;
}

function canonical(x: unknown): string {
  return JSON.stringify(x, (_k, v: unknown) => (v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b))) : v));
}

function checkGrid(name: string, xs: number[]): void {
  if (xs.length === 0) throw new ConfigError(`give at least one value`, { where: name });
  for (const x of xs) if (!(Number.isFinite(x) && x > 0)) throw new ConfigError(`values must be positive numbers, got ${x}`, { where: name });
  if (new Set(xs).size !== xs.length) throw new ConfigError(`values repeat`, { where: name });
}

/** Runs (or completes) the grid and writes the result files; returns the results. */
export async function runSweep(o: SweepOptions): Promise<SweepResults> {
  const sets = o.sets ?? [];
  checkGrid('--lr', o.lrs);
  if (!Number.isInteger(o.steps) || o.steps < 1) throw new ConfigError(`--steps must be a positive integer, got ${o.steps}`, { where: '--steps' });
  const base = loadTrainConfig(o.configFile, [...sets, `train.steps=${o.steps}`]).config;
  const initStds = o.initStds ?? [base.model.initStd];
  checkGrid('--init-std', initStds);
  // Validate every point's config before any work.
  const grid: { lr: number; initStd: number; config: TrainConfig; raw: Record<string, unknown> }[] = [];
  for (const initStd of initStds) {
    for (const lr of o.lrs) {
      const { config, raw } = loadTrainConfig(o.configFile, [...sets, `train.steps=${o.steps}`, `optim.lr=${lr}`, `model.initStd=${initStd}`]);
      grid.push({ lr, initStd, config, raw });
    }
  }
  fs.mkdirSync(o.outDir, { recursive: true });
  const points: SweepPoint[] = [];
  for (const g of grid) {
    const name = pointName(g.lr, g.initStd);
    const runDir = path.join(o.outDir, 'points', name);
    // The raw config (file + overrides), not the resolved one: a new default added to the schema
    // by a later version must not invalidate finished points.
    const configHash = sha256Hex(Buffer.from(canonical(g.raw)));
    const doneFile = path.join(runDir, POINT_FILE);
    if (fs.existsSync(doneFile)) {
      const p = JSON.parse(fs.readFileSync(doneFile, 'utf8')) as SweepPoint;
      if (p.configHash !== configHash) {
        throw new ConfigError(`point ${name} in ${o.outDir} was run with a different config`, { where: doneFile, hint: 'use a new --out directory, or remove that point to rerun it' });
      }
      p.runDir = runDir;
      points.push(p);
      o.onPoint?.(p, 'skipped');
      continue;
    }
    const startFile = path.join(runDir, START_FILE);
    const resume = fs.existsSync(runDir) && latestCheckpoint(runDir) !== null;
    if (resume && fs.existsSync(startFile) && (JSON.parse(fs.readFileSync(startFile, 'utf8')) as { configHash: string }).configHash !== configHash) {
      throw new ConfigError(`point ${name} in ${o.outDir} was started with a different config`, { where: startFile, hint: 'use a new --out directory, or remove that point to rerun it' });
    }
    fs.mkdirSync(runDir, { recursive: true });
    fs.writeFileSync(startFile, JSON.stringify({ configHash }) + '\n');
    const k = lastStepsCount(o.steps);
    const p: SweepPoint = { name, lr: g.lr, initStd: g.initStd, runDir, status: 'done', finalLoss: null, steps: o.steps, lastSteps: k, tokens: 0, seconds: 0, configHash };
    o.onPoint?.(p, resume ? 'resumed' : 'started');
    const t0 = Date.now();
    let trainer: { dispose(): void } | null = null;
    try {
      const r = await runTraining({
        outDir: runDir,
        config: resume ? undefined : g.config,
        rawConfig: resume ? undefined : g.raw,
        resume,
        backend: o.backend,
        onStart: (t) => (trainer = t),
        onStep: (m) => o.onStep?.(p, m),
      });
      p.tokens = r.trainer.state.tokens;
      p.finalLoss = finalLoss(path.join(runDir, 'metrics.jsonl'), o.steps);
      if (!Number.isFinite(p.finalLoss)) {
        p.status = 'diverged';
        p.finalLoss = null;
      }
    } catch (e) {
      // A diverged point is a result of the sweep, not a failure of it.
      if (!(e instanceof TrainingError)) throw e;
      p.status = 'diverged';
      p.error = e.message;
    } finally {
      (trainer as { dispose(): void } | null)?.dispose();
    }
    p.seconds = (Date.now() - t0) / 1000;
    fs.writeFileSync(doneFile, JSON.stringify(p, null, 2) + '\n');
    points.push(p);
    o.onPoint?.(p, 'finished');
  }
  const results: SweepResults = {
    proxy: { config: o.configFile, sets, dModel: base.model.dModel, model: base.model },
    steps: o.steps,
    lossDefinition: lossDefinition(o.steps),
    points: points.map((p) => ({ ...p, runDir: path.relative(o.outDir, p.runDir) })),
    best: bestPoint(points)?.name ?? null,
  };
  writeSweepFiles(o.outDir, results);
  return results;
}

/** The point with the lowest final loss (diverged points never win); ties go to the lower LR. */
export function bestPoint<P extends Pick<SweepPoint, 'finalLoss' | 'lr' | 'initStd' | 'name'>>(points: P[]): P | null {
  let best: P | null = null;
  for (const p of points) {
    if (p.finalLoss === null) continue;
    if (!best || p.finalLoss < best.finalLoss! || (p.finalLoss === best.finalLoss && p.lr < best.lr)) best = p;
  }
  return best;
}

export function writeSweepFiles(outDir: string, r: SweepResults): void {
  const header = 'name,lr,init_std,status,final_lm_loss,steps,last_steps,tokens,seconds,run_dir';
  const rows = r.points.map((p) => [p.name, p.lr, p.initStd, p.status, p.finalLoss === null ? 'nan' : p.finalLoss.toFixed(6), p.steps, p.lastSteps, p.tokens, p.seconds.toFixed(1), p.runDir].join(','));
  fs.writeFileSync(path.join(outDir, 'results.csv'), [header, ...rows].join('\n') + '\n');
  fs.writeFileSync(path.join(outDir, RESULTS_JSON), JSON.stringify(r, null, 2) + '\n');
  const byStd = new Map<number, SweepPoint[]>();
  for (const p of r.points) byStd.set(p.initStd, [...(byStd.get(p.initStd) ?? []), p]);
  const series = [...byStd.entries()].map(([std, ps]) => ({
    label: `initStd ${std}`,
    points: ps.filter((p) => p.finalLoss !== null).sort((a, b) => a.lr - b.lr).map((p) => [p.lr, p.finalLoss!] as [number, number]),
  }));
  fs.writeFileSync(path.join(outDir, 'loss_vs_lr.svg'), svgLineChart(series, { title: `proxy dModel ${r.proxy.dModel}: ${r.lossDefinition}`, xLabel: 'peak LR', yLabel: 'final lm_loss', logX: true }));
}

/** Reads a sweep's results.json (a directory or the file itself). */
export function readSweepResults(dirOrFile: string): { file: string; results: SweepResults } {
  const file = fs.existsSync(dirOrFile) && fs.statSync(dirOrFile).isDirectory() ? path.join(dirOrFile, RESULTS_JSON) : dirOrFile;
  if (!fs.existsSync(file)) throw new ConfigError(`no sweep results at ${file}`, { where: '--results', hint: 'run `moecat sweep` first' });
  try {
    return { file, results: JSON.parse(fs.readFileSync(file, 'utf8')) as SweepResults };
  } catch (e) {
    throw new ConfigError(`cannot read sweep results: ${(e as Error).message}`, { where: file });
  }
}

export interface ChartSeries {
  label: string;
  points: [number, number][];
  dashed?: boolean;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (hi <= lo) return [lo];
  const step0 = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => (hi - lo) / s <= n) ?? 10 * mag;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-12; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A small dependency-free SVG line chart (log or linear x), markers on every point. */
export function svgLineChart(series: ChartSeries[], o: { title: string; xLabel: string; yLabel: string; logX?: boolean; width?: number; height?: number; yRange?: [number, number] }): string {
  const W = o.width ?? 640;
  const H = o.height ?? 420;
  const m = { l: 64, r: 170, t: 36, b: 48 };
  const fx = (x: number) => (o.logX ? Math.log10(x) : x);
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => fx(p[0]));
  const ys = all.map((p) => p[1]);
  let [x0, x1] = xs.length ? [Math.min(...xs), Math.max(...xs)] : [0, 1];
  let [y0, y1] = o.yRange ?? (ys.length ? [Math.min(...ys), Math.max(...ys)] : [0, 1]);
  if (x1 === x0) [x0, x1] = [x0 - 0.5, x1 + 0.5];
  if (y1 === y0) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const padY = (y1 - y0) * 0.06;
  y0 -= padY;
  y1 += padY;
  const px = (x: number) => m.l + ((fx(x) - x0) / (x1 - x0)) * (W - m.l - m.r);
  const py = (y: number) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${m.l}" y="20" font-size="13">${esc(o.title)}</text>`,
    `<rect x="${m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="none" stroke="#444"/>`,
  ];
  const xTicks = o.logX ? niceLogTicks(x0, x1) : niceTicks(x0, x1);
  for (const t of xTicks) {
    const v = o.logX ? Math.pow(10, t) : t;
    const X = px(v);
    parts.push(`<line x1="${X.toFixed(1)}" y1="${H - m.b}" x2="${X.toFixed(1)}" y2="${m.t}" stroke="#ddd"/>`);
    parts.push(`<text x="${X.toFixed(1)}" y="${H - m.b + 16}" text-anchor="middle">${esc(Number(v.toPrecision(3)).toString())}</text>`);
  }
  for (const t of niceTicks(y0, y1)) {
    const Y = py(t);
    parts.push(`<line x1="${m.l}" y1="${Y.toFixed(1)}" x2="${W - m.r}" y2="${Y.toFixed(1)}" stroke="#ddd"/>`);
    parts.push(`<text x="${m.l - 6}" y="${(Y + 4).toFixed(1)}" text-anchor="end">${esc(Number(t.toPrecision(4)).toString())}</text>`);
  }
  parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 10}" text-anchor="middle">${esc(o.xLabel)}${o.logX ? ' (log scale)' : ''}</text>`);
  parts.push(`<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`);
  series.forEach((s, i) => {
    const c = PALETTE[i % PALETTE.length];
    const pts = s.points.filter((p) => Number.isFinite(p[1]) && p[1] >= y0 && p[1] <= y1);
    if (pts.length > 1) parts.push(`<polyline fill="none" stroke="${c}" stroke-width="1.8"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${pts.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(' ')}"/>`);
    if (pts.length <= 40) for (const p of pts) parts.push(`<circle cx="${px(p[0]).toFixed(1)}" cy="${py(p[1]).toFixed(1)}" r="3" fill="${c}"/>`);
    const ly = m.t + 14 + i * 18;
    parts.push(`<line x1="${W - m.r + 10}" y1="${ly - 4}" x2="${W - m.r + 30}" y2="${ly - 4}" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    parts.push(`<text x="${W - m.r + 35}" y="${ly}">${esc(s.label)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

function niceLogTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
    for (const f of [1, 2, 5]) {
      const t = e + Math.log10(f);
      if (t >= lo - 1e-9 && t <= hi + 1e-9) out.push(t);
    }
  }
  return out.length ? out : [lo, hi];
}

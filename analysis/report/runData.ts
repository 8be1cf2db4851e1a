/**
 * What the report reads from a run directory: the step lines and spike events of metrics.jsonl,
 * the run's config.yaml, and the checkpoints' state.json (step, param_hash, backend). Only
 * files are read here (analysis/ does not depend on trainer/).
 */
import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';
import { listCheckpoints, STATE_FILE } from '../../core/checkpoint';
import { DataError } from '../../core/errors';

/** One step line (the fields the report plots; all optional but `step`). */
export interface StepRecord {
  step: number;
  [k: string]: unknown;
}

export interface SpikeRecord {
  step: number;
  data_step: number;
  reason: string;
  restored_to: number;
}

export interface CheckpointInfo {
  step: number;
  dir: string;
  paramHash?: string;
  backend?: string;
}

export interface RunData {
  dir: string;
  name: string;
  steps: StepRecord[];
  spikes: SpikeRecord[];
  config: Record<string, unknown> | null;
  checkpoints: CheckpointInfo[];
}

/** Reads a run directory (or a metrics.jsonl inside one); bad input names file and line. */
export function readRun(p: string): RunData {
  if (!fs.existsSync(p)) throw new DataError('no such run directory', { where: p, hint: 'give the directory `moecat train` wrote' });
  const isDir = fs.statSync(p).isDirectory();
  const dir = isDir ? p : path.dirname(p);
  const file = isDir ? path.join(p, 'metrics.jsonl') : p;
  if (!fs.existsSync(file)) throw new DataError('no metrics.jsonl in this run directory', { where: dir, hint: 'point at a run directory written by `moecat train`' });
  const bySteps = new Map<number, StepRecord>();
  const spikes: SpikeRecord[] = [];
  fs.readFileSync(file, 'utf8').split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    const where = `${file}:${i + 1}`;
    let o: unknown;
    try {
      o = JSON.parse(line);
    } catch {
      throw new DataError('not valid JSON', { where, hint: 'each line must be one JSON object' });
    }
    if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new DataError('not a JSON object', { where });
    const r = o as Record<string, unknown>;
    if (typeof r.step !== 'number' || !Number.isFinite(r.step)) throw new DataError(`'step' is ${JSON.stringify(r.step)}, not a number`, { where });
    if (r.event === 'spike') spikes.push({ step: r.step, data_step: Number(r.data_step), reason: String(r.reason ?? ''), restored_to: Number(r.restored_to) });
    else if (r.event === undefined) bySteps.set(r.step, r as StepRecord);
  });
  if (bySteps.size === 0) throw new DataError('metrics.jsonl has no step records', { where: file, hint: 'train the run for at least one step first' });
  let config: Record<string, unknown> | null = null;
  const cfgFile = path.join(dir, 'config.yaml');
  if (fs.existsSync(cfgFile)) {
    try {
      const c = YAML.parse(fs.readFileSync(cfgFile, 'utf8')) as unknown;
      if (c && typeof c === 'object' && !Array.isArray(c)) config = c as Record<string, unknown>;
    } catch {
      config = null;
    }
  }
  const checkpoints: CheckpointInfo[] = listCheckpoints(dir).map((c) => {
    const info: CheckpointInfo = { step: c.step, dir: c.dir };
    try {
      const s = JSON.parse(fs.readFileSync(path.join(c.dir, STATE_FILE), 'utf8')) as Record<string, unknown>;
      if (typeof s.param_hash === 'string') info.paramHash = s.param_hash;
      if (typeof s.backend === 'string') info.backend = s.backend;
    } catch {
      // An unreadable state.json is listed without its hash.
    }
    return info;
  });
  const steps = [...bySteps.values()].sort((a, b) => a.step - b.step);
  return { dir, name: path.basename(path.resolve(dir)), steps, spikes, config, checkpoints };
}

/** A numeric field over the steps that have it (finite values only). */
export function scalarSeries(run: RunData, key: string): { x: number[]; y: number[] } {
  const x: number[] = [];
  const y: number[] = [];
  for (const s of run.steps) {
    const v = s[key];
    if (typeof v === 'number' && Number.isFinite(v)) {
      x.push(s.step);
      y.push(v);
    }
  }
  return { x, y };
}

/** A per-layer array field (e.g. router_similarity) as one series per layer. */
export function layerSeries(run: RunData, key: string): { x: number[]; y: number[] }[] {
  const out: { x: number[]; y: number[] }[] = [];
  for (const s of run.steps) {
    const v = s[key];
    if (!Array.isArray(v)) continue;
    v.forEach((val, l) => {
      out[l] ??= { x: [], y: [] };
      if (typeof val === 'number' && Number.isFinite(val)) {
        out[l].x.push(s.step);
        out[l].y.push(val);
      }
    });
  }
  return out;
}

/** A record-valued field (e.g. grad_rms_by_group) as one series per key. */
export function keyedSeries(run: RunData, key: string): Map<string, { x: number[]; y: number[] }> {
  const out = new Map<string, { x: number[]; y: number[] }>();
  for (const s of run.steps) {
    const v = s[key];
    if (!v || typeof v !== 'object' || Array.isArray(v)) continue;
    for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
      if (typeof val !== 'number' || !Number.isFinite(val)) continue;
      const e = out.get(k) ?? { x: [], y: [] };
      e.x.push(s.step);
      e.y.push(val);
      out.set(k, e);
    }
  }
  return out;
}

/**
 * Expert load per layer as shares of the layer's FFN routing slots: [layer][expert][stepIndex],
 * with the steps that carry `expert_load`.
 */
export function expertLoadShares(run: RunData): { x: number[]; shares: number[][][] } {
  const x: number[] = [];
  const shares: number[][][] = [];
  for (const s of run.steps) {
    const load = s.expert_load;
    if (!Array.isArray(load)) continue;
    const col = x.length;
    x.push(s.step);
    load.forEach((row, l) => {
      if (!Array.isArray(row)) return;
      const nums = row.map((v) => (typeof v === 'number' ? v : 0));
      const total = nums.reduce((a, b) => a + b, 0);
      shares[l] ??= nums.map(() => []);
      nums.forEach((v, e) => {
        shares[l][e] ??= [];
        shares[l][e][col] = total > 0 ? v / total : 0;
      });
    });
  }
  // Fill holes (a layer missing at some step) with NaN so columns stay aligned.
  for (const layer of shares) for (const row of layer) for (let i = 0; i < x.length; i++) if (row[i] === undefined) row[i] = NaN;
  return { x, shares };
}

/** The newest parameter hash on record: last step line with one, else the newest checkpoint's. */
export function finalParamHash(run: RunData): { step: number; hash: string; source: string } | null {
  for (let i = run.steps.length - 1; i >= 0; i--) {
    const h = run.steps[i].param_hash;
    if (typeof h === 'string') return { step: run.steps[i].step, hash: h, source: 'metrics.jsonl' };
  }
  for (let i = run.checkpoints.length - 1; i >= 0; i--) {
    const c = run.checkpoints[i];
    if (c.paramHash) return { step: c.step, hash: c.paramHash, source: path.basename(c.dir) };
  }
  return null;
}

/**
 * Reads one metric of a run's metrics.jsonl (one JSON object per line with `step` and the
 * metric) for curve analysis. Bad input is refused with the file and line (DESIGN.md 10).
 * Lines without the metric (e.g. eval-only records) are skipped; a repeated step keeps its
 * last value (a resumed run rewrites steps).
 */
import * as fs from 'fs';
import * as path from 'path';
import { DataError } from '../core/errors';

export interface MetricSeries {
  file: string;
  metric: string;
  steps: number[];
  values: number[];
}

export const MIN_POINTS = 10;

/** A run directory means `<dir>/metrics.jsonl`. */
export function resolveMetricsPath(p: string): string {
  if (!fs.existsSync(p)) throw new DataError('no such file or directory', { where: p, hint: 'give a run directory or its metrics.jsonl' });
  return fs.statSync(p).isDirectory() ? path.join(p, 'metrics.jsonl') : p;
}

export function readMetricSeries(p: string, metric: string): MetricSeries {
  const file = resolveMetricsPath(p);
  if (!fs.existsSync(file)) throw new DataError('no metrics.jsonl in this run directory', { where: file, hint: 'point at a run directory written by `moecat train`' });
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const byStep = new Map<number, number>();
  const seenKeys = new Set<string>();
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    const where = `${file}:${i + 1}`;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      throw new DataError('not valid JSON', { where, hint: 'each line must be one JSON object' });
    }
    if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) throw new DataError('not a JSON object', { where });
    const o = rec as Record<string, unknown>;
    for (const k of Object.keys(o)) seenKeys.add(k);
    if (!(metric in o)) return;
    const v = o[metric];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new DataError(`metric '${metric}' is ${JSON.stringify(v)}, not a finite number`, { where });
    const s = o.step;
    if (typeof s !== 'number' || !Number.isFinite(s)) throw new DataError(`'step' is ${JSON.stringify(s)}, not a finite number`, { where });
    byStep.set(s, v);
  });
  if (byStep.size === 0) {
    const avail = [...seenKeys].filter((k) => k !== 'step').sort();
    throw new DataError(`no metric '${metric}' in any line`, { where: file, hint: avail.length ? `available: ${avail.join(', ')}` : 'the file is empty' });
  }
  if (byStep.size < MIN_POINTS) throw new DataError(`only ${byStep.size} points of '${metric}'; curve analysis needs at least ${MIN_POINTS}`, { where: file });
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  return { file, metric, steps, values: steps.map((s) => byStep.get(s)!) };
}

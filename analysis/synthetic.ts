/**
 * Synthetic training-loss curves with known regime changes, for the change-point tests and
 * the splines benchmark: a power-law decay L(s) = floor + scale (1 + s/tau)^-alpha, plus level
 * shifts (jumps), slope changes (a kink: extra slope from a step on), Gaussian noise and
 * isolated single-step spikes (which must not be reported). Also the event-matching F1 used to
 * score detections (a detection counts if it is within a window of a true event of that kind).
 */
import { RngStream } from '../core/rng';

export type ChangeKind = 'jump' | 'slope';

export interface TrueEvent {
  kind: ChangeKind;
  step: number;
  /** Level shift (jump) or extra loss per 1000 steps (slope). */
  size: number;
}

export interface CurveSpec {
  steps: number;
  noise: number;
  events: TrueEvent[];
  spikes: number[];
  spikeSize: number;
  floor?: number;
  scale?: number;
  alpha?: number;
  tau?: number;
}

export interface SyntheticCurve {
  steps: number[];
  loss: number[];
  clean: number[];
  spec: CurveSpec;
}

/** Builds the curve of a spec, with noise from RngStream.of(seed, 'analysis.synthetic', ...). */
export function makeCurve(spec: CurveSpec, seed: number): SyntheticCurve {
  const rng = RngStream.of(seed, 'analysis.synthetic.noise');
  const floor = spec.floor ?? 2;
  const scale = spec.scale ?? 3;
  const alpha = spec.alpha ?? 0.5;
  const tau = spec.tau ?? spec.steps / 50;
  const steps: number[] = [];
  const clean: number[] = [];
  const loss: number[] = [];
  const spikes = new Set(spec.spikes);
  for (let s = 1; s <= spec.steps; s++) {
    let v = floor + scale * Math.pow(1 + s / tau, -alpha);
    for (const e of spec.events) {
      if (s < e.step) continue;
      v += e.kind === 'jump' ? e.size : (e.size * (s - e.step)) / 1000;
    }
    steps.push(s);
    clean.push(v);
    loss.push(v + spec.noise * rng.normal() + (spikes.has(s) ? spec.spikeSize : 0));
  }
  return { steps, loss, clean, spec };
}

/**
 * A random spec: 1-3 well-separated events (kinds and signs random) away from the first 15%
 * (the steep warm-up of the power law) and the last 5%, plus `spikes` single-step spikes.
 */
export function randomSpec(seed: number, opts: { steps?: number; noise?: number; spikes?: number; events?: number } = {}): CurveSpec {
  const rng = RngStream.of(seed, 'analysis.synthetic.spec');
  const steps = opts.steps ?? 2000;
  const noise = opts.noise ?? 0.01;
  const nEvents = opts.events ?? 1 + rng.int(3);
  const events: TrueEvent[] = [];
  const lo = Math.round(0.15 * steps);
  const hi = Math.round(0.95 * steps);
  const minGap = Math.round(0.12 * steps);
  while (events.length < nEvents) {
    const step = lo + rng.int(hi - lo);
    if (events.some((e) => Math.abs(e.step - step) < minGap)) continue;
    const sign = rng.next() < 0.5 ? -1 : 1;
    if (rng.next() < 0.5) events.push({ kind: 'jump', step, size: sign * noise * (8 + 8 * rng.next()) });
    // a slope change that moves the loss by >= 10 noise sd over 10% of the run
    else events.push({ kind: 'slope', step, size: (sign * noise * (10 + 10 * rng.next()) * 1000) / (0.1 * steps) });
  }
  events.sort((a, b) => a.step - b.step);
  const spikes: number[] = [];
  const nSpikes = opts.spikes ?? 3;
  while (spikes.length < nSpikes) {
    const s = 1 + Math.round(0.05 * steps) + rng.int(Math.round(0.9 * steps));
    if (!spikes.includes(s) && !events.some((e) => Math.abs(e.step - s) < 0.02 * steps)) spikes.push(s);
  }
  return { steps, noise, events, spikes: spikes.sort((a, b) => a - b), spikeSize: noise * 40 };
}

export interface Detection {
  kind: ChangeKind;
  step: number;
}

export interface MatchScore {
  truePositives: number;
  falsePositives: number;
  falseNegatives: number;
  precision: number;
  recall: number;
  f1: number;
}

/**
 * Greedy one-to-one matching of detections to true events within +-window steps (kind must
 * match when `matchKind`). An empty truth with no detections scores F1 = 1.
 */
export function scoreDetections(truth: { kind: ChangeKind; step: number }[], found: Detection[], window: number, matchKind = true): MatchScore {
  const used = new Set<number>();
  let tp = 0;
  const pairs: [number, number, number][] = [];
  truth.forEach((t, i) => found.forEach((f, j) => {
    const d = Math.abs(t.step - f.step);
    if (d <= window && (!matchKind || t.kind === f.kind)) pairs.push([d, i, j]);
  }));
  pairs.sort((a, b) => a[0] - b[0]);
  const usedT = new Set<number>();
  for (const [, i, j] of pairs) {
    if (usedT.has(i) || used.has(j)) continue;
    usedT.add(i);
    used.add(j);
    tp++;
  }
  const fp = found.length - tp;
  const fn = truth.length - tp;
  const precision = found.length ? tp / found.length : 1;
  const recall = truth.length ? tp / truth.length : 1;
  const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
  return { truePositives: tp, falsePositives: fp, falseNegatives: fn, precision, recall, f1 };
}

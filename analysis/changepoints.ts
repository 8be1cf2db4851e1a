/**
 * Regime changes and jumps in a training curve from the free-knot posterior
 * (arXiv 2405.13353), with the model of changeModel.ts: a smooth background plus free
 * linear-spline knots, where a knot is a slope change and two adjacent knots (at most `jumpGap`
 * = 1 data point between them: the paper's doubled knot) are a jump.
 *
 * Robustness (documented choice): the curve is reduced to medians of non-overlapping bins of
 * at least 3 steps (at most `maxPoints` bins, which also bounds the chain's cost). A median
 * never sees an isolated one-step spike, level shifts and kinks survive, and the bins stay
 * independent. (A running median followed by averaging also removes spikes but correlates
 * neighbouring points, which the iid Gaussian evidence reads as structure: false alarms.)
 * A Gaussian likelihood on the raw curve would spend knot pairs on every spike.
 *
 * An event is reported when the posterior probability that a sample has an event of that kind
 * within +-window of it reaches `minProbability`. The first `skipStart` (2%) of the range is
 * not reported: the steepest part of the decay, where a noise-sized misfit of the background
 * costs less than a knot's EBIC penalty, is where the remaining false alarms came from.
 */
import { candidate } from './knots';
import { backgroundChangeModel, backgroundKnots } from './changeModel';
import { ChainOptions, ChainResult, runChain } from './rjmcmc';
import type { ChangeKind } from './synthetic';

export interface ChangePointOptions {
  seed: number;
  /** Run the chain on log(step) instead of step. */
  logX?: boolean;
  iters?: number;
  burnIn?: number;
  gamma?: number;
  maxPoints?: number;
  /** Interior knots of the smooth background (log-spaced in step). */
  backgroundKnots?: number;
  /** Fraction of the x range at the start where nothing is reported (the initial transient). */
  skipStart?: number;
  /** Half-width of the matching window as a fraction of the x range. */
  window?: number;
  minProbability?: number;
  /** Most data points between neighbouring knots that still make one jump (default 1). */
  jumpGap?: number;
  chains?: number;
}

export interface ChangePoint {
  kind: ChangeKind;
  /** Location in the original x units (step). */
  step: number;
  probability: number;
}

export interface ChangePointResult {
  changes: ChangePoint[];
  /** Posterior mean number of events per sample. */
  meanEvents: number;
  points: number;
  chains: ChainResult[];
}

/** Running median of odd width (shrinking at the ends). */
export function medianFilter(y: ArrayLike<number>, width: number): Float64Array {
  const h = Math.floor(width / 2);
  const out = new Float64Array(y.length);
  const buf: number[] = [];
  for (let i = 0; i < y.length; i++) {
    buf.length = 0;
    for (let j = Math.max(0, i - h); j <= Math.min(y.length - 1, i + h); j++) buf.push(y[j]);
    buf.sort((a, b) => a - b);
    out[i] = buf.length % 2 ? buf[buf.length >> 1] : 0.5 * (buf[buf.length / 2 - 1] + buf[buf.length / 2]);
  }
  return out;
}

/**
 * Consecutive, non-overlapping bins of `size` points: mean x and median y per bin (a short
 * last bin is merged into the one before it).
 */
export function binMedians(x: ArrayLike<number>, y: ArrayLike<number>, size: number): { x: Float64Array; y: Float64Array } {
  const nb = Math.max(1, Math.floor(x.length / size));
  const bx = new Float64Array(nb);
  const by = new Float64Array(nb);
  const buf: number[] = [];
  for (let b = 0; b < nb; b++) {
    const lo = b * size;
    const hi = b === nb - 1 ? x.length : lo + size;
    let sx = 0;
    buf.length = 0;
    for (let i = lo; i < hi; i++) {
      sx += x[i];
      buf.push(y[i]);
    }
    buf.sort((a, c) => a - c);
    bx[b] = sx / (hi - lo);
    by[b] = buf.length % 2 ? buf[buf.length >> 1] : 0.5 * (buf[buf.length / 2 - 1] + buf[buf.length / 2]);
  }
  return { x: bx, y: by };
}

/**
 * Spike-proof reduction of a curve: medians of non-overlapping bins of >= 3 points (an
 * isolated spike never reaches a median, and bins stay independent so the Gaussian
 * likelihood's iid assumption holds); curves too short for 30 such bins get a running
 * median of width 5 instead.
 */
export function robustReduce(x: ArrayLike<number>, y: ArrayLike<number>, maxPoints: number): { x: Float64Array; y: Float64Array } {
  const size = Math.max(3, Math.ceil(x.length / maxPoints));
  if (x.length >= 30 * size) return binMedians(x, y, size);
  return { x: Float64Array.from(x), y: medianFilter(y, 5) };
}

interface SampleEvent {
  kind: ChangeKind;
  at: number; // chain units (0..1)
  sample: number;
}

/** Number of sorted values strictly inside (a, b). */
function countBetween(sorted: Float64Array, a: number, b: number): number {
  const upper = (v: number) => {
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid] <= v) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  let lo = upper(a);
  let n = 0;
  while (lo < sorted.length && sorted[lo] < b) {
    n++;
    lo++;
  }
  return n;
}

/**
 * Splits each sample's knots into jumps (runs of knots with at most `maxBetween` data points
 * between neighbours: the paper's doubled knot) and slope changes (single knots).
 */
function sampleEvents(res: ChainResult, maxBetween: number, offset: number): SampleEvent[] {
  const out: SampleEvent[] = [];
  res.knots.forEach((kn, s) => {
    let i = 0;
    while (i < kn.length) {
      let j = i;
      while (j + 1 < kn.length && countBetween(res.t, candidate(kn[j], res.n), candidate(kn[j + 1], res.n)) <= maxBetween) j++;
      const lo = candidate(kn[i], res.n);
      const hi = candidate(kn[j], res.n);
      out.push({ kind: j > i ? 'jump' : 'slope', at: 0.5 * (lo + hi), sample: offset + s });
      i = j + 1;
    }
  });
  return out;
}

/**
 * Greedy peak picking: repeatedly take the location whose +-window holds events (of one kind)
 * from the largest fraction of samples; report it while that fraction >= minProbability.
 */
function pickPeaks(events: SampleEvent[], kind: ChangeKind, window: number, samples: number, minP: number): { at: number; probability: number }[] {
  let pool = events.filter((e) => e.kind === kind).sort((a, b) => a.at - b.at);
  const found: { at: number; probability: number }[] = [];
  while (pool.length) {
    let best = -1;
    let bestCount = 0;
    let lo = 0;
    const seen = new Map<number, number>();
    let distinct = 0;
    // sliding window of width 2*window over sorted locations, counting distinct samples
    for (let hi = 0; hi < pool.length; hi++) {
      const sh = pool[hi].sample;
      seen.set(sh, (seen.get(sh) ?? 0) + 1);
      if (seen.get(sh) === 1) distinct++;
      while (pool[hi].at - pool[lo].at > 2 * window) {
        const sl = pool[lo].sample;
        const c = seen.get(sl)! - 1;
        seen.set(sl, c);
        if (c === 0) distinct--;
        lo++;
      }
      if (distinct > bestCount) {
        bestCount = distinct;
        best = lo;
      }
    }
    const p = bestCount / samples;
    if (p < minP) break;
    const start = pool[best].at;
    const inWin = pool.filter((e) => e.at >= start && e.at <= start + 2 * window);
    const locs = inWin.map((e) => e.at).sort((a, b) => a - b);
    const center = locs[locs.length >> 1];
    found.push({ at: center, probability: Math.min(1, p) });
    pool = pool.filter((e) => Math.abs(e.at - center) > window);
  }
  return found;
}

/** Detects regime changes (slope) and jumps (level shifts) in a curve (steps, values). */
export function detectChanges(steps: ArrayLike<number>, values: ArrayLike<number>, opts: ChangePointOptions): ChangePointResult {
  const xs = opts.logX ? Array.from(steps, (s) => Math.log(Math.max(s, 1e-12))) : Array.from(steps);
  const binned = robustReduce(xs, values, opts.maxPoints ?? 400);
  const m = binned.x.length;
  const x0 = binned.x[0];
  const x1 = binned.x[m - 1];
  const bg = backgroundKnots(opts.backgroundKnots ?? 10, x0, x1, !!opts.logX);
  const iters = opts.iters ?? 6000;
  const burnIn = opts.burnIn ?? Math.round(iters / 2);
  const chains = opts.chains ?? 1;
  const results: ChainResult[] = [];
  const events: SampleEvent[] = [];
  // The candidate grid must be finer than the closest data (a log-step axis packs late steps
  // tightly), or two knots could never fall between neighbouring points to make a jump.
  let minGap = Infinity;
  for (let i = 1; i < m; i++) minGap = Math.min(minGap, (binned.x[i] - binned.x[i - 1]) / (x1 - x0));
  const candidates = Math.min(20000, Math.max(2 * m, Math.ceil(2 / Math.max(minGap, 1e-9))));
  let samples = 0;
  for (let c = 0; c < chains; c++) {
    const co: ChainOptions = { seed: opts.seed, chain: c, degree: 1, gamma: opts.gamma ?? 1, burnIn, samples: Math.max(1, iters - burnIn), candidates, initialK: 0, kMax: Math.max(1, Math.floor(m / 4)) };
    const res = runChain(binned.x, binned.y, co, backgroundChangeModel(bg));
    results.push(res);
    events.push(...sampleEvents(res, opts.jumpGap ?? 1, samples));
    samples += res.knots.length;
  }
  const window = opts.window ?? 0.01;
  const minP = opts.minProbability ?? 0.5;
  const skipStart = opts.skipStart ?? 0.02;
  const toStep = (u: number) => {
    const x = x0 + u * (x1 - x0);
    return opts.logX ? Math.exp(x) : x;
  };
  const changes: ChangePoint[] = [];
  for (const kind of ['jump', 'slope'] as ChangeKind[]) {
    for (const pk of pickPeaks(events, kind, window, samples, minP)) if (pk.at >= skipStart) changes.push({ kind, step: Math.round(toStep(pk.at)), probability: pk.probability });
  }
  changes.sort((a, b) => a.step - b.step);
  return { changes, meanEvents: events.length / samples, points: m, chains: results };
}

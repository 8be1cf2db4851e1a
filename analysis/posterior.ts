/**
 * Posterior summaries of a knot chain (arXiv 2405.13353, section 4): the distribution of the
 * knot count, a histogram of knot locations, knot estimates (sorted-position means over the
 * samples with the modal count, the estimator of the paper's knot-location table), and the
 * posterior mean curve with a pointwise credible band.
 */
import { RngStream } from '../core/rng';
import { evalSpline } from './bspline';
import { candidate } from './knots';
import { ChainResult, knotToX } from './rjmcmc';
import { drawCoefficients, fitSpline } from './splineFit';

export interface KnotCountPosterior {
  /** probs[k] = posterior probability of k knots. */
  probs: number[];
  mean: number;
  mode: number;
}

export function knotCountPosterior(res: ChainResult): KnotCountPosterior {
  const probs: number[] = [];
  let mean = 0;
  for (const k of res.ks) {
    while (probs.length <= k) probs.push(0);
    probs[k] += 1;
    mean += k;
  }
  const s = res.ks.length;
  let mode = 0;
  for (let k = 0; k < probs.length; k++) {
    probs[k] /= s;
    if (probs[k] > probs[mode]) mode = k;
  }
  return { probs, mean: mean / s, mode };
}

/** Knot-location histogram on [xMin, xMax]: expected number of knots per bin per sample. */
export function knotHistogram(res: ChainResult, bins = 50): { edges: number[]; counts: number[] } {
  const counts = new Array<number>(bins).fill(0);
  for (const kn of res.knots) for (const j of kn) counts[Math.min(bins - 1, Math.floor(candidate(j, res.n) * bins))] += 1;
  const s = res.knots.length;
  const edges = Array.from({ length: bins + 1 }, (_, i) => res.xMin + ((res.xMax - res.xMin) * i) / bins);
  return { edges, counts: counts.map((c) => c / s) };
}

export interface KnotEstimate {
  k: number;
  /** Fraction of samples that had k knots. */
  support: number;
  /** Sorted-position posterior means, original x units. */
  positions: number[];
  /** Sorted-position posterior means as candidate-grid positions (fractional index). */
  gridPositions: number[];
}

/** Knot locations given k knots (default: the modal count). */
export function knotEstimate(res: ChainResult, k?: number): KnotEstimate {
  const kk = k ?? knotCountPosterior(res).mode;
  const sums = new Array<number>(kk).fill(0);
  let count = 0;
  for (const kn of res.knots) {
    if (kn.length !== kk) continue;
    count++;
    for (let i = 0; i < kk; i++) sums[i] += kn[i];
  }
  const grid = sums.map((s) => (count ? s / count : NaN));
  return {
    k: kk,
    support: count / res.knots.length,
    gridPositions: grid,
    positions: grid.map((g) => knotToX(res, g)),
  };
}

export interface CurveSummary {
  x: number[];
  mean: number[];
  lower: number[];
  upper: number[];
}

/**
 * Posterior mean curve and pointwise (1 - alpha) band at `grid` (original x units). Uses up to
 * `draws` samples evenly spread over the chain; for each, the coefficients are drawn from
 * N(beta_hat, sigma^2 (B'B)^-1) with sigma^2 = RSS/m, so the band carries both knot and
 * coefficient uncertainty.
 */
export function posteriorCurve(res: ChainResult, grid: ArrayLike<number>, opts: { draws?: number; alpha?: number } = {}): CurveSummary {
  const draws = Math.min(opts.draws ?? 200, res.knots.length);
  const alpha = opts.alpha ?? 0.05;
  const o = res.options;
  const g = Array.from(grid, (x) => Math.min(1, Math.max(0, (x - res.xMin) / (res.xMax - res.xMin))));
  const rng = RngStream.of(o.seed, 'analysis.posteriorCurve', o.chain);
  const curves: Float64Array[] = [];
  const m = res.t.length;
  for (let d = 0; d < draws; d++) {
    const s = Math.floor(((d + 0.5) * res.knots.length) / draws);
    const interior = Array.from(res.knots[s], (j) => candidate(j, res.n));
    const fit = fitSpline(res.t, res.y, interior, o.degree, { intercept: o.intercept, ridge: o.ridge });
    const beta = drawCoefficients(fit, Math.sqrt(fit.rss / m), rng);
    const c = evalSpline(g, interior, beta, o.degree, o.intercept);
    for (let i = 0; i < c.length; i++) c[i] = res.yMean + res.yScale * c[i];
    curves.push(c);
  }
  const mean: number[] = [];
  const lower: number[] = [];
  const upper: number[] = [];
  const col = new Float64Array(draws);
  for (let i = 0; i < g.length; i++) {
    let s = 0;
    for (let d = 0; d < draws; d++) {
      col[d] = curves[d][i];
      s += col[d];
    }
    col.sort();
    mean.push(s / draws);
    lower.push(quantileSorted(col, alpha / 2));
    upper.push(quantileSorted(col, 1 - alpha / 2));
  }
  return { x: Array.from(grid), mean, lower, upper };
}

/** Linear-interpolated quantile of sorted values. */
export function quantileSorted(v: ArrayLike<number>, p: number): number {
  if (v.length === 0) return NaN;
  const h = (v.length - 1) * p;
  const lo = Math.floor(h);
  const hi = Math.min(v.length - 1, lo + 1);
  return v[lo] + (h - lo) * (v[hi] - v[lo]);
}

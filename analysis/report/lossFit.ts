/**
 * The loss curve's free-knot spline fit and regime changes for the report (arXiv 2405.13353):
 * the posterior mean curve and 95% band come from the paper's cubic B-spline chain on the
 * spike-proof reduction of the curve (robustReduce); regime changes and jumps come from
 * detectChanges (smooth background + free linear knots). Both are seeded, so a report is
 * reproducible.
 */
import { ChangePoint, detectChanges, robustReduce } from '../changepoints';
import { MIN_POINTS } from '../metricsFile';
import { CurveSummary, posteriorCurve } from '../posterior';
import { runChain } from '../rjmcmc';

export interface LossFit {
  /** Posterior mean and band on a grid of steps; absent when there are too few points. */
  curve?: CurveSummary;
  changes: ChangePoint[];
  /** Why there is no fit, when there is none. */
  note?: string;
}

export interface LossFitOptions {
  seed?: number;
  iters?: number;
  chains?: number;
}

export function fitLossCurve(steps: number[], values: number[], o: LossFitOptions = {}): LossFit {
  if (steps.length < MIN_POINTS) return { changes: [], note: `spline fit needs at least ${MIN_POINTS} points (have ${steps.length})` };
  const seed = o.seed ?? 0;
  const iters = o.iters ?? 4000;
  const reduced = robustReduce(steps, values, 200);
  const res = runChain(reduced.x, reduced.y, { seed, degree: 3, burnIn: Math.round(iters / 2), samples: iters - Math.round(iters / 2) });
  const lo = steps[0];
  const hi = steps[steps.length - 1];
  const grid = Array.from({ length: 160 }, (_, i) => lo + ((hi - lo) * i) / 159);
  const curve = posteriorCurve(res, grid, { draws: 100 });
  const changes = detectChanges(steps, values, { seed, iters, chains: o.chains ?? 2 }).changes;
  return { curve, changes };
}

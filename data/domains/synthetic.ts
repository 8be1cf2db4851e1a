/**
 * Synthetic manifolds for FLGP checks: points on concentric circles with isotropic Gaussian
 * noise, labelled by circle (the classic case where Euclidean kernels fail and the heat kernel
 * of the data graph does not, arXiv 2405.13342 section 5).
 */
import { RngStream } from '../../core/rng';
import type { Matrix } from './anchors';

export interface CirclesOptions {
  n: number;
  /** Circle radii; point i lies on circle i mod radii.length, its class (default [1, 1.5]). */
  radii?: number[];
  /** Standard deviation of the Gaussian noise added to both coordinates (default 0.05). */
  noise?: number;
  seed: number;
}

export function concentricCircles(opts: CirclesOptions): { X: Matrix; y: Int32Array } {
  const radii = opts.radii ?? [1, 1.5];
  const noise = opts.noise ?? 0.05;
  const rng = RngStream.of(opts.seed, 'flgp-circles');
  const data = new Float64Array(opts.n * 2);
  const y = new Int32Array(opts.n);
  for (let i = 0; i < opts.n; i++) {
    const c = i % radii.length;
    const theta = 2 * Math.PI * rng.next();
    data[2 * i] = radii[c] * Math.cos(theta) + noise * rng.normal();
    data[2 * i + 1] = radii[c] * Math.sin(theta) + noise * rng.normal();
    y[i] = c;
  }
  return { X: { data, n: opts.n, d: 2 }, y };
}

/** m distinct indices drawn uniformly, sorted, with at least one per class when possible. */
export function pickLabelled(y: ArrayLike<number>, m: number, seed: number, purpose = 'flgp-labels'): Int32Array {
  const rng = RngStream.of(seed, purpose);
  const idx = rng.shuffle(Array.from({ length: y.length }, (_, i) => i));
  const classes = [...new Set(Array.from(y))].sort((a, b) => a - b);
  const chosen: number[] = [];
  for (const c of classes) {
    const first = idx.find((i) => y[i] === c);
    if (first !== undefined && chosen.length < m) chosen.push(first);
  }
  for (const i of idx) {
    if (chosen.length >= m) break;
    if (!chosen.includes(i)) chosen.push(i);
  }
  return Int32Array.from(chosen.sort((a, b) => a - b));
}

/**
 * FLGP step 1 (arXiv 2405.13342, section 3.1, "subsampling"): s representative points U by
 * k-means (core/linalg: k-means++ seeding, then Lloyd), and the r nearest anchors of every point.
 *
 * For large n the k-means runs on a uniform subsample of at most `sampleCap` points (mini-batch
 * style), so choosing anchors costs O(1) in n; only `nearestAnchors` touches all n points, at
 * O(n·s·d).
 */
import { RngStream } from '../../core/rng';
import { DataError } from '../../core/errors';
import { kmeans, sqDist } from '../../core/linalg';

export interface Matrix {
  data: Float64Array;
  n: number;
  d: number;
}

export interface KMeansOptions {
  /** Number of anchors. */
  s: number;
  seed: number;
  /** Lloyd iterations (default 15). */
  iters?: number;
  /** At most this many points enter k-means (default max(10·s, 3000)). */
  sampleCap?: number;
}

/** The s×d anchor matrix U from k-means++ seeding and Lloyd iterations. */
export function kmeansAnchors(X: Matrix, opts: KMeansOptions): Matrix {
  const { n, d } = X;
  const s = opts.s;
  if (!Number.isInteger(s) || s < 2) throw new DataError(`anchors s must be an integer ≥ 2 (got ${s})`, { where: 'flgp: anchors' });
  if (s > n) throw new DataError(`anchors s = ${s} exceeds the number of points n = ${n}`, { where: 'flgp: anchors', hint: 'use fewer anchors' });
  const rng = RngStream.of(opts.seed, 'flgp-kmeans');
  const cap = Math.max(opts.sampleCap ?? Math.max(10 * s, 3000), s);
  const sample = subsampleRows(X, cap, rng);
  // Lloyd stops when no point changes anchor; assignment by nearestAnchors (its expanded
  // distances, ties to the lower index).
  const { centroids } = kmeans(sample.data, sample.n, d, s, rng, {
    stop: 'assignments',
    maxIter: opts.iters ?? 15,
    assign: (C, m) => nearestAnchors(sample, { data: C, n: m, d }, 1),
  });
  return { data: centroids, n: s, d };
}

/** Uniform subsample of at most `cap` rows (partial Fisher-Yates), in original row order. */
function subsampleRows(X: Matrix, cap: number, rng: RngStream): Matrix {
  if (X.n <= cap) return X;
  const idx = new Int32Array(X.n);
  for (let i = 0; i < X.n; i++) idx[i] = i;
  for (let i = 0; i < cap; i++) {
    const j = i + rng.int(X.n - i);
    const t = idx[i];
    idx[i] = idx[j];
    idx[j] = t;
  }
  const chosen = Array.from(idx.subarray(0, cap)).sort((a, b) => a - b);
  const data = new Float64Array(cap * X.d);
  chosen.forEach((row, k) => data.set(X.data.subarray(row * X.d, (row + 1) * X.d), k * X.d));
  return { data, n: cap, d: X.d };
}

/** Indices and squared distances of the r nearest anchors of each point (ascending distance). */
export interface Neighbours {
  n: number;
  r: number;
  /** n·r anchor indices, row i at [i·r, (i+1)·r). */
  idx: Int32Array;
  /** n·r squared distances, same layout. */
  d2: Float64Array;
}

/**
 * r nearest anchors of every row of X, O(n·s·d): distances via ‖x‖² + ‖u‖² − 2x·u, then the r
 * winners are recomputed exactly so no cancellation error reaches the kernel weights.
 */
export function nearestAnchors(X: Matrix, U: Matrix, r: number): Neighbours {
  const { n, d } = X;
  const s = U.n;
  if (r < 1 || r > s) throw new DataError(`r = ${r} must be in [1, s = ${s}]`, { where: 'flgp: nearest anchors' });
  const un = new Float64Array(s);
  for (let j = 0; j < s; j++) {
    let t = 0;
    for (let k = 0; k < d; k++) t += U.data[j * d + k] ** 2;
    un[j] = t;
  }
  const idx = new Int32Array(n * r);
  const d2 = new Float64Array(n * r);
  const bestI = new Int32Array(r);
  const bestD = new Float64Array(r);
  for (let i = 0; i < n; i++) {
    const xo = i * d;
    let xn = 0;
    for (let k = 0; k < d; k++) xn += X.data[xo + k] ** 2;
    bestD.fill(Infinity);
    bestI.fill(-1);
    for (let j = 0; j < s; j++) {
      const uo = j * d;
      let xu = 0;
      for (let k = 0; k < d; k++) xu += X.data[xo + k] * U.data[uo + k];
      const dist = xn + un[j] - 2 * xu;
      if (dist >= bestD[r - 1]) continue;
      // insertion into the sorted top-r list (ties keep the lower anchor index: deterministic)
      let p = r - 1;
      while (p > 0 && bestD[p - 1] > dist) {
        bestD[p] = bestD[p - 1];
        bestI[p] = bestI[p - 1];
        p--;
      }
      bestD[p] = dist;
      bestI[p] = j;
    }
    for (let q = 0; q < r; q++) {
      idx[i * r + q] = bestI[q];
      d2[i * r + q] = sqDist(X.data, i, U.data, bestI[q], d);
    }
  }
  return { n, r, idx, d2 };
}

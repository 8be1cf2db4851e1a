/**
 * FLGP step 1 (arXiv 2405.13342, section 3.1, "subsampling"): s representative points U by
 * k-means (k-means++ seeding, then Lloyd), and the r nearest anchors of every point.
 *
 * For large n the k-means runs on a uniform subsample of at most `sampleCap` points (mini-batch
 * style), so choosing anchors costs O(1) in n; only `nearestAnchors` touches all n points, at
 * O(n·s·d).
 */
import { RngStream } from '../../core/rng';
import { DataError } from '../../core/errors';
import { sqDist } from './linalg';

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
  const U = kmeansPlusPlus(sample, s, rng);
  lloyd(sample, U, opts.iters ?? 15);
  return U;
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

/** k-means++ seeding (Arthur & Vassilvitskii 2007): each new centre drawn ∝ D(x)². */
function kmeansPlusPlus(X: Matrix, s: number, rng: RngStream): Matrix {
  const { n, d } = X;
  const U = new Float64Array(s * d);
  const minD = new Float64Array(n).fill(Infinity);
  let c = rng.int(n);
  for (let j = 0; j < s; j++) {
    U.set(X.data.subarray(c * d, (c + 1) * d), j * d);
    let total = 0;
    for (let i = 0; i < n; i++) {
      const dd = sqDist(X.data, i, U, j, d);
      if (dd < minD[i]) minD[i] = dd;
      total += minD[i];
    }
    if (j === s - 1) break;
    if (total === 0) {
      c = rng.int(n); // all points coincide with centres: any point will do
      continue;
    }
    let r = rng.next() * total;
    c = n - 1;
    for (let i = 0; i < n; i++) {
      r -= minD[i];
      if (r < 0) {
        c = i;
        break;
      }
    }
  }
  return { data: U, n: s, d };
}

/** Lloyd iterations in place; an empty cluster keeps its previous centre. */
function lloyd(X: Matrix, U: Matrix, iters: number): void {
  const { n, d } = X;
  const s = U.n;
  const assign = new Int32Array(n).fill(-1);
  const sums = new Float64Array(s * d);
  const counts = new Int32Array(s);
  for (let it = 0; it < iters; it++) {
    const { idx } = nearestAnchors(X, U, 1);
    let changed = 0;
    for (let i = 0; i < n; i++) {
      if (assign[i] !== idx[i]) changed++;
      assign[i] = idx[i];
    }
    if (changed === 0) return;
    sums.fill(0);
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const a = assign[i];
      counts[a]++;
      for (let k = 0; k < d; k++) sums[a * d + k] += X.data[i * d + k];
    }
    for (let j = 0; j < s; j++) {
      if (counts[j] === 0) continue;
      for (let k = 0; k < d; k++) U.data[j * d + k] = sums[j * d + k] / counts[j];
    }
  }
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

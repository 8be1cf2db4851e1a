/**
 * k-means with k-means++ seeding (D² sampling, Arthur & Vassilvitskii 2007) and Lloyd
 * iterations to a relative-inertia tolerance. All draws come from one RngStream, so a seed
 * fixes the codebook bit for bit.
 */
import { RngStream } from '../../core/rng';

export interface KMeansOptions {
  /** Stop when inertia improves by less than tol·inertia (default 1e-4). */
  tol?: number;
  maxIter?: number;
}

export interface KMeansResult {
  centroids: Float64Array; // [M, D]
  assign: Int32Array; // [n]
  inertia: number;
  iterations: number;
}

function sqDist(X: Float64Array, i: number, C: Float64Array, j: number, D: number): number {
  let s = 0;
  for (let d = 0; d < D; d++) {
    const t = X[i * D + d] - C[j * D + d];
    s += t * t;
  }
  return s;
}

/** Index of the nearest centroid of row i and its squared distance (ties: lowest index). */
export function nearest(X: Float64Array, i: number, C: Float64Array, M: number, D: number): [number, number] {
  let best = 0;
  let bd = Infinity;
  for (let j = 0; j < M; j++) {
    const dd = sqDist(X, i, C, j, D);
    if (dd < bd) {
      bd = dd;
      best = j;
    }
  }
  return [best, bd];
}

/** D² seeding: the first centre uniformly, each next one with probability ∝ distance². */
export function kmeansPlusPlusSeed(X: Float64Array, n: number, D: number, M: number, rng: RngStream): Float64Array {
  const C = new Float64Array(M * D);
  const d2 = new Float64Array(n).fill(Infinity);
  let pick = rng.int(n);
  for (let j = 0; j < M; j++) {
    if (j > 0) {
      let total = 0;
      for (let i = 0; i < n; i++) total += d2[i];
      pick = total > 0 ? rng.categorical(d2) : rng.int(n);
    }
    for (let d = 0; d < D; d++) C[j * D + d] = X[pick * D + d];
    for (let i = 0; i < n; i++) {
      const dd = sqDist(X, i, C, j, D);
      if (dd < d2[i]) d2[i] = dd;
    }
  }
  return C;
}

/** k-means++ then Lloyd on n rows of X [n, D]; M is clamped to n. Empty clusters keep their centre. */
export function kmeans(X: Float64Array, n: number, D: number, M: number, rng: RngStream, o: KMeansOptions = {}): KMeansResult {
  if (n < 1) throw new Error('kmeans: no points');
  const m = Math.min(M, n);
  const tol = o.tol ?? 1e-4;
  const maxIter = o.maxIter ?? 50;
  const C = kmeansPlusPlusSeed(X, n, D, m, rng);
  const assign = new Int32Array(n);
  let prev = Infinity;
  let inertia = Infinity;
  let it = 0;
  const sums = new Float64Array(m * D);
  const counts = new Float64Array(m);
  while (it < maxIter) {
    it++;
    inertia = 0;
    for (let i = 0; i < n; i++) {
      const [j, dd] = nearest(X, i, C, m, D);
      assign[i] = j;
      inertia += dd;
    }
    if (prev - inertia <= tol * inertia) break;
    prev = inertia;
    sums.fill(0);
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const j = assign[i];
      counts[j]++;
      for (let d = 0; d < D; d++) sums[j * D + d] += X[i * D + d];
    }
    for (let j = 0; j < m; j++) if (counts[j] > 0) for (let d = 0; d < D; d++) C[j * D + d] = sums[j * D + d] / counts[j];
  }
  return { centroids: C, assign, inertia, iterations: it };
}

/**
 * k-means with k-means++ seeding (D² sampling, Arthur & Vassilvitskii 2007) and Lloyd
 * iterations, on row-major Float64Array points X [n, D]. All draws come from one RngStream, so a
 * seed fixes the centroids bit for bit. A2ATS codebooks (inference/kv) and FLGP anchors
 * (data/domains) both run it; they differ only in the options (stopping rule, assignment).
 */
import { RngStream } from '../rng';
import { sqDist } from './dense';

export interface KMeansOptions {
  /** Stop rule: 'inertia' (default) stops when inertia improves by ≤ tol·inertia; 'assignments' when no point changes cluster. */
  stop?: 'inertia' | 'assignments';
  /** Relative inertia tolerance of the 'inertia' rule (default 1e-4). */
  tol?: number;
  /** Most Lloyd iterations (default 50). */
  maxIter?: number;
  /**
   * Nearest-centre assignment of every point given centroids C [m, D] (default `nearest`, exact
   * distances, ties to the lowest index): cluster index and squared distance per point.
   */
  assign?: (C: Float64Array, m: number) => { idx: Int32Array; d2: Float64Array };
}

export interface KMeansResult {
  centroids: Float64Array; // [M, D]
  assign: Int32Array; // [n]
  inertia: number;
  iterations: number;
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
      // All points on a centre already: any point will do.
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
  const stopOnInertia = (o.stop ?? 'inertia') === 'inertia';
  const tol = o.tol ?? 1e-4;
  const maxIter = o.maxIter ?? 50;
  const assignAll =
    o.assign ??
    ((C: Float64Array, k: number) => {
      const idx = new Int32Array(n);
      const d2 = new Float64Array(n);
      for (let i = 0; i < n; i++) [idx[i], d2[i]] = nearest(X, i, C, k, D);
      return { idx, d2 };
    });
  const C = kmeansPlusPlusSeed(X, n, D, m, rng);
  const assign = new Int32Array(n).fill(-1);
  let prev = Infinity;
  let inertia = Infinity;
  let it = 0;
  const sums = new Float64Array(m * D);
  const counts = new Float64Array(m);
  while (it < maxIter) {
    it++;
    const a = assignAll(C, m);
    inertia = 0;
    let changed = 0;
    for (let i = 0; i < n; i++) {
      if (assign[i] !== a.idx[i]) changed++;
      assign[i] = a.idx[i];
      inertia += a.d2[i];
    }
    if (stopOnInertia ? prev - inertia <= tol * inertia : changed === 0) break;
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

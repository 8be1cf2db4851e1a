/**
 * Query-aware vector quantisation of keys (A2ATS, arXiv 2502.12665, section 3.2). The score
 * error of replacing key k by centroid c for a query q~ is q~·(k − c); its mean square over
 * queries is (k − c)^T H (k − c) with H = E[q~ q~^T]. With H = L·L^T that equals the Euclidean
 * ||(k − c)·L||², so plain k-means on the mapped keys k·L minimises it; centroids are mapped
 * back with ·L^{-1}. H is scaled by 1/RMS(H) and regularised with 1e-6·I before Cholesky.
 * Plain k-means (the ablation) is the same with L = I.
 */
import { RngStream } from '../../core/rng';
import { cholesky, dot, kmeans, KMeansOptions, mulRowLower, nearest, solveRowLower } from '../../core/linalg';

export interface Codebook {
  /** Centroids in key space [M, D] (the table T = q~·C^T reads these). */
  centroids: Float64Array;
  /** Lower-triangular L [D, D] with L·L^T = scaled H (identity for plain k-means). */
  L: Float64Array;
  /** Centroids in the mapped space, C·L [M, D] (encoding reads these). */
  mapped: Float64Array;
  M: number;
  D: number;
}

/** H = E[q q^T] over n queries [n, D], scaled by 1/RMS(H) (entrywise) plus eps·I. */
export function queryCovariance(Q: ArrayLike<number>, n: number, D: number, eps = 1e-6): Float64Array {
  const H = new Float64Array(D * D);
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < D; i++) {
      const qi = Q[r * D + i];
      for (let j = 0; j <= i; j++) H[i * D + j] += qi * Q[r * D + j];
    }
  }
  let ss = 0;
  for (let i = 0; i < D; i++) {
    for (let j = 0; j <= i; j++) {
      H[i * D + j] /= n;
      H[j * D + i] = H[i * D + j];
    }
  }
  for (let i = 0; i < D * D; i++) ss += H[i] * H[i];
  const rms = Math.sqrt(ss / (D * D)) || 1;
  for (let i = 0; i < D * D; i++) H[i] /= rms;
  for (let i = 0; i < D; i++) H[i * D + i] += eps;
  return H;
}

function identity(D: number): Float64Array {
  const I = new Float64Array(D * D);
  for (let i = 0; i < D; i++) I[i * D + i] = 1;
  return I;
}

/** A codebook from its key-space centroids and L. */
export function makeCodebook(centroids: Float64Array, L: Float64Array, M: number, D: number): Codebook {
  const mapped = new Float64Array(M * D);
  for (let j = 0; j < M; j++) mulRowLower(centroids, j * D, L, D, mapped, j * D);
  return { centroids, L, mapped, M, D };
}

export interface TrainCodebookOptions extends KMeansOptions {
  /** Codebook size M (clamped to the number of keys). */
  size: number;
  /** Calibration queries q~ = R_b q [nq, D]; omit for plain k-means. */
  queries?: ArrayLike<number>;
  nQueries?: number;
}

/** Trains a codebook on n keys [n, D] (pre-RoPE keys for WRoPE). */
export function trainCodebook(keys: ArrayLike<number>, n: number, D: number, rng: RngStream, o: TrainCodebookOptions): Codebook {
  const L = o.queries ? cholesky(queryCovariance(o.queries, o.nQueries ?? o.queries.length / D, D), D, 'a2ats: query covariance') : identity(D);
  const X = new Float64Array(n * D);
  for (let i = 0; i < n; i++) mulRowLower(keys, i * D, L, D, X, i * D);
  const km = kmeans(X, n, D, o.size, rng, o);
  const M = km.centroids.length / D;
  const C = new Float64Array(M * D);
  for (let j = 0; j < M; j++) solveRowLower(km.centroids, j * D, L, D, C, j * D);
  // Keep the mapped centroids exactly as k-means left them (encoding compares against these).
  return { centroids: C, L, mapped: km.centroids, M, D };
}

/** Code of one key: the centroid nearest in the mapped space (least query-weighted error). */
export function encodeKey(cb: Codebook, k: ArrayLike<number>, scratch: Float64Array = new Float64Array(cb.D)): number {
  mulRowLower(k, 0, cb.L, cb.D, scratch, 0);
  return nearest(scratch, 0, cb.mapped, cb.M, cb.D)[0];
}

/** Lookup table T[j] = q~·c_j (float64, accumulated over d in order) for one query. */
export function lookupTable(cb: Codebook, q: ArrayLike<number>, out: Float64Array = new Float64Array(cb.M)): Float64Array {
  for (let j = 0; j < cb.M; j++) out[j] = dot(q, cb.centroids, cb.D, 0, j * cb.D);
  return out;
}

/** Query-weighted error (k − c)^T H (k − c) for a given H [D, D]. */
export function weightedError(H: Float64Array, k: ArrayLike<number>, c: ArrayLike<number>, D: number): number {
  let s = 0;
  for (let i = 0; i < D; i++) {
    let r = 0;
    for (let j = 0; j < D; j++) r += H[i * D + j] * (k[j] - c[j]);
    s += (k[i] - c[i]) * r;
  }
  return s;
}

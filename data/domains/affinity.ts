/**
 * FLGP step 2 (arXiv 2405.13342, section 3.1): the sparse n×s cross-similarity Z between the
 * points and the anchors, non-zero only on each point's r nearest anchors, rows summing to 1
 * (the "random-walk" normalisation of the authors' package). Two ways to weight:
 * - 'se': squared-exponential kernel exp(−‖x−u‖²/(2h²)) (the paper's k_ε with 4ε = 2h²);
 * - 'lae': local anchor embedding (Liu, He & Chang 2010), the convex weights z on the simplex
 *   minimising ½‖x − U_⟨i⟩ z‖², solved by Nesterov-accelerated projected gradient.
 */
import { DataError } from '../../core/errors';
import type { Matrix, Neighbours } from './anchors';

/** Row-sparse n×s matrix with exactly r stored entries per row. */
export interface SparseZ {
  n: number;
  s: number;
  r: number;
  idx: Int32Array;
  val: Float64Array;
}

/** Mean squared distance from a point to its r nearest anchors: the bandwidth's reference scale. */
export function meanNeighbourSqDist(nb: Neighbours): number {
  let t = 0;
  for (let i = 0; i < nb.d2.length; i++) t += nb.d2[i];
  return t / nb.d2.length;
}

/**
 * SE affinities: Z_ij ∝ exp(−d²_ij / (2h²)) over the r nearest anchors, rows normalised to 1.
 * The row minimum is subtracted before exponentiating (cancels in the normalisation) so that a
 * far-away point never underflows to an all-zero row.
 */
export function seAffinity(nb: Neighbours, s: number, h2: number): SparseZ {
  if (!(h2 > 0)) throw new DataError(`bandwidth h² must be positive (got ${h2})`, { where: 'flgp: se affinity' });
  const { n, r } = nb;
  const val = new Float64Array(n * r);
  for (let i = 0; i < n; i++) {
    const o = i * r;
    let dmin = Infinity;
    for (let q = 0; q < r; q++) dmin = Math.min(dmin, nb.d2[o + q]);
    let sum = 0;
    for (let q = 0; q < r; q++) {
      const w = Math.exp(-(nb.d2[o + q] - dmin) / (2 * h2));
      val[o + q] = w;
      sum += w;
    }
    for (let q = 0; q < r; q++) val[o + q] /= sum;
  }
  return { n, s, r, idx: nb.idx, val };
}

/** LAE affinities for every point (rows already on the simplex, so they sum to 1). */
export function laeAffinity(X: Matrix, U: Matrix, nb: Neighbours): SparseZ {
  const { n, r } = nb;
  const val = new Float64Array(n * r);
  for (let i = 0; i < n; i++) {
    const z = localAnchorEmbedding(X.data.subarray(i * X.d, (i + 1) * X.d), U, nb.idx.subarray(i * r, (i + 1) * r));
    val.set(z, i * r);
  }
  return { n, s: U.n, r, idx: nb.idx, val };
}

/**
 * min_z ½‖x − Σ_j z_j u_j‖² subject to z ≥ 0, Σ z = 1 (the LAE problem), by FISTA with step
 * 1/L, L = ‖G‖_F ≥ λ_max(G) for the Gram matrix G of the (centred) anchors. Centring at the
 * anchors' mean leaves the objective unchanged on the simplex but removes the large common
 * component that would otherwise make G ill-conditioned.
 */
export function localAnchorEmbedding(x: ArrayLike<number>, U: Matrix, anchors: ArrayLike<number>, maxIter = 300, tol = 1e-14): Float64Array {
  const r = anchors.length;
  const d = U.d;
  const c = new Float64Array(d);
  for (let q = 0; q < r; q++) for (let k = 0; k < d; k++) c[k] += U.data[anchors[q] * d + k] / r;
  // G = Vᵀ V and b = Vᵀ(x − c) with V's columns u_j − c.
  const G = new Float64Array(r * r);
  const b = new Float64Array(r);
  for (let p = 0; p < r; p++) {
    const up = anchors[p] * d;
    for (let k = 0; k < d; k++) b[p] += (U.data[up + k] - c[k]) * (x[k] - c[k]);
    for (let q = p; q < r; q++) {
      const uq = anchors[q] * d;
      let g = 0;
      for (let k = 0; k < d; k++) g += (U.data[up + k] - c[k]) * (U.data[uq + k] - c[k]);
      G[p * r + q] = g;
      G[q * r + p] = g;
    }
  }
  let L = 0;
  for (let k = 0; k < r * r; k++) L += G[k] * G[k];
  L = Math.sqrt(L);
  let z: Float64Array = new Float64Array(r).fill(1 / r);
  if (!(L > 0)) return z; // all anchors coincide: any simplex point reconstructs equally well
  let zPrev: Float64Array = Float64Array.from(z);
  const v = new Float64Array(r);
  const grad = new Float64Array(r);
  let tk = 1;
  for (let it = 0; it < maxIter; it++) {
    const tNext = (1 + Math.sqrt(1 + 4 * tk * tk)) / 2;
    const mom = (tk - 1) / tNext;
    for (let p = 0; p < r; p++) v[p] = z[p] + mom * (z[p] - zPrev[p]);
    for (let p = 0; p < r; p++) {
      let g = -b[p];
      for (let q = 0; q < r; q++) g += G[p * r + q] * v[q];
      grad[p] = v[p] - g / L;
    }
    const zNew = projectToSimplex(grad);
    let delta = 0;
    for (let p = 0; p < r; p++) delta += (zNew[p] - z[p]) ** 2;
    zPrev = z;
    z = zNew;
    tk = tNext;
    if (delta < tol) break;
  }
  return z;
}

/** Euclidean projection onto the probability simplex (sort-based; Duchi et al. 2008). */
export function projectToSimplex(v: ArrayLike<number>): Float64Array {
  const r = v.length;
  const u = Array.from(v).sort((a, b) => b - a);
  let cum = 0;
  let theta = 0;
  for (let j = 0; j < r; j++) {
    cum += u[j];
    const t = (cum - 1) / (j + 1);
    if (u[j] - t > 0) theta = t;
  }
  const z = new Float64Array(r);
  for (let j = 0; j < r; j++) z[j] = Math.max(v[j] - theta, 0);
  return z;
}

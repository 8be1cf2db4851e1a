/**
 * FLGP step 3 (arXiv 2405.13342, section 3.2): the reduced-rank transition matrix and its
 * spectrum without ever forming an n×n matrix.
 *
 *   W = Z Λ⁻¹ Zᵀ, Λ = diag(Zᵀ1)          (two-step random walk points → anchors → points)
 *   A = Z Λ^{-1/2}, so W = A Aᵀ
 *   AᵀA = Λ^{-1/2} ZᵀZ Λ^{-1/2}  (s×s)   → eigenpairs (σ_k², w_k)
 *   v_k = A w_k / σ_k                     (truncated SVD: left singular vectors = eigenvectors of W)
 *   graph Laplacian L = I − W, eigenvalues μ_k = 1 − σ_k²
 *
 * Cost O(n·r² + s³ + n·r·K). Eigenvectors are stored scaled to length √n, as in the authors'
 * package, so that the heat kernel's diagonal averages Σ_k e^{−tμ_k} (order one).
 */
import { DataError } from '../../core/errors';
import type { SparseZ } from './affinity';
import { symEig } from '../../core/linalg';

export interface Spectrum {
  n: number;
  /** Number of eigenpairs kept. */
  K: number;
  /** Eigenvalues σ_k² of W = A Aᵀ, descending (the first is 1 for a connected anchor graph). */
  sigma2: Float64Array;
  /** Graph-Laplacian eigenvalues μ_k = 1 − σ_k², ascending, clamped at 0. */
  mu: Float64Array;
  /** n×K row-major: column k is √n · v_k. */
  phi: Float64Array;
}

/** Λ^{-1/2} from the column sums of Z (0 for an anchor no point uses). */
export function invSqrtColSums(Z: SparseZ): Float64Array {
  const col = new Float64Array(Z.s);
  for (let e = 0; e < Z.idx.length; e++) col[Z.idx[e]] += Z.val[e];
  const out = new Float64Array(Z.s);
  for (let j = 0; j < Z.s; j++) out[j] = col[j] > 0 ? 1 / Math.sqrt(col[j]) : 0;
  return out;
}

/** AᵀA (s×s, row-major) accumulated from Z's sparse rows: O(n·r²). */
export function gramAtA(Z: SparseZ, lamInvSqrt: Float64Array): Float64Array {
  const { s, r, n } = Z;
  const M = new Float64Array(s * s);
  for (let i = 0; i < n; i++) {
    const o = i * r;
    for (let p = 0; p < r; p++) {
      const jp = Z.idx[o + p];
      const ap = Z.val[o + p] * lamInvSqrt[jp];
      for (let q = 0; q < r; q++) {
        const jq = Z.idx[o + q];
        M[jp * s + jq] += ap * Z.val[o + q] * lamInvSqrt[jq];
      }
    }
  }
  return M;
}

/**
 * Top-K eigenpairs of the n×n transition matrix W = A Aᵀ through the s×s problem for AᵀA.
 * Pairs with σ_k² ≤ 1e-10 (null directions) are dropped, so K may come back smaller.
 */
export function spectrumFromZ(Z: SparseZ, K: number): Spectrum {
  const { n, s, r } = Z;
  if (!Number.isInteger(K) || K < 1) throw new DataError(`K must be a positive integer (got ${K})`, { where: 'flgp: spectrum' });
  const lam = invSqrtColSums(Z);
  const eig = symEig(gramAtA(Z, lam), s);
  let keep = 0;
  while (keep < Math.min(K, s) && eig.values[keep] > 1e-10) keep++;
  const sigma2 = new Float64Array(keep);
  const mu = new Float64Array(keep);
  for (let k = 0; k < keep; k++) {
    sigma2[k] = Math.min(eig.values[k], 1);
    mu[k] = Math.max(0, 1 - eig.values[k]);
  }
  // phi[i, k] = √n · (A w_k)_i / σ_k, with (A w)_i = Σ_q Z_iq Λ^{-1/2}_jq w_jq.
  const phi = new Float64Array(n * keep);
  const scale = new Float64Array(keep);
  for (let k = 0; k < keep; k++) scale[k] = Math.sqrt(n) / Math.sqrt(eig.values[k]);
  for (let i = 0; i < n; i++) {
    const o = i * r;
    const po = i * keep;
    for (let q = 0; q < r; q++) {
      const j = Z.idx[o + q];
      const a = Z.val[o + q] * lam[j];
      if (a === 0) continue;
      const wrow = j * s;
      for (let k = 0; k < keep; k++) phi[po + k] += a * eig.vectors[wrow + k];
    }
    for (let k = 0; k < keep; k++) phi[po + k] *= scale[k];
  }
  return { n, K: keep, sigma2, mu, phi };
}

/** Heat-kernel prior variances γ_k = exp(−t·μ_k) of the eigen-coefficients (C_t = Φ diag(γ) Φᵀ). */
export function heatWeights(spec: Spectrum, t: number): Float64Array {
  const g = new Float64Array(spec.K);
  for (let k = 0; k < spec.K; k++) g[k] = Math.exp(-t * spec.mu[k]);
  return g;
}

/**
 * A block of the heat-kernel covariance C_t[rows, cols] = Σ_k e^{−tμ_k} φ_k(i) φ_k(j)
 * (|rows|×|cols|, row-major). Only ever called with the labelled block or an n×m cross block.
 */
export function heatKernelBlock(spec: Spectrum, t: number, rows: ArrayLike<number>, cols: ArrayLike<number>): Float64Array {
  const K = spec.K;
  const g = heatWeights(spec, t);
  const out = new Float64Array(rows.length * cols.length);
  for (let a = 0; a < rows.length; a++) {
    const ia = rows[a] * K;
    for (let b = 0; b < cols.length; b++) {
      const ib = cols[b] * K;
      let v = 0;
      for (let k = 0; k < K; k++) v += g[k] * spec.phi[ia + k] * spec.phi[ib + k];
      out[a * cols.length + b] = v;
    }
  }
  return out;
}

/** Rows `idx` of Φ (|idx|×K). */
export function phiRows(spec: Spectrum, idx: ArrayLike<number>): Float64Array {
  const K = spec.K;
  const out = new Float64Array(idx.length * K);
  for (let a = 0; a < idx.length; a++) out.set(spec.phi.subarray(idx[a] * K, (idx[a] + 1) * K), a * K);
  return out;
}

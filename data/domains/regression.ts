/**
 * GP regression with the FLGP heat-kernel prior (arXiv 2405.13342, section 3.3, Gaussian
 * likelihood): y_L = Φ_L β + ε, β ~ N(0, diag e^{−tμ}), ε ~ N(0, σ²I), with (t, σ²) chosen by
 * the exact log marginal likelihood. Everything is computed in the K-dimensional eigen basis via
 * Woodbury and the matrix-determinant lemma, so a fit costs O(m·K² + K³) per (t, σ²).
 */
import { DataError } from '../../core/errors';
import { cholesky, cholLogDet, forwardSolve, backSolve } from '../../core/linalg';
import type { EigenPosterior } from './laplace';
import { predictEigen } from './laplace';
import { maximiseLog } from './search';
import { heatWeights, phiRows, Spectrum } from './spectrum';

/**
 * Posterior over β and log N(y | 0, Φ_L Γ Φ_Lᵀ + σ²I):
 *   (σ²I + ΨΨᵀ)⁻¹ = σ⁻²I − σ⁻⁴ Ψ B⁻¹ Ψᵀ,  det = σ^{2m} det B,  B = I + ΨᵀΨ/σ²,  Ψ = Φ_L Γ^{½}.
 */
export function gpRegressionEigen(phiL: Float64Array, gamma: Float64Array, y: ArrayLike<number>, noise: number): EigenPosterior {
  const m = y.length;
  const K = gamma.length;
  const sg = gamma.map(Math.sqrt);
  const B = new Float64Array(K * K);
  const c = new Float64Array(K);
  let yy = 0;
  for (let i = 0; i < m; i++) {
    yy += y[i] * y[i];
    const o = i * K;
    for (let k = 0; k < K; k++) {
      const pk = phiL[o + k] * sg[k];
      c[k] += (pk * y[i]) / noise;
      for (let l = k; l < K; l++) B[k * K + l] += (pk * phiL[o + l] * sg[l]) / noise;
    }
  }
  for (let k = 0; k < K; k++) {
    B[k * K + k] += 1;
    for (let l = 0; l < k; l++) B[k * K + l] = B[l * K + k];
  }
  const L = cholesky(B, K, 'flgp/linalg');
  const alpha = backSolve(L, K, forwardSolve(L, K, c));
  let cBc = 0;
  for (let k = 0; k < K; k++) cBc += c[k] * alpha[k];
  const logEvidence = -0.5 * (yy / noise - cBc) - 0.5 * (m * Math.log(noise) + cholLogDet(L, K)) - 0.5 * m * Math.log(2 * Math.PI);
  const mean = new Float64Array(K);
  for (let k = 0; k < K; k++) mean[k] = sg[k] * alpha[k];
  const cov = new Float64Array(K * K);
  const e = new Float64Array(K);
  for (let col = 0; col < K; col++) {
    e.fill(0);
    e[col] = 1;
    const x = backSolve(L, K, forwardSolve(L, K, e));
    for (let r = 0; r < K; r++) cov[r * K + col] = sg[r] * x[r] * sg[col];
  }
  return { logEvidence, K, mean, cov, route: 'weight', iterations: 1 };
}

export interface RegressionFit {
  t: number;
  noise: number;
  offset: number;
  logEvidence: number;
  posterior: EigenPosterior;
  /** Predictive mean and latent variance (noise excluded) for all n points. */
  predict(): { mean: Float64Array; variance: Float64Array };
}

/**
 * Chooses (t, σ²) by marginal likelihood: σ² on a log grid relative to var(y), t by grid plus
 * golden-section on log t for each σ². Targets are centred (the constant eigenvector, μ = 0,
 * would otherwise have to carry the mean with prior variance 1).
 */
export function fitHeatKernelRegression(spec: Spectrum, index: ArrayLike<number>, y: ArrayLike<number>, tRange: [number, number] = [1e-3, 1e4]): RegressionFit {
  const m = index.length;
  if (m < 2 || y.length !== m) throw new DataError(`need ≥ 2 labelled targets with matching indices (got ${m} / ${y.length})`, { where: 'flgp: regression' });
  let offset = 0;
  for (let i = 0; i < m; i++) offset += y[i] / m;
  const yc = Float64Array.from(y, (v) => v - offset);
  let varY = 0;
  for (const v of yc) varY += (v * v) / m;
  varY = Math.max(varY, 1e-12);
  const phiL = phiRows(spec, index);
  let best: { t: number; noise: number; post: EigenPosterior } | null = null;
  for (let e = -4; e <= 0; e += 0.5) {
    const noise = varY * 10 ** e;
    const r = maximiseLog((t) => {
      const post = gpRegressionEigen(phiL, heatWeights(spec, t), yc, noise);
      return { value: post.logEvidence, payload: post };
    }, { lo: tRange[0], hi: tRange[1] });
    if (!best || r.value > best.post.logEvidence) best = { t: r.x, noise, post: r.payload };
  }
  const b = best!;
  return {
    t: b.t,
    noise: b.noise,
    offset,
    logEvidence: b.post.logEvidence,
    posterior: b.post,
    predict: () => {
      const p = predictEigen(spec.phi, spec.n, b.post);
      for (let i = 0; i < p.mean.length; i++) p.mean[i] += offset;
      return p;
    },
  };
}

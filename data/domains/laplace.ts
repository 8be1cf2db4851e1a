/**
 * Binary GP classification with the logistic likelihood by the Laplace approximation
 * (Rasmussen & Williams 2006, Algorithms 3.1 and 3.2), used by FLGP (arXiv 2405.13342, section
 * 3.3) on the heat-kernel prior and by the RBF baseline.
 *
 * Two equivalent routes for a low-rank prior C = Φ_L Γ Φ_Lᵀ (Φ_L: m×K, Γ = diag γ):
 * - function space: Newton on the m latent values with B = I + W^{½} C W^{½} (m×m), R&W 3.1;
 * - weight space: Newton on K whitened coefficients α (f = Φ_L Γ^{½} α) with B = I + Γ^{½}ΦᵀWΦΓ^{½}.
 * Sylvester's identity makes the two log|B| equal, so both give the same Laplace evidence and
 * the same Gaussian posterior over β = Γ^{½}α; `auto` picks whichever matrix is smaller.
 */
import { cholesky, cholLogDet, forwardSolve, backSolve } from '../../core/linalg';

/** log σ(f) for label 1, log σ(−f) for label 0, computed without overflow. */
export function logLik(f: number, y: number): number {
  const z = y === 1 ? f : -f;
  return z >= 0 ? -Math.log1p(Math.exp(-z)) : z - Math.log1p(Math.exp(z));
}

export function sigmoid(f: number): number {
  return f >= 0 ? 1 / (1 + Math.exp(-f)) : Math.exp(f) / (1 + Math.exp(f));
}

/** Probit approximation of E[σ(f)] for f ~ N(mean, var) (MacKay 1992; R&W eq. 3.25). */
export function probitProbability(mean: number, variance: number): number {
  return sigmoid(mean / Math.sqrt(1 + (Math.PI * Math.max(variance, 0)) / 8));
}

export interface LaplaceFS {
  logEvidence: number;
  /** Posterior mode of the m latent values. */
  f: Float64Array;
  /** ∇ log p(y|f̂) = y − π̂; the predictive mean at x* is k*ᵀ a (R&W eq. 3.21). */
  a: Float64Array;
  /** √W at the mode. */
  sW: Float64Array;
  /** Cholesky factor of B = I + √W C √W at the mode. */
  L: Float64Array;
  iterations: number;
}

/** R&W Algorithm 3.1 on an explicit m×m covariance C; labels y ∈ {0, 1}. */
export function laplaceFunctionSpace(C: Float64Array, y: ArrayLike<number>, maxIter = 60, tol = 1e-10): LaplaceFS {
  const m = y.length;
  let f: Float64Array = new Float64Array(m);
  const pi = new Float64Array(m);
  const sW = new Float64Array(m);
  const b = new Float64Array(m);
  let prevObj = -Infinity;
  let it = 0;
  const factor = (): Float64Array => {
    for (let i = 0; i < m; i++) {
      pi[i] = sigmoid(f[i]);
      sW[i] = Math.sqrt(pi[i] * (1 - pi[i]));
    }
    const B = new Float64Array(m * m);
    for (let i = 0; i < m; i++) for (let j = 0; j < m; j++) B[i * m + j] = (i === j ? 1 : 0) + sW[i] * C[i * m + j] * sW[j];
    return cholesky(B, m, 'flgp/linalg');
  };
  for (; it < maxIter; it++) {
    const L = factor();
    for (let i = 0; i < m; i++) b[i] = sW[i] * sW[i] * f[i] + (y[i] - pi[i]);
    // a = b − √W Lᵀ\(L\(√W C b))
    const Cb = matVec(C, m, b);
    for (let i = 0; i < m; i++) Cb[i] *= sW[i];
    const u = backSolve(L, m, forwardSolve(L, m, Cb));
    const a = new Float64Array(m);
    for (let i = 0; i < m; i++) a[i] = b[i] - sW[i] * u[i];
    const fNew = matVec(C, m, a);
    let obj = 0;
    for (let i = 0; i < m; i++) obj += -0.5 * a[i] * fNew[i] + logLik(fNew[i], y[i]);
    f = fNew;
    if (Math.abs(obj - prevObj) <= tol * (1 + Math.abs(obj))) {
      it++;
      break;
    }
    prevObj = obj;
  }
  // Evidence and predictive quantities at the final mode (R&W eq. 3.32).
  const L = factor();
  const a = new Float64Array(m);
  let lik = 0;
  for (let i = 0; i < m; i++) {
    a[i] = y[i] - pi[i];
    lik += logLik(f[i], y[i]);
  }
  let quad = 0;
  for (let i = 0; i < m; i++) quad += a[i] * f[i];
  return { logEvidence: lik - 0.5 * quad - 0.5 * cholLogDet(L, m), f, a, sW, L, iterations: it };
}

/** Predictive latent mean and variance at test points from a function-space fit (R&W Alg. 3.2). */
export function predictFunctionSpace(fit: LaplaceFS, cross: Float64Array, kss: ArrayLike<number>): { mean: Float64Array; variance: Float64Array } {
  const m = fit.a.length;
  const nStar = kss.length;
  const mean = new Float64Array(nStar);
  const variance = new Float64Array(nStar);
  const v = new Float64Array(m);
  for (let p = 0; p < nStar; p++) {
    let mu = 0;
    for (let i = 0; i < m; i++) {
      const k = cross[p * m + i];
      mu += k * fit.a[i];
      v[i] = fit.sW[i] * k;
    }
    const w = forwardSolve(fit.L, m, v);
    let q = 0;
    for (let i = 0; i < m; i++) q += w[i] * w[i];
    mean[p] = mu;
    variance[p] = Math.max(kss[p] - q, 0);
  }
  return { mean, variance };
}

/** Gaussian (Laplace) posterior over the eigen-coefficients β of f = Φβ. */
export interface EigenPosterior {
  logEvidence: number;
  K: number;
  /** Posterior mean of β (K). */
  mean: Float64Array;
  /** Posterior covariance of β (K×K row-major). */
  cov: Float64Array;
  route: 'function' | 'weight';
  iterations: number;
  /** Weight route only: the whitened mode α̂ (β̂ = Γ^{½}α̂), usable as a warm start. */
  alpha?: Float64Array;
}

/**
 * Laplace fit for the low-rank prior f_L = Φ_L β, β ~ N(0, diag γ), labels y ∈ {0, 1}.
 * `route: 'auto'` uses function space when m ≤ K (Newton on the m labelled points), weight space
 * otherwise; both return the same posterior over β.
 */
export function laplaceEigen(phiL: Float64Array, gamma: Float64Array, y: ArrayLike<number>, route: 'auto' | 'function' | 'weight' = 'auto', warm?: Float64Array): EigenPosterior {
  const m = y.length;
  const K = gamma.length;
  const useFunction = route === 'function' || (route === 'auto' && m <= K);
  return useFunction ? eigenViaFunctionSpace(phiL, gamma, y, m, K) : eigenViaWeightSpace(phiL, gamma, y, m, K, warm);
}

function eigenViaFunctionSpace(phiL: Float64Array, gamma: Float64Array, y: ArrayLike<number>, m: number, K: number): EigenPosterior {
  // C_LL = Φ_L Γ Φ_Lᵀ: the m×m labelled block of the heat kernel.
  const C = new Float64Array(m * m);
  for (let i = 0; i < m; i++) {
    for (let j = i; j < m; j++) {
      let v = 0;
      for (let k = 0; k < K; k++) v += gamma[k] * phiL[i * K + k] * phiL[j * K + k];
      C[i * m + j] = v;
      C[j * m + i] = v;
    }
  }
  const fit = laplaceFunctionSpace(C, y);
  // β̂ = Γ Φ_Lᵀ a;  Cov β = Γ − Qᵀ Q with Q = L⁻¹ √W Φ_L Γ.
  const mean = new Float64Array(K);
  for (let k = 0; k < K; k++) {
    let v = 0;
    for (let i = 0; i < m; i++) v += phiL[i * K + k] * fit.a[i];
    mean[k] = gamma[k] * v;
  }
  const Q = new Float64Array(m * K);
  const col = new Float64Array(m);
  for (let k = 0; k < K; k++) {
    for (let i = 0; i < m; i++) col[i] = fit.sW[i] * phiL[i * K + k] * gamma[k];
    const w = forwardSolve(fit.L, m, col);
    for (let i = 0; i < m; i++) Q[i * K + k] = w[i];
  }
  const cov = new Float64Array(K * K);
  for (let k = 0; k < K; k++) {
    for (let l = k; l < K; l++) {
      let v = 0;
      for (let i = 0; i < m; i++) v += Q[i * K + k] * Q[i * K + l];
      const c = (k === l ? gamma[k] : 0) - v;
      cov[k * K + l] = c;
      cov[l * K + k] = c;
    }
  }
  return { logEvidence: fit.logEvidence, K, mean, cov, route: 'function', iterations: fit.iterations };
}

/** Newton in whitened weights; `warm` (a previous α̂, e.g. at a nearby t) only changes the start. */
function eigenViaWeightSpace(phiL: Float64Array, gamma: Float64Array, y: ArrayLike<number>, m: number, K: number, warm?: Float64Array): EigenPosterior {
  const sg = gamma.map(Math.sqrt);
  const Psi = new Float64Array(m * K); // Ψ = Φ_L Γ^{½}
  for (let i = 0; i < m; i++) for (let k = 0; k < K; k++) Psi[i * K + k] = phiL[i * K + k] * sg[k];
  let alpha: Float64Array = warm && warm.length === K ? Float64Array.from(warm) : new Float64Array(K);
  const f = new Float64Array(m);
  const w = new Float64Array(m);
  const objective = (al: Float64Array): number => {
    let o = 0;
    for (let k = 0; k < K; k++) o -= 0.5 * al[k] * al[k];
    for (let i = 0; i < m; i++) {
      let fi = 0;
      for (let k = 0; k < K; k++) fi += Psi[i * K + k] * al[k];
      o += logLik(fi, y[i]);
    }
    return o;
  };
  const hessian = (): Float64Array => {
    // B = I + Ψᵀ W Ψ at the current f (f and w filled by the caller)
    const B = new Float64Array(K * K);
    for (let i = 0; i < m; i++) {
      const wi = w[i];
      if (wi === 0) continue;
      const o = i * K;
      for (let k = 0; k < K; k++) {
        const a = wi * Psi[o + k];
        for (let l = k; l < K; l++) B[k * K + l] += a * Psi[o + l];
      }
    }
    for (let k = 0; k < K; k++) {
      B[k * K + k] += 1;
      for (let l = 0; l < k; l++) B[k * K + l] = B[l * K + k];
    }
    return B;
  };
  const refresh = (al: Float64Array): void => {
    for (let i = 0; i < m; i++) {
      let fi = 0;
      for (let k = 0; k < K; k++) fi += Psi[i * K + k] * al[k];
      f[i] = fi;
      const p = sigmoid(fi);
      w[i] = p * (1 - p);
    }
  };
  let obj = objective(alpha);
  if (warm && obj < objective(new Float64Array(K))) {
    alpha = new Float64Array(K); // a poor warm start: fall back to the prior mode
    obj = objective(alpha);
  }
  let it = 0;
  for (; it < 60; it++) {
    refresh(alpha);
    const L = cholesky(hessian(), K, 'flgp/linalg');
    // Newton: α' = B⁻¹ Ψᵀ (W f + y − π)
    const rhs = new Float64Array(K);
    for (let i = 0; i < m; i++) {
      const g = w[i] * f[i] + (y[i] - sigmoid(f[i]));
      for (let k = 0; k < K; k++) rhs[k] += Psi[i * K + k] * g;
    }
    let next: Float64Array = backSolve(L, K, forwardSolve(L, K, rhs));
    let nextObj = objective(next);
    // The log-posterior is concave; halving only guards against overshoot in flat regions.
    for (let h = 0; h < 30 && nextObj < obj; h++) {
      const half = new Float64Array(K);
      for (let k = 0; k < K; k++) half[k] = 0.5 * (alpha[k] + next[k]);
      next = half;
      nextObj = objective(next);
    }
    const gain = nextObj - obj;
    alpha = next;
    obj = nextObj;
    if (gain <= 1e-10 * (1 + Math.abs(obj))) {
      it++;
      break;
    }
  }
  refresh(alpha);
  const L = cholesky(hessian(), K, 'flgp/linalg');
  const logEvidence = obj - 0.5 * cholLogDet(L, K);
  const mean = new Float64Array(K);
  for (let k = 0; k < K; k++) mean[k] = sg[k] * alpha[k];
  // Cov β = Γ^{½} B⁻¹ Γ^{½}, B⁻¹ = L⁻ᵀ L⁻¹ column by column.
  const cov = new Float64Array(K * K);
  const e = new Float64Array(K);
  for (let c = 0; c < K; c++) {
    e.fill(0);
    e[c] = 1;
    const x = backSolve(L, K, forwardSolve(L, K, e));
    for (let r = 0; r < K; r++) cov[r * K + c] = sg[r] * x[r] * sg[c];
  }
  return { logEvidence, K, mean, cov, route: 'weight', iterations: it, alpha };
}

/** Latent mean φ_iᵀβ̂ and variance φ_iᵀ Σ_β φ_i for every row of Φ (n×K): O(n·K²). */
export function predictEigen(phi: Float64Array, n: number, post: EigenPosterior): { mean: Float64Array; variance: Float64Array } {
  const K = post.K;
  const mean = new Float64Array(n);
  const variance = new Float64Array(n);
  const S = post.cov;
  for (let i = 0; i < n; i++) {
    const o = i * K;
    let mu = 0;
    let v = 0;
    for (let k = 0; k < K; k++) {
      const pk = phi[o + k];
      mu += pk * post.mean[k];
      let row = 0.5 * S[k * K + k] * pk;
      for (let l = k + 1; l < K; l++) row += S[k * K + l] * phi[o + l];
      v += pk * row;
    }
    mean[i] = mu;
    variance[i] = Math.max(2 * v, 0);
  }
  return { mean, variance };
}

function matVec(M: Float64Array, m: number, x: ArrayLike<number>): Float64Array {
  const out = new Float64Array(m);
  for (let i = 0; i < m; i++) {
    let s = 0;
    for (let j = 0; j < m; j++) s += M[i * m + j] * x[j];
    out[i] = s;
  }
  return out;
}

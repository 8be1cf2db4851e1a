/**
 * Baselines that see the same labels as FLGP but not the unlabelled geometry:
 * - exact GP classification with an RBF kernel on the raw coordinates (Laplace, R&W Alg. 3.1/3.2,
 *   lengthscale and amplitude by the Laplace evidence), one-vs-rest like FLGP;
 * - k-nearest-neighbour vote;
 * - multinomial logistic regression (L2, Nesterov-accelerated gradient descent).
 * They exist to make FLGP's numbers meaningful (tests and scripts/bench/flgp.ts).
 */
import type { Matrix } from './anchors';
import { FLGPPrediction, Labels, normaliseLabels, predictFromFits } from './flgp';
import { laplaceFunctionSpace, LaplaceFS, predictFunctionSpace } from './laplace';
import { sqDist } from '../../core/linalg';

export interface RbfGpResult extends FLGPPrediction {
  /** Chosen (lengthscale, amplitude, log evidence) per binary fit. */
  hyper: { lengthscale: number; amplitude: number; logEvidence: number }[];
}

/** Exact RBF-kernel GP classifier trained on the labelled points only, predicting all n. */
export function rbfGpClassify(X: Matrix, labels: Labels, nClasses?: number): RbfGpResult {
  const lab = normaliseLabels(labels, X.n, nClasses);
  const m = lab.index.length;
  const D2 = new Float64Array(m * m);
  const dists: number[] = [];
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < m; j++) {
      D2[i * m + j] = sqDist(X.data, lab.index[i], X.data, lab.index[j], X.d);
      if (j > i) dists.push(Math.sqrt(D2[i * m + j]));
    }
  }
  dists.sort((a, b) => a - b);
  const median = dists[Math.floor(dists.length / 2)] || 1;
  const C = lab.nClasses;
  const targets = C === 2 ? [Uint8Array.from(lab.cls, (c) => (c === 1 ? 1 : 0))] : Array.from({ length: C }, (_, c) => Uint8Array.from(lab.cls, (k) => (k === c ? 1 : 0)));
  const hyper: RbfGpResult['hyper'] = [];
  const lat = targets.map((y) => {
    let best: { fit: LaplaceFS; ell: number; amp: number } | null = null;
    for (let e = -5; e <= 2; e += 0.5) {
      const ell = median * 2 ** e;
      for (const amp of [1, 4, 16, 64, 256, 1024]) {
        const Kmat = D2.map((d2) => amp * Math.exp(-d2 / (2 * ell * ell)));
        for (let i = 0; i < m; i++) Kmat[i * m + i] += 1e-8 * amp; // jitter
        const fit = laplaceFunctionSpace(Kmat, y);
        if (!best || fit.logEvidence > best.fit.logEvidence) best = { fit, ell, amp };
      }
    }
    const b = best!;
    hyper.push({ lengthscale: b.ell, amplitude: b.amp, logEvidence: b.fit.logEvidence });
    // Predict in row blocks so the n×m cross block never has to exist at once.
    const mean = new Float64Array(X.n);
    const variance = new Float64Array(X.n);
    const block = 2048;
    for (let start = 0; start < X.n; start += block) {
      const end = Math.min(X.n, start + block);
      const cross = new Float64Array((end - start) * m);
      for (let p = start; p < end; p++) {
        for (let i = 0; i < m; i++) cross[(p - start) * m + i] = b.amp * Math.exp(-sqDist(X.data, p, X.data, lab.index[i], X.d) / (2 * b.ell * b.ell));
      }
      const pr = predictFunctionSpace(b.fit, cross, new Float64Array(end - start).fill(b.amp));
      mean.set(pr.mean, start);
      variance.set(pr.variance, start);
    }
    return { mean, variance };
  });
  return { ...predictFromFits(X.n, C, lat), hyper };
}

/** k-nearest-neighbour majority vote among the labelled points (ties → nearer neighbour wins). */
export function knnClassify(X: Matrix, labels: Labels, k = 5, nClasses?: number): Int32Array {
  const lab = normaliseLabels(labels, X.n, nClasses);
  const m = lab.index.length;
  const kk = Math.min(k, m);
  const out = new Int32Array(X.n);
  const d = new Float64Array(m);
  const order = Array.from({ length: m }, (_, i) => i);
  for (let p = 0; p < X.n; p++) {
    for (let i = 0; i < m; i++) d[i] = sqDist(X.data, p, X.data, lab.index[i], X.d);
    order.sort((a, b) => d[a] - d[b] || a - b);
    const votes = new Float64Array(lab.nClasses);
    for (let q = 0; q < kk; q++) votes[lab.cls[order[q]]] += 1 + 1e-6 * (kk - q);
    let arg = 0;
    for (let c = 1; c < lab.nClasses; c++) if (votes[c] > votes[arg]) arg = c;
    out[p] = arg;
  }
  return out;
}

/**
 * Multinomial logistic regression with bias on the labelled rows, L2 penalty λ on the weights,
 * FISTA-style accelerated gradient with step 1/L, L = ½·λ_max(X̃ᵀX̃)/m + λ bounded by the
 * squared row norms (+1 for the bias). Predicts argmax for all n.
 */
export function logisticRegressionClassify(X: Matrix, labels: Labels, lambda = 1e-3, iters = 500, nClasses?: number): Int32Array {
  const lab = normaliseLabels(labels, X.n, nClasses);
  const m = lab.index.length;
  const C = lab.nClasses;
  const d1 = X.d + 1;
  let maxNorm = 0;
  for (const i of lab.index) {
    let t = 1;
    for (let k = 0; k < X.d; k++) t += X.data[i * X.d + k] ** 2;
    maxNorm = Math.max(maxNorm, t);
  }
  const L = 0.5 * maxNorm + lambda;
  let Wt = new Float64Array(C * d1);
  let Wprev = new Float64Array(C * d1);
  const V = new Float64Array(C * d1);
  const G = new Float64Array(C * d1);
  const logits = new Float64Array(C);
  let tk = 1;
  const row = (i: number, k: number) => (k === X.d ? 1 : X.data[i * X.d + k]);
  for (let it = 0; it < iters; it++) {
    const tNext = (1 + Math.sqrt(1 + 4 * tk * tk)) / 2;
    const mom = (tk - 1) / tNext;
    for (let q = 0; q < V.length; q++) V[q] = Wt[q] + mom * (Wt[q] - Wprev[q]);
    G.fill(0);
    for (let a = 0; a < m; a++) {
      const i = lab.index[a];
      let mx = -Infinity;
      for (let c = 0; c < C; c++) {
        let z = 0;
        for (let k = 0; k < d1; k++) z += V[c * d1 + k] * row(i, k);
        logits[c] = z;
        mx = Math.max(mx, z);
      }
      let sum = 0;
      for (let c = 0; c < C; c++) sum += (logits[c] = Math.exp(logits[c] - mx));
      for (let c = 0; c < C; c++) {
        const g = (logits[c] / sum - (lab.cls[a] === c ? 1 : 0)) / m;
        for (let k = 0; k < d1; k++) G[c * d1 + k] += g * row(i, k);
      }
    }
    const next = new Float64Array(C * d1);
    for (let c = 0; c < C; c++) {
      for (let k = 0; k < d1; k++) {
        const q = c * d1 + k;
        const reg = k === X.d ? 0 : lambda * V[q];
        next[q] = V[q] - (G[q] + reg) / L;
      }
    }
    Wprev = Wt;
    Wt = next;
    tk = tNext;
  }
  const out = new Int32Array(X.n);
  for (let i = 0; i < X.n; i++) {
    let arg = 0;
    let best = -Infinity;
    for (let c = 0; c < C; c++) {
      let z = 0;
      for (let k = 0; k < d1; k++) z += Wt[c * d1 + k] * row(i, k);
      if (z > best) {
        best = z;
        arg = c;
      }
    }
    out[i] = arg;
  }
  return out;
}

/** Fraction of points (optionally excluding some indices) whose prediction matches the truth. */
export function accuracy(pred: ArrayLike<number>, truth: ArrayLike<number>, exclude?: ArrayLike<number>): number {
  const skip = new Set(exclude ? Array.from(exclude) : []);
  let ok = 0;
  let total = 0;
  for (let i = 0; i < truth.length; i++) {
    if (skip.has(i)) continue;
    total++;
    if (pred[i] === truth[i]) ok++;
  }
  return total ? ok / total : NaN;
}

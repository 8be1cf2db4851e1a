/**
 * FLGP: fast graph-Laplacian heat-kernel Gaussian processes (He, Ma, Kang & Yang, arXiv
 * 2405.13342), transductive classification of n points from m labels in O(n·s·r + s³):
 *   1. s anchors by k-means (anchors.ts)                                   [section 3.1]
 *   2. sparse n×s affinities Z over the r nearest anchors, SE or LAE (affinity.ts)
 *   3. A = Z Λ^{-1/2}, truncated SVD through AᵀA, μ_k = 1 − σ_k² (spectrum.ts)  [section 3.2]
 *   4. heat-kernel prior C_t = Σ_{k≤K} e^{−tμ_k} v_k v_kᵀ, one-vs-rest logistic GP by Laplace,
 *      t (and the SE bandwidth) by the Laplace-approximate marginal likelihood (laplace.ts)
 *                                                                          [section 3.3]
 * The model is transductive: it predicts the n points it was fitted on. To tag new documents,
 * fit on the union of labelled and new ones.
 */
import { DataError } from '../../core/errors';
import { kmeansAnchors, Matrix, nearestAnchors } from './anchors';
import { laeAffinity, meanNeighbourSqDist, seAffinity, SparseZ } from './affinity';
import { EigenPosterior, laplaceEigen, predictEigen, probitProbability } from './laplace';
import { toMatrix } from './matrix';
import { maximiseLog } from './search';
import { heatWeights, phiRows, Spectrum, spectrumFromZ } from './spectrum';

export type Labels = Map<number, number> | { index: ArrayLike<number>; classId: ArrayLike<number> };

export interface FLGPOptions {
  /** n points: rows (Float64Array or number[]) or a packed row-major matrix. */
  X: Float64Array[] | number[][] | Matrix;
  /** Labelled points: index → class id in [0, nClasses). */
  labels: Labels;
  /** Number of classes (default: largest labelled id + 1). */
  nClasses?: number;
  /** Number of anchors s (default min(300, ⌈n/10⌉)). */
  anchors?: number;
  /** Nearest anchors per point (paper: r = 3). */
  r?: number;
  /** Eigenpairs kept (default min(s, 100)). */
  K?: number;
  affinity?: 'se' | 'lae';
  seed: number;
  /**
   * SE only: bandwidth candidates as multiples a of the mean squared distance to the r nearest
   * anchors, 2h² = a·mean d² (default the authors' range 0.1..10, five values); the best is
   * chosen by the summed Laplace evidence.
   */
  bandwidths?: number[];
  /** Search range for the diffusion time t (default [1e-3, 1e4]). */
  tRange?: [number, number];
  /** Laplace route (default 'auto': function space when m ≤ K, weight space otherwise). */
  route?: 'auto' | 'function' | 'weight';
}

export interface ClassFit {
  t: number;
  logEvidence: number;
  posterior: EigenPosterior;
}

export interface FLGPPrediction {
  /** argmax class per point. */
  classes: Int32Array;
  /** n×C row-major class probabilities (one-vs-rest probit probabilities, normalised). */
  probs: Float64Array;
  /** Probability of the predicted class per point. */
  confidence: Float64Array;
}

export interface FLGPModel {
  n: number;
  nClasses: number;
  s: number;
  r: number;
  K: number;
  affinity: 'se' | 'lae';
  /** Chosen SE bandwidth multiplier (null for LAE) and h². */
  bandwidth: { multiplier: number; h2: number } | null;
  /** One binary fit for two classes (class 1 vs 0), else one per class (one-vs-rest). */
  fits: ClassFit[];
  /** Sum of the binary fits' log evidence at the chosen hyperparameters. */
  logEvidence: number;
  spectrum: Spectrum;
  anchors: Matrix;
  Z: SparseZ;
  labelledIndex: Int32Array;
  labelledClass: Int32Array;
  /** Latent mean and variance of binary fit c for all n points. */
  latent(c: number): { mean: Float64Array; variance: Float64Array };
  predict(): FLGPPrediction;
}

/** Validates and flattens the labels into parallel arrays. */
export function normaliseLabels(labels: Labels, n: number, nClasses?: number): { index: Int32Array; cls: Int32Array; nClasses: number } {
  const pairs: [number, number][] = labels instanceof Map ? [...labels.entries()] : Array.from({ length: labels.index.length }, (_, i) => [labels.index[i], labels.classId[i]]);
  if (labels instanceof Map === false && labels.index.length !== labels.classId.length) {
    throw new DataError(`labels.index has ${labels.index.length} entries but labels.classId has ${labels.classId.length}`, { where: 'flgp: labels' });
  }
  const seen = new Set<number>();
  let maxC = -1;
  for (const [i, c] of pairs) {
    if (!Number.isInteger(i) || i < 0 || i >= n) throw new DataError(`label index ${i} is outside [0, ${n})`, { where: 'flgp: labels' });
    if (!Number.isInteger(c) || c < 0) throw new DataError(`class id ${c} of point ${i} must be a non-negative integer`, { where: 'flgp: labels' });
    if (seen.has(i)) throw new DataError(`point ${i} is labelled twice`, { where: 'flgp: labels' });
    seen.add(i);
    maxC = Math.max(maxC, c);
  }
  const C = nClasses ?? maxC + 1;
  if (maxC >= C) throw new DataError(`class id ${maxC} is not below nClasses = ${C}`, { where: 'flgp: labels' });
  if (new Set(pairs.map((p) => p[1])).size < 2) throw new DataError('labels must cover at least two classes', { where: 'flgp: labels', hint: 'label at least one example of each domain' });
  pairs.sort((a, b) => a[0] - b[0]);
  return { index: Int32Array.from(pairs.map((p) => p[0])), cls: Int32Array.from(pairs.map((p) => p[1])), nClasses: C };
}

/** Binary targets of fit c: two classes → one fit (class 1 vs 0); else one-vs-rest. */
function binaryTargets(cls: Int32Array, nClasses: number): Uint8Array[] {
  if (nClasses === 2) return [Uint8Array.from(cls, (c) => (c === 1 ? 1 : 0))];
  return Array.from({ length: nClasses }, (_, c) => Uint8Array.from(cls, (k) => (k === c ? 1 : 0)));
}

/** t by the Laplace evidence for each binary problem on one spectrum. */
function fitClasses(spec: Spectrum, index: Int32Array, targets: Uint8Array[], tRange: [number, number], route: 'auto' | 'function' | 'weight', coarse = false): ClassFit[] {
  const phiL = phiRows(spec, index);
  return targets.map((y) => {
    let warm: Float64Array | undefined; // the previous t's mode: Newton then needs ~3 steps, not ~8
    const r = maximiseLog((t) => {
      const post = laplaceEigen(phiL, heatWeights(spec, t), y, route, warm);
      warm = post.alpha;
      return { value: post.logEvidence, payload: post };
    }, coarse ? { lo: tRange[0], hi: tRange[1], perDecade: 1, refine: 4 } : { lo: tRange[0], hi: tRange[1], perDecade: 2, refine: 10 });
    return { t: r.x, logEvidence: r.value, posterior: r.payload };
  });
}

export function fitFLGP(opts: FLGPOptions): FLGPModel {
  const X = toMatrix(opts.X);
  const { n } = X;
  const lab = normaliseLabels(opts.labels, n, opts.nClasses);
  const s = opts.anchors ?? Math.max(2, Math.min(300, Math.ceil(n / 10)));
  const r = opts.r ?? 3;
  const Kwant = opts.K ?? Math.min(s, 100);
  const affinity = opts.affinity ?? 'se';
  const tRange = opts.tRange ?? [1e-3, 1e4];
  const route = opts.route ?? 'auto';
  if (affinity !== 'se' && affinity !== 'lae') throw new DataError(`affinity must be 'se' or 'lae' (got ${String(affinity)})`, { where: 'flgp' });

  const U = kmeansAnchors(X, { s, seed: opts.seed });
  const nb = nearestAnchors(X, U, r);
  const targets = binaryTargets(lab.cls, lab.nClasses);

  type Cand = { Z: SparseZ; spec: Spectrum; fits: ClassFit[]; total: number; bandwidth: FLGPModel['bandwidth'] };
  // Bandwidth candidates are compared on a coarse t search; the winner then gets the full one.
  const evaluate = (Z: SparseZ, bandwidth: FLGPModel['bandwidth'], coarse: boolean): Cand => {
    const spec = spectrumFromZ(Z, Kwant);
    const fits = fitClasses(spec, lab.index, targets, tRange, route, coarse);
    return { Z, spec, fits, total: fits.reduce((a, f) => a + f.logEvidence, 0), bandwidth };
  };
  let best: Cand;
  if (affinity === 'lae') {
    best = evaluate(laeAffinity(X, U, nb), null, false);
  } else {
    const md2 = meanNeighbourSqDist(nb);
    const mults = opts.bandwidths ?? [0.1, 0.316, 1, 3.16, 10];
    let top: Cand | null = null;
    for (const a of mults) {
      const h2 = (a * md2) / 2;
      const c = evaluate(seAffinity(nb, s, h2), { multiplier: a, h2 }, mults.length > 1);
      if (!top || c.total > top.total) top = c;
    }
    if (!top) throw new DataError('bandwidths is empty', { where: 'flgp: bandwidths', hint: 'give at least one bandwidth multiplier' });
    best = mults.length > 1 ? evaluate(top.Z, top.bandwidth, false) : top;
  }
  const { spec, fits } = best;
  const latent = (c: number) => predictEigen(spec.phi, n, fits[c].posterior);
  return {
    n,
    nClasses: lab.nClasses,
    s,
    r,
    K: spec.K,
    affinity,
    bandwidth: best.bandwidth,
    fits,
    logEvidence: best.total,
    spectrum: spec,
    anchors: U,
    Z: best.Z,
    labelledIndex: lab.index,
    labelledClass: lab.cls,
    latent,
    predict: () => predictFromFits(n, lab.nClasses, fits.map((_, c) => latent(c))),
  };
}

/** Probit probabilities per binary fit, combined into normalised class probabilities. */
export function predictFromFits(n: number, C: number, lat: { mean: Float64Array; variance: Float64Array }[]): FLGPPrediction {
  const probs = new Float64Array(n * C);
  const classes = new Int32Array(n);
  const confidence = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const o = i * C;
    if (C === 2) {
      const p1 = probitProbability(lat[0].mean[i], lat[0].variance[i]);
      probs[o] = 1 - p1;
      probs[o + 1] = p1;
    } else {
      let sum = 0;
      for (let c = 0; c < C; c++) {
        probs[o + c] = probitProbability(lat[c].mean[i], lat[c].variance[i]);
        sum += probs[o + c];
      }
      for (let c = 0; c < C; c++) probs[o + c] /= sum;
    }
    let arg = 0;
    for (let c = 1; c < C; c++) if (probs[o + c] > probs[o + arg]) arg = c;
    classes[i] = arg;
    confidence[i] = probs[o + arg];
  }
  return { classes, probs, confidence };
}

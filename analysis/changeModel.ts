/**
 * The change-point model for training curves: y = S a + C(xi) b + noise, where S is a fixed,
 * smooth cubic B-spline background (a handful of knots spaced evenly in log-step, enough for a
 * power-law decay) and C(xi) the degree-1 B-spline basis on the free knots of the paper's chain
 * (arXiv 2405.13353). For linear splines a single knot is a slope change and a doubled knot
 * (two adjacent candidates) is a jump, as in the paper's simulation f3, so the free knots are
 * exactly the regime changes, and the smooth curvature of the decay never needs one.
 *
 * The background is profiled out once (Frisch-Waugh): with r = (I - P_S) y,
 *   RSS(xi) = |r|^2 - c' (C'(I-P_S)C + lambda I)^-1 c,  c = C' r,
 * which costs O(m s) per proposal. The two directions of C that S already spans (constants
 * and lines) are absorbed by the ridge and not counted: p = s + k parameters in the evidence.
 */
import { backSolveInPlace, choleskyInPlace, forwardSolveInPlace } from '../core/linalg';
import { designMatrix } from './bspline';
import type { KnotModel, KnotModelFactory } from './rjmcmc';
import { logEvidence } from './splineFit';

/**
 * Background knots in (0, 1) for `count` interior knots spaced evenly in log(1 + x) over the
 * original x range [x0, x1] (x = step), or evenly when the axis is already log-step.
 */
export function backgroundKnots(count: number, x0: number, x1: number, logAxis: boolean): number[] {
  const out: number[] = [];
  for (let j = 1; j <= count; j++) {
    const f = j / (count + 1);
    if (logAxis || x0 < 0) out.push(f);
    else {
      const v = Math.exp(Math.log1p(x0) + f * (Math.log1p(x1) - Math.log1p(x0))) - 1;
      out.push(Math.min(1 - 1e-9, Math.max(1e-9, (v - x0) / (x1 - x0))));
    }
  }
  return out;
}

/** A KnotModelFactory for free linear-spline knots over a fixed smooth background. */
export function backgroundChangeModel(bgKnots: number[], opts: { bgDegree?: number; ridge?: number } = {}): KnotModelFactory {
  const bgDegree = opts.bgDegree ?? 3;
  const ridge = opts.ridge ?? 1e-6;
  return (t: Float64Array, y: Float64Array): KnotModel => {
    const m = t.length;
    const bd = designMatrix(t, bgKnots, bgDegree, true);
    const s = bd.cols;
    const w = bgDegree + 1;
    // Dense S (m x s) and its Gram matrix.
    const S = new Float64Array(m * s);
    for (let i = 0; i < m; i++) for (let r = 0; r < w; r++) S[i * s + bd.first[i] + r] = bd.values[i * w + r];
    const L = new Float64Array(s * s);
    const sty = new Float64Array(s);
    for (let i = 0; i < m; i++) {
      for (let a = 0; a < s; a++) {
        const va = S[i * s + a];
        if (va === 0) continue;
        sty[a] += va * y[i];
        for (let b = 0; b <= a; b++) L[a * s + b] += va * S[i * s + b];
      }
    }
    let tr = 0;
    for (let a = 0; a < s; a++) tr += L[a * s + a];
    for (let a = 0; a < s; a++) L[a * s + a] += ridge * (tr / s);
    if (!choleskyInPlace(L, s)) throw new Error('background normal equations are not positive definite');
    const coef = Float64Array.from(sty);
    forwardSolveInPlace(L, s, coef);
    backSolveInPlace(L, s, coef);
    const r = new Float64Array(m);
    let rss0 = 0;
    for (let i = 0; i < m; i++) {
      let v = y[i];
      for (let a = 0; a < s; a++) v -= S[i * s + a] * coef[a];
      r[i] = v;
      rss0 += v * v;
    }
    return {
      logEvidence(interior: number[]): number {
        const k = interior.length;
        if (k === 0) return logEvidence(rss0, m, s);
        const cd = designMatrix(t, interior, 1, true);
        const p = cd.cols;
        const A = new Float64Array(p * p);
        const G = new Float64Array(s * p); // S'C, row-major s x p
        const c = new Float64Array(p);
        for (let i = 0; i < m; i++) {
          const f = cd.first[i];
          const v0 = cd.values[2 * i];
          const v1 = cd.values[2 * i + 1];
          c[f] += v0 * r[i];
          c[f + 1] += v1 * r[i];
          A[f * p + f] += v0 * v0;
          A[(f + 1) * p + f + 1] += v1 * v1;
          A[(f + 1) * p + f] += v0 * v1;
          A[f * p + f + 1] += v0 * v1;
          for (let a = 0; a < s; a++) {
            const sa = S[i * s + a];
            if (sa === 0) continue;
            G[a * p + f] += sa * v0;
            G[a * p + f + 1] += sa * v1;
          }
        }
        let trA = 0;
        for (let j = 0; j < p; j++) trA += A[j * p + j];
        // W = L^-1 G column by column; A -= W'W.
        for (let j = 0; j < p; j++) forwardSolveInPlace(L, s, G, j, p);
        for (let a = 0; a < p; a++) {
          for (let b = 0; b <= a; b++) {
            let v = 0;
            for (let q = 0; q < s; q++) v += G[q * p + a] * G[q * p + b];
            A[a * p + b] -= v;
            if (b !== a) A[b * p + a] = A[a * p + b];
          }
        }
        const lambda = ridge * (trA / p);
        for (let j = 0; j < p; j++) A[j * p + j] += lambda;
        if (!choleskyInPlace(A, p)) return -Infinity;
        const beta = Float64Array.from(c);
        forwardSolveInPlace(A, p, beta);
        backSolveInPlace(A, p, beta);
        let cb = 0;
        let bb = 0;
        for (let j = 0; j < p; j++) {
          cb += c[j] * beta[j];
          bb += beta[j] * beta[j];
        }
        const rss = Math.max(rss0 - cb - lambda * bb, rss0 * 1e-12);
        return logEvidence(rss, m, s + k);
      },
    };
  };
}

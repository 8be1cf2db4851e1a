/**
 * Ridge-stabilised least squares for a banded B-spline design, and the Gaussian evidence the
 * reversible-jump chain uses (arXiv 2405.13353, section 3).
 *
 * B'B is banded (bandwidth q) because each row of B has q+1 consecutive non-zeros, so a fit
 * costs O(m q^2 + p q^2) instead of O(m p^2): the chain can afford tens of thousands of
 * proposals. A small ridge `ridge * mean(diag(B'B))` (default 1e-6) keeps the system positive
 * definite when two adjacent candidate knots leave a basis function with (almost) no data, the
 * same guard the authors' ABMRS code adds (1e-8 I) and BARS adds (1e-2 trace/p).
 */
import { BandedDesign, designMatrix } from './bspline';
import type { RngStream } from '../core/rng';

export interface SplineFit {
  interior: Float64Array;
  beta: Float64Array;
  /** Residual sum of squares on the data the fit saw. */
  rss: number;
  /** Lower banded Cholesky factor of B'B + lambda I, row-major (p x (q+1)), for coefficient draws. */
  chol: Float64Array;
  degree: number;
  intercept: boolean;
}

/** Normal equations in lower-band storage: a[i*(q+1) + d] = (B'B)[i][i-d]; and B'y. */
function normalEquations(d: BandedDesign, y: ArrayLike<number>): { a: Float64Array; b: Float64Array } {
  const w = d.degree + 1;
  const p = d.cols;
  const a = new Float64Array(p * w);
  const b = new Float64Array(p);
  for (let i = 0; i < d.rows; i++) {
    const f = d.first[i];
    const off = i * w;
    for (let r = 0; r < w; r++) {
      const c = f + r;
      if (c < 0) continue;
      const v = d.values[off + r];
      b[c] += v * y[i];
      for (let s = 0; s <= r; s++) {
        const c2 = f + s;
        if (c2 < 0) continue;
        a[c * w + (r - s)] += v * d.values[off + s];
      }
    }
  }
  return { a, b };
}

/** In-place banded Cholesky of lower-band storage; returns false if not positive definite. */
export function bandedCholesky(a: Float64Array, p: number, q: number): boolean {
  const w = q + 1;
  for (let j = 0; j < p; j++) {
    let s = a[j * w];
    for (let k = Math.max(0, j - q); k < j; k++) {
      const l = a[j * w + (j - k)];
      s -= l * l;
    }
    if (!(s > 0)) return false;
    const djj = Math.sqrt(s);
    a[j * w] = djj;
    for (let i = j + 1; i <= Math.min(p - 1, j + q); i++) {
      let v = a[i * w + (i - j)];
      for (let k = Math.max(0, i - q); k < j; k++) v -= a[i * w + (i - k)] * a[j * w + (j - k)];
      a[i * w + (i - j)] = v / djj;
    }
  }
  return true;
}

/** Solves L z = b (forward) in place. */
function forward(l: Float64Array, p: number, q: number, b: Float64Array): void {
  const w = q + 1;
  for (let i = 0; i < p; i++) {
    let s = b[i];
    for (let k = Math.max(0, i - q); k < i; k++) s -= l[i * w + (i - k)] * b[k];
    b[i] = s / l[i * w];
  }
}

/** Solves L' z = b (backward) in place. */
function backward(l: Float64Array, p: number, q: number, b: Float64Array): void {
  const w = q + 1;
  for (let i = p - 1; i >= 0; i--) {
    let s = b[i];
    for (let k = i + 1; k <= Math.min(p - 1, i + q); k++) s -= l[k * w + (k - i)] * b[k];
    b[i] = s / l[i * w];
  }
}

/** Least-squares spline fit for a knot set. */
export function fitSpline(x: ArrayLike<number>, y: ArrayLike<number>, interior: ArrayLike<number>, degree: number, opts: { intercept?: boolean; ridge?: number } = {}): SplineFit {
  const intercept = opts.intercept ?? true;
  const ridge = opts.ridge ?? 1e-6;
  const d = designMatrix(x, interior, degree, intercept);
  const p = d.cols;
  const w = degree + 1;
  const { a, b } = normalEquations(d, y);
  let trace = 0;
  for (let j = 0; j < p; j++) trace += a[j * w];
  const lambda = ridge * Math.max(trace / p, 1e-300);
  for (let j = 0; j < p; j++) a[j * w] += lambda;
  if (!bandedCholesky(a, p, degree)) throw new Error('spline normal equations are not positive definite');
  const beta = Float64Array.from(b);
  forward(a, p, degree, beta);
  backward(a, p, degree, beta);
  let rss = 0;
  for (let i = 0; i < d.rows; i++) {
    let s = 0;
    for (let r = 0; r < w; r++) {
      const c = d.first[i] + r;
      if (c >= 0) s += d.values[i * w + r] * beta[c];
    }
    const e = y[i] - s;
    rss += e * e;
  }
  return { interior: Float64Array.from(interior), beta, rss, chol: a, degree, intercept };
}

/**
 * A draw of the coefficients from their conditional posterior N(beta_hat, sigma^2 (B'B)^-1)
 * (flat prior on beta given the knots), used for the pointwise credible band.
 */
export function drawCoefficients(fit: SplineFit, sigma: number, rng: RngStream): Float64Array {
  const p = fit.beta.length;
  const z = new Float64Array(p);
  for (let i = 0; i < p; i++) z[i] = rng.normal();
  backward(fit.chol, p, fit.degree, z); // z ~ N(0, (L L')^-1)
  const out = new Float64Array(p);
  for (let i = 0; i < p; i++) out[i] = fit.beta[i] + sigma * z[i];
  return out;
}

/**
 * Log evidence of a knot set with sigma^2 profiled out (its MLE RSS/m) and the BIC penalty
 * for the p spline coefficients: log p(y | xi) ~ -(m/2) log(RSS/m) - (p/2) log m. This is the
 * normal-model form the authors' reference code uses: the acceptance ratio is then
 * m^((k-k')/2) (RSS_k / RSS_k')^(m/2). Together with the prior C(n,k)^-gamma on knot sets it
 * is the EBIC of Chen & Chen (2008) (see knots.ts), the form the paper uses beyond the normal
 * model too.
 */
export function logEvidence(rss: number, m: number, p: number): number {
  return -0.5 * m * Math.log(Math.max(rss, 1e-300) / m) - 0.5 * p * Math.log(m);
}

/**
 * B-spline bases on [0, 1] for free-knot spline regression (arXiv 2405.13353, section 2: the
 * spline space for a knot set xi is spanned by the degree-q B-splines on the knot vector with
 * boundary knots 0 and 1 repeated q+1 times). Interior knots may coincide: a knot of
 * multiplicity r lowers continuity at that point to C^(q-r), so multiplicity q+1 is a jump
 * (for linear splines, q = 1, a doubled knot is a jump, as in the paper's simulation f3).
 *
 * `intercept: true` keeps all k+q+1 functions (R's `bs(..., intercept = TRUE)`, the authors'
 * default); `false` drops the first one.
 */

/** Full knot vector: q+1 zeros, the sorted interior knots, q+1 ones. */
export function knotVector(interior: ArrayLike<number>, degree: number): Float64Array {
  const k = interior.length;
  const t = new Float64Array(k + 2 * (degree + 1));
  for (let i = 0; i <= degree; i++) {
    t[i] = 0;
    t[k + degree + 1 + i] = 1;
  }
  for (let i = 0; i < k; i++) {
    const v = interior[i];
    if (!(v > 0 && v < 1)) throw new RangeError(`interior knot ${v} is not inside (0, 1)`);
    if (i > 0 && v < interior[i - 1]) throw new RangeError('interior knots must be sorted');
    t[degree + 1 + i] = v;
  }
  return t;
}

/** Number of basis functions for k interior knots. */
export function basisSize(k: number, degree: number, intercept = true): number {
  return k + degree + 1 - (intercept ? 0 : 1);
}

/**
 * The knot span holding x: the largest j in [q, p-1] with t[j] <= x and t[j] < t[j+1]
 * (p = number of functions). x = 1 falls in the last non-empty span.
 */
export function findSpan(t: Float64Array, degree: number, x: number): number {
  const p = t.length - degree - 1;
  if (x >= t[p]) return p - 1;
  if (x <= t[degree]) return degree;
  let lo = degree;
  let hi = p; // invariant: t[lo] <= x < t[hi]
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (x < t[mid]) hi = mid;
    else lo = mid;
  }
  return lo;
}

/**
 * The q+1 non-zero basis values at x (functions span-q .. span), by the triangular
 * Cox-de Boor scheme (Piegl & Tiller, algorithm A2.2). Writes into `out`; returns the span.
 */
export function basisFuns(t: Float64Array, degree: number, x: number, out: Float64Array, left: Float64Array, right: Float64Array): number {
  const span = findSpan(t, degree, x);
  out[0] = 1;
  for (let j = 1; j <= degree; j++) {
    left[j] = x - t[span + 1 - j];
    right[j] = t[span + j] - x;
    let saved = 0;
    for (let r = 0; r < j; r++) {
      // The denominator is at least the span length, which is > 0 by findSpan.
      const tmp = out[r] / (right[r + 1] + left[j - r]);
      out[r] = saved + right[r + 1] * tmp;
      saved = left[j - r] * tmp;
    }
    out[j] = saved;
  }
  return span;
}

/**
 * Design matrix in compact banded form: row i has q+1 non-zeros starting at column
 * `first[i]` (already shifted when the intercept column is dropped; a negative column means
 * the dropped function).
 */
export interface BandedDesign {
  rows: number;
  cols: number;
  degree: number;
  first: Int32Array;
  values: Float64Array; // rows * (degree + 1)
}

export function designMatrix(x: ArrayLike<number>, interior: ArrayLike<number>, degree: number, intercept = true): BandedDesign {
  const t = knotVector(interior, degree);
  const w = degree + 1;
  const m = x.length;
  const first = new Int32Array(m);
  const values = new Float64Array(m * w);
  const out = new Float64Array(w);
  const left = new Float64Array(w);
  const right = new Float64Array(w);
  const shift = intercept ? 0 : 1;
  for (let i = 0; i < m; i++) {
    const span = basisFuns(t, degree, x[i], out, left, right);
    first[i] = span - degree - shift;
    values.set(out, i * w);
  }
  return { rows: m, cols: basisSize(interior.length, degree, intercept), degree, first, values };
}

/** Dense row of all basis values at x (for tests and plotting). */
export function basisRow(x: number, interior: ArrayLike<number>, degree: number, intercept = true): Float64Array {
  const d = designMatrix([x], interior, degree, intercept);
  const row = new Float64Array(d.cols);
  for (let r = 0; r <= degree; r++) {
    const c = d.first[0] + r;
    if (c >= 0) row[c] = d.values[r];
  }
  return row;
}

/**
 * Reference Cox-de Boor recursion B_{i,q}(x) straight from the definition (0/0 := 0), with
 * the right end closed so the basis is a partition of unity on [0, 1]. Slow; for tests.
 */
export function coxDeBoor(t: ArrayLike<number>, i: number, q: number, x: number): number {
  if (q === 0) {
    const last = t[t.length - 1];
    if (t[i] <= x && x < t[i + 1]) return 1;
    // x = right end: the last non-empty span owns it.
    if (x === last && t[i] < t[i + 1] && t[i + 1] === last) return 1;
    return 0;
  }
  let v = 0;
  const d1 = t[i + q] - t[i];
  const d2 = t[i + q + 1] - t[i + 1];
  if (d1 > 0) v += ((x - t[i]) / d1) * coxDeBoor(t, i, q - 1, x);
  if (d2 > 0) v += ((t[i + q + 1] - x) / d2) * coxDeBoor(t, i + 1, q - 1, x);
  return v;
}

/** Evaluates sum_j beta_j B_j(x) at each x. */
export function evalSpline(x: ArrayLike<number>, interior: ArrayLike<number>, beta: ArrayLike<number>, degree: number, intercept = true): Float64Array {
  const d = designMatrix(x, interior, degree, intercept);
  return applyDesign(d, beta);
}

/** y = B beta for a banded design. */
export function applyDesign(d: BandedDesign, beta: ArrayLike<number>): Float64Array {
  const w = d.degree + 1;
  const y = new Float64Array(d.rows);
  for (let i = 0; i < d.rows; i++) {
    let s = 0;
    for (let r = 0; r < w; r++) {
      const c = d.first[i] + r;
      if (c >= 0) s += d.values[i * w + r] * beta[c];
    }
    y[i] = s;
  }
  return y;
}

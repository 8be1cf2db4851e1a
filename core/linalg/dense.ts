/**
 * Small dense numerics on row-major Float64Arrays, hand-written (DESIGN.md sections 8-9): dot
 * products and distances accumulated in float64 left to right, Cholesky factorisation and
 * triangular solves. Used by FLGP (data/domains), A2ATS codebooks (inference/kv) and the
 * change-point model (analysis/). Every function fixes its summation order, so results are
 * bitwise reproducible.
 */
import { DataError } from '../errors';

/** Dot product of two equal-length vectors (or slices given offsets), accumulated left to right. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>, len = a.length, ao = 0, bo = 0): number {
  let s = 0;
  for (let i = 0; i < len; i++) s += a[ao + i] * b[bo + i];
  return s;
}

/** Squared Euclidean distance between row i of X (n×d) and row j of U (s×d). */
export function sqDist(X: Float64Array, i: number, U: Float64Array, j: number, d: number): number {
  let s = 0;
  const xo = i * d;
  const uo = j * d;
  for (let k = 0; k < d; k++) {
    const t = X[xo + k] - U[uo + k];
    s += t * t;
  }
  return s;
}

/** Factors the lower triangle of a in place; returns -1, or the first pivot that is not positive and its value. */
function factorLower(a: Float64Array, n: number): [number, number] {
  for (let j = 0; j < n; j++) {
    let diag = a[j * n + j];
    for (let k = 0; k < j; k++) diag -= a[j * n + k] * a[j * n + k];
    if (!(diag > 0)) return [j, diag];
    const ljj = Math.sqrt(diag);
    a[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = a[i * n + j];
      const ri = i * n;
      const rj = j * n;
      for (let k = 0; k < j; k++) s -= a[ri + k] * a[rj + k];
      a[ri + j] = s / ljj;
    }
  }
  return [-1, 0];
}

/**
 * Lower Cholesky factor of a symmetric positive-definite n×n matrix in place: the lower triangle
 * of `a` (all it reads) becomes L, the upper triangle is left as it was. False when a pivot is
 * not positive (then `a` is partly overwritten).
 */
export function choleskyInPlace(a: Float64Array, n: number): boolean {
  return factorLower(a, n)[0] < 0;
}

/**
 * Lower Cholesky factor L (L·Lᵀ = a) of a symmetric positive-definite n×n matrix as a new array
 * with a zero upper triangle; `a` is not modified. Throws when the matrix is not numerically
 * positive definite (`where` names the caller in the error).
 */
export function cholesky(a: Float64Array, n: number, where = 'linalg: cholesky'): Float64Array {
  const L = Float64Array.from(a);
  const [pivot, value] = factorLower(L, n);
  if (pivot >= 0) throw new DataError(`matrix is not positive definite (pivot ${pivot} = ${value})`, { where });
  for (let i = 0; i < n; i++) for (let k = i + 1; k < n; k++) L[i * n + k] = 0;
  return L;
}

/** Solves L z = b in place for lower-triangular L; b's entries at off + i·stride. */
export function forwardSolveInPlace(L: Float64Array, n: number, b: Float64Array, off = 0, stride = 1): void {
  for (let i = 0; i < n; i++) {
    let s = b[off + i * stride];
    const ri = i * n;
    for (let k = 0; k < i; k++) s -= L[ri + k] * b[off + k * stride];
    b[off + i * stride] = s / L[ri + i];
  }
}

/** Solves Lᵀ x = y in place (back substitution) for lower-triangular L; y's entries at off + i. */
export function backSolveInPlace(L: Float64Array, n: number, y: Float64Array, off = 0): void {
  for (let i = n - 1; i >= 0; i--) {
    let s = y[off + i];
    for (let k = i + 1; k < n; k++) s -= L[k * n + i] * y[off + k];
    y[off + i] = s / L[i * n + i];
  }
}

/** Solves L y = b (forward substitution) for lower-triangular L. */
export function forwardSolve(L: Float64Array, n: number, b: ArrayLike<number>): Float64Array {
  const y = Float64Array.from({ length: n }, (_, i) => b[i]);
  forwardSolveInPlace(L, n, y);
  return y;
}

/** Solves Lᵀ x = y (back substitution) for lower-triangular L. */
export function backSolve(L: Float64Array, n: number, y: ArrayLike<number>): Float64Array {
  const x = Float64Array.from({ length: n }, (_, i) => y[i]);
  backSolveInPlace(L, n, x);
  return x;
}

/** Solves (L Lᵀ) x = b. */
export function cholSolve(L: Float64Array, n: number, b: ArrayLike<number>): Float64Array {
  return backSolve(L, n, forwardSolve(L, n, b));
}

/** log det(L Lᵀ) = 2 Σ log L_ii. */
export function cholLogDet(L: Float64Array, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.log(L[i * n + i]);
  return 2 * s;
}

/** Row vector times L: (x·L)_j = sum_{i>=j} x_i L_ij (L lower triangular). */
export function mulRowLower(x: ArrayLike<number>, xi: number, L: Float64Array, D: number, out: Float64Array, oi = 0): void {
  for (let j = 0; j < D; j++) {
    let s = 0;
    for (let i = j; i < D; i++) s += x[xi + i] * L[i * D + j];
    out[oi + j] = s;
  }
}

/** Solves x·L = y for the row vector x (that is Lᵀ xᵀ = yᵀ: back substitution). */
export function solveRowLower(y: ArrayLike<number>, yi: number, L: Float64Array, D: number, out: Float64Array, oi = 0): void {
  for (let j = 0; j < D; j++) out[oi + j] = y[yi + j];
  backSolveInPlace(L, D, out, oi);
}

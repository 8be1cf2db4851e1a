/**
 * Small dense numerics for A2ATS (arXiv 2502.12665), hand-written on typed arrays: dot
 * products, Cholesky, triangular solves and rotate-half RoPE on one head vector. Angles use
 * float64 math like model/ops.ropeTables.
 */

/** Which slice of a head vector RoPE rotates: [offset, offset+dim), rotate-half convention. */
export interface RopeSpec {
  offset: number;
  dim: number;
  base: number;
}

/** Dot product accumulated in float64, left to right. */
export function dot(a: ArrayLike<number>, ai: number, b: ArrayLike<number>, bi: number, n: number): number {
  let s = 0;
  for (let d = 0; d < n; d++) s += a[ai + d] * b[bi + d];
  return s;
}

/** Returns x rotated by RoPE at `pos` (R_pos x); the non-rope part is copied unchanged. */
export function rotate(x: ArrayLike<number>, pos: number, rope: RopeSpec, out?: Float64Array): Float64Array {
  const D = x.length;
  const y = out ?? new Float64Array(D);
  for (let d = 0; d < D; d++) y[d] = x[d];
  const half = rope.dim / 2;
  for (let i = 0; i < half; i++) {
    const ang = pos * Math.pow(rope.base, (-2 * i) / rope.dim);
    const c = Math.cos(ang);
    const s = Math.sin(ang);
    const x1 = x[rope.offset + i];
    const x2 = x[rope.offset + half + i];
    y[rope.offset + i] = x1 * c - x2 * s;
    y[rope.offset + half + i] = x2 * c + x1 * s;
  }
  return y;
}

/** Lower-triangular L (row-major D×D) with L·L^T = A; throws if A is not positive definite. */
export function cholesky(A: Float64Array, D: number): Float64Array {
  const L = new Float64Array(D * D);
  for (let i = 0; i < D; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i * D + j];
      for (let k = 0; k < j; k++) s -= L[i * D + k] * L[j * D + k];
      if (i === j) {
        if (!(s > 0)) throw new Error(`cholesky: matrix is not positive definite (pivot ${i} = ${s})`);
        L[i * D + i] = Math.sqrt(s);
      } else {
        L[i * D + j] = s / L[j * D + j];
      }
    }
  }
  return L;
}

/** Row vector times L: (x·L)_j = sum_{i>=j} x_i L_ij (L lower triangular). */
export function mulRowLower(x: ArrayLike<number>, xi: number, L: Float64Array, D: number, out: Float64Array, oi = 0): void {
  for (let j = 0; j < D; j++) {
    let s = 0;
    for (let i = j; i < D; i++) s += x[xi + i] * L[i * D + j];
    out[oi + j] = s;
  }
}

/** Solves x·L = y for the row vector x (back substitution on L^T). */
export function solveRowLower(y: ArrayLike<number>, yi: number, L: Float64Array, D: number, out: Float64Array, oi = 0): void {
  for (let j = D - 1; j >= 0; j--) {
    let s = y[yi + j];
    for (let i = j + 1; i < D; i++) s -= out[oi + i] * L[i * D + j];
    out[oi + j] = s / L[j * D + j];
  }
}

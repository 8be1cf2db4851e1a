/**
 * Rotate-half RoPE on one host head vector for A2ATS (arXiv 2502.12665). Angles use float64
 * math like model/ops.ropeTables.
 */

/** Which slice of a head vector RoPE rotates: [offset, offset+dim), rotate-half convention. */
export interface RopeSpec {
  offset: number;
  dim: number;
  base: number;
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

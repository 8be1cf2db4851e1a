/** Strided copies: the one routine behind Transpose, Slice, Concat, SplitV, PadV2, Tile and reductions over inner axes. */
import type { NativeAddon } from './addon';
import { alloc } from './buffers';
import { collapse, I, size, stridesOf } from './tensors';

/** Strided copy of `shape` elements from src to dst (dims collapsed first). */
export function copyStrided(m: NativeAddon, src: Float32Array, so: number, ss: number[], dst: Float32Array, dof: number, ds: number[], shape: number[]): void {
  if (size(shape) === 0) return;
  const c = collapse(shape, [ss, ds]);
  if (c.shape.length > 8) throw new Error('moecat native copy: rank > 8 after collapsing');
  m.copy(src, so, I(c.strides[0]), dst, dof, I(c.strides[1]), I(c.shape));
}

/** x permuted by perm into a new contiguous array. */
export function transposeValues(m: NativeAddon, x: Float32Array, shape: number[], perm: number[]): { values: Float32Array; shape: number[] } {
  const outShape = perm.map((p) => shape[p]);
  const out = alloc(x.length);
  const xs = stridesOf(shape);
  const r = perm.length;
  // Fast path: swap of the last two axes with leading axes in place.
  if (r >= 2 && perm[r - 2] === r - 1 && perm[r - 1] === r - 2 && perm.slice(0, r - 2).every((p, i) => p === i)) {
    m.transpose2d(x, out, size(shape.slice(0, r - 2)), shape[r - 2], shape[r - 1]);
  } else {
    copyStrided(m, x, 0, perm.map((p) => xs[p]), out, 0, stridesOf(outShape), outShape);
  }
  return { values: out, shape: outShape };
}

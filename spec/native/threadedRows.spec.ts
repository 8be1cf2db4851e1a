/**
 * The element-wise binary kernel and the strided copy split their rows (or a single row's
 * elements) over the pool (native/moecat_native.c binary_range, copy_range): on arrays large
 * enough to be split, 1, 2 and 3 threads must give the bits of a plain JS loop over the same
 * index arithmetic, for a single row, many rows with a broadcast operand, a transposing copy,
 * and a copy whose destination stride revisits elements (kept on one thread: the last index
 * wins, as in the loop). Skips, with the reason, when the addon is not built.
 */
import { strict as assert } from 'assert';
import { loadNativeKernels, nativeAddon } from '../../core/native';
import { lcg } from '../helpers/native';

const probe = loadNativeKernels({ register: false });
const skipReason = probe.reason ?? '';
const OP_ADD = 0;
const OP_MUL = 2;

/** Every index of `shape` in row-major order, with its offsets under two stride lists. */
function forEachIndex(shape: number[], s1: number[], s2: number[], f: (o1: number, o2: number, flat: number) => void): void {
  const total = shape.reduce((a, b) => a * b, 1);
  for (let flat = 0; flat < total; flat++) {
    let r = flat;
    let o1 = 0;
    let o2 = 0;
    for (let d = shape.length - 1; d >= 0; d--) {
      const i = r % shape[d];
      r = Math.floor(r / shape[d]);
      o1 += i * s1[d];
      o2 += i * s2[d];
    }
    f(o1, o2, flat);
  }
}

function sameBits(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  assert.ok(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(want.buffer, want.byteOffset, want.byteLength)), `${what}: bits differ`);
}

describe(probe.loaded ? 'native row kernels on the pool' : `native row kernels on the pool [skipped: ${skipReason}]`, function () {
  this.timeout(60000);
  let threadsBefore = 1;
  before(function () {
    if (skipReason) this.skip();
    threadsBefore = nativeAddon()!.gemmInfo().threads;
  });
  after(() => {
    if (!skipReason) nativeAddon()!.setThreads(threadsBefore);
  });

  const binaryCases: { what: string; op: number; shape: number[]; as: number[]; bs: number[]; na: number; nb: number }[] = [
    { what: 'one row of 300,000 (same shape)', op: OP_ADD, shape: [300000], as: [1], bs: [1], na: 300000, nb: 300000 },
    { what: '1,500 rows of 192 times a broadcast row', op: OP_MUL, shape: [1500, 192], as: [192, 1], bs: [0, 1], na: 1500 * 192, nb: 192 },
    { what: '3 x 700 x 160 plus a per-row column', op: OP_ADD, shape: [3, 700, 160], as: [112000, 160, 1], bs: [700, 1, 0], na: 336000, nb: 2100 },
  ];
  for (const c of binaryCases) {
    it(`binary, ${c.what}: 1, 2 and 3 threads give the loop's bits`, () => {
      const m = nativeAddon()!;
      const a = lcg(c.na, 3, 2);
      const b = lcg(c.nb, 5, 2);
      const total = c.shape.reduce((x, y) => x * y, 1);
      const want = new Float32Array(total);
      forEachIndex(c.shape, c.as, c.bs, (ia, ib, k) => void (want[k] = c.op === OP_ADD ? a[ia] + b[ib] : Math.fround(a[ia] * b[ib])));
      for (const t of [1, 2, 3]) {
        m.setThreads(t);
        const out = new Float32Array(total);
        m.binary(c.op, a, Int32Array.from(c.as), b, Int32Array.from(c.bs), out, Int32Array.from(c.shape));
        sameBits(out, want, `${c.what}, ${t} threads`);
      }
    });
  }

  const copyCases: { what: string; shape: number[]; ss: number[]; ds: number[]; so: number; dof: number; ns: number; nd: number }[] = [
    { what: 'one contiguous row of 250,000 at offsets', shape: [250000], ss: [1], ds: [1], so: 7, dof: 3, ns: 250010, nd: 250005 },
    { what: 'a transpose of 600 x 400', shape: [600, 400], ss: [1, 600], ds: [400, 1], so: 0, dof: 0, ns: 240000, nd: 240000 },
    { what: 'concat-like rows of 96 into rows of 288', shape: [3000, 96], ss: [96, 1], ds: [288, 1], so: 0, dof: 96, ns: 288000, nd: 864000 },
    { what: 'a destination stride that revisits elements (one thread)', shape: [2000, 100], ss: [100, 1], ds: [1, 1], so: 0, dof: 0, ns: 200000, nd: 2100 },
  ];
  for (const c of copyCases) {
    it(`copy, ${c.what}: 1, 2 and 3 threads give the loop's bits`, () => {
      const m = nativeAddon()!;
      const src = lcg(c.ns, 11, 1);
      const want = lcg(c.nd, 13, 1);
      forEachIndex(c.shape, c.ss, c.ds, (is, id) => void (want[c.dof + id] = src[c.so + is]));
      for (const t of [1, 2, 3]) {
        m.setThreads(t);
        const dst = lcg(c.nd, 13, 1);
        m.copy(src, c.so, Int32Array.from(c.ss), dst, c.dof, Int32Array.from(c.ds), Int32Array.from(c.shape));
        sameBits(dst, want, `${c.what}, ${t} threads`);
      }
    });
  }
});

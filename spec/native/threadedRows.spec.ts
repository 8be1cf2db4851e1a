/**
 * The row kernels that split their work over the pool (native/moecat_native.c): element-wise
 * binary and the strided copy (rows, or a single row's elements), transpose2d (blocks of rows),
 * RMSNorm (rows) and its gradient (dx by rows, dw by column blocks, each column summed over
 * the rows in order), cross-entropy and its gradient (rows; the loss terms added in row order
 * after), and the MoE weighted combine and its gradient (tokens; dgates by slot, dsrc by column
 * blocks with the slots in order). On arrays large enough to be split, 1, 2 and 3 threads must give the bits
 * of a plain JS loop with the same arithmetic (doubles where the C code uses double), including a
 * copy whose destination stride revisits elements (kept on one thread: the last index wins, as
 * in the loop). Cross-entropy uses the addon's own exp, so there one thread is the reference.
 * Skips, with the reason, when the addon is not built.
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

  it('transpose2d of 6 matrices 200 x 150: 1, 2 and 3 threads give the loop\'s bits', () => {
    const m = nativeAddon()!;
    const [B, R, C] = [6, 200, 150];
    const src = lcg(B * R * C, 17, 1);
    const want = new Float32Array(B * R * C);
    for (let b = 0; b < B; b++) for (let i = 0; i < R; i++) for (let j = 0; j < C; j++) want[b * R * C + j * R + i] = src[b * R * C + i * C + j];
    for (const t of [1, 2, 3]) {
      m.setThreads(t);
      const dst = new Float32Array(B * R * C);
      m.transpose2d(src, dst, B, R, C);
      sameBits(dst, want, `transpose2d, ${t} threads`);
    }
  });

  it('rmsNorm and rmsNormGrad of 1,500 rows of 192: 1, 2 and 3 threads give the loop\'s bits', () => {
    const m = nativeAddon()!;
    const [rows, cols, eps] = [1500, 192, 1e-6];
    const x = lcg(rows * cols, 19, 2);
    const w = lcg(cols, 23, 1.5);
    const dy = lcg(rows * cols, 29, 1);
    const [y, rinv, dx, dw] = [new Float32Array(rows * cols), new Float32Array(rows), new Float32Array(rows * cols), new Float32Array(cols)];
    const acc = new Float64Array(cols);
    for (let i = 0; i < rows; i++) {
      let ss = 0;
      for (let j = 0; j < cols; j++) ss += x[i * cols + j] * x[i * cols + j];
      const r = 1 / Math.sqrt(ss / cols + eps);
      rinv[i] = r;
      for (let j = 0; j < cols; j++) y[i * cols + j] = x[i * cols + j] * r * w[j];
      const rf = rinv[i];
      let dot = 0;
      for (let j = 0; j < cols; j++) dot += dy[i * cols + j] * w[j] * x[i * cols + j];
      const k = (rf * rf * rf * dot) / cols;
      for (let j = 0; j < cols; j++) {
        dx[i * cols + j] = rf * dy[i * cols + j] * w[j] - x[i * cols + j] * k;
        acc[j] += dy[i * cols + j] * x[i * cols + j] * rf;
      }
    }
    dw.set(acc);
    for (const t of [1, 2, 3]) {
      m.setThreads(t);
      const [gy, gr, gdx, gdw] = [new Float32Array(rows * cols), new Float32Array(rows), new Float32Array(rows * cols), new Float32Array(cols)];
      m.rmsNorm(x, w, gy, gr, rows, cols, eps);
      m.rmsNormGrad(x, w, gr, dy, gdx, gdw, rows, cols);
      sameBits(gy, y, `rmsNorm y, ${t} threads`);
      sameBits(gr, rinv, `rmsNorm rinv, ${t} threads`);
      sameBits(gdx, dx, `rmsNormGrad dx, ${t} threads`);
      sameBits(gdw, dw, `rmsNormGrad dw, ${t} threads`);
    }
  });

  it('crossEntropy and its gradient over 600 rows of 2,048 (some weights 0): 2 and 3 threads give 1 thread\'s bits', () => {
    const m = nativeAddon()!;
    const [rows, cols] = [600, 2048];
    const z = lcg(rows * cols, 31, 6);
    const y = Int32Array.from({ length: rows }, (_, i) => (i * 7919) % cols);
    const w = Float32Array.from({ length: rows }, (_, i) => (i % 5 === 0 ? 0 : 1 / rows));
    const run = (t: number) => {
      m.setThreads(t);
      const lse = new Float32Array(rows);
      const g = lcg(rows * cols, 37, 1);
      const loss = m.crossEntropy(z, y, w, lse, rows, cols);
      m.crossEntropyGrad(z, y, w, lse, 0.5, g, rows, cols);
      return { loss, lse, g };
    };
    const ref = run(1);
    assert.ok(ref.loss > 0 && ref.g.some((v) => v !== 0) && ref.g.subarray(0, cols).every((v) => v === 0), 'a real loss; weight-0 rows get zero gradient');
    for (const t of [2, 3]) {
      const got = run(t);
      assert.equal(got.loss, ref.loss, `loss, ${t} threads`);
      sameBits(got.lse, ref.lse, `lse, ${t} threads`);
      sameBits(got.g, ref.g, `gradient, ${t} threads`);
    }
  });

  it('moeCombine and moeCombineGrad, 1,024 tokens x 4 slots of 192 (shared source rows): 1, 2 and 3 threads give the loop\'s bits', () => {
    const m = nativeAddon()!;
    const [T, K, d, R] = [1024, 4, 192, 1500];
    const slot = Int32Array.from({ length: T * K }, (_, i) => (i % 3 === 0 ? R - 1 : (i * 7919) % R));
    const src = lcg(R * d, 41, 1);
    const gates = lcg(T * K, 43, 1);
    const dy = lcg(T * d, 47, 1);
    const out = new Float32Array(T * d);
    const dsrc = new Float32Array(R * d);
    const dg = new Float32Array(T * K);
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < d; j++) {
        let acc = 0;
        for (let k = 0; k < K; k++) acc += Math.fround(gates[t * K + k] * src[slot[t * K + k] * d + j]);
        out[t * d + j] = acc;
      }
    }
    for (let i = 0; i < T * K; i++) {
      const t = Math.floor(i / K);
      let acc = 0;
      for (let j = 0; j < d; j++) {
        acc += Math.fround(dy[t * d + j] * src[slot[i] * d + j]);
        dsrc[slot[i] * d + j] = dsrc[slot[i] * d + j] + Math.fround(dy[t * d + j] * gates[i]);
      }
      dg[i] = acc;
    }
    for (const t of [1, 2, 3]) {
      m.setThreads(t);
      const [o, ds, g] = [new Float32Array(T * d), new Float32Array(R * d), new Float32Array(T * K)];
      m.moeCombine(src, slot, gates, o, T, K, d);
      m.moeCombineGrad(src, slot, gates, dy, ds, g, T, K, d);
      sameBits(o, out, `moeCombine, ${t} threads`);
      sameBits(ds, dsrc, `moeCombineGrad dsrc, ${t} threads`);
      sameBits(g, dg, `moeCombineGrad dgates, ${t} threads`);
    }
  });
});

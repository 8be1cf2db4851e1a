/**
 * CHESS's sparse kernels in JS (inference/sparse/kernels.ts, the addon-less twins of
 * native/sparse.c): on the same masked input a sparse kernel equals the dense JS product,
 * bitwise, and skipped weight rows are never read.
 */
import { strict as assert } from 'assert';
import { RngStream } from '../../core/rng';
import { jsKernels } from '../../inference/decodeKernels';
import { activeByThreshold, jsSparseFfn, jsSparseRows, matVecRows, rowDotsSparse } from '../../inference/sparse/kernels';

const rnd = (n: number, tag: string) => RngStream.of(3, tag).normalArray(n, 1);
const silu = (v: number) => v / (1 + Math.exp(-v));

describe('sparse kernels (JS)', () => {
  const d = 24;
  const h = 40;
  it('matVecRows over the kept rows equals the dense product of the input with dropped entries zeroed (bitwise)', () => {
    const x = rnd(h, 'x');
    const W = rnd(h * d, 'W');
    const idx = new Int32Array(h);
    const n = activeByThreshold(x, h, 0.7, idx);
    assert.ok(n > 5 && n < h - 5, `kept ${n}`);
    const masked = x.map((v) => (Math.abs(v) >= 0.7 ? v : 0));
    const dense = new Float32Array(d);
    jsKernels.matmul(masked, W, dense, 1, h, d);
    assert.deepEqual(matVecRows(x, W, idx, n, d, new Float32Array(d)), dense);
  });

  it('rowDotsSparse computes the listed channels only and zeroes the others', () => {
    const x = rnd(d, 'x2');
    const WT = rnd(h * d, 'W2');
    const cols = Int32Array.from([0, 3, 4, 17, 39]);
    const sparse = rowDotsSparse(x, WT, d, h, cols, cols.length, new Float32Array(h));
    for (let j = 0; j < h; j++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += x[i] * WT[j * d + i];
      assert.equal(sparse[j], cols.includes(j) ? Math.fround(s) : 0, `channel ${j}`);
    }
  });

  it('jsSparseRows: each row equals the dense product of its masked input, skipped rows never read', () => {
    const M = 3;
    const x = rnd(M * h, 'x3');
    const W = rnd(h * d, 'W3');
    for (let k = 0; k < h; k++) if ([...Array(M).keys()].every((r) => Math.abs(x[r * h + k]) < 0.5)) W.fill(NaN, k * d, (k + 1) * d);
    const y = new Float32Array(M * d);
    const kept = jsSparseRows(x, W, y, M, h, d, 0.5);
    let want = 0;
    for (let r = 0; r < M; r++) {
      const masked = x.slice(r * h, (r + 1) * h).map((v) => (Math.abs(v) >= 0.5 ? v : 0));
      want += masked.filter((v) => v !== 0).length;
      const Wz = W.map((v) => (Number.isNaN(v) ? 0 : v));
      const dense = new Float32Array(d);
      jsKernels.matmul(masked, Wz, dense, 1, h, d);
      assert.deepEqual(y.subarray(r * d, (r + 1) * d), dense, `row ${r}`);
    }
    assert.equal(kept, want);
  });

  it('jsSparseFfn equals the SwiGLU with silu(gate) masked by the channel thresholds (bitwise against the same ops)', () => {
    const M = 2;
    const x = rnd(M * d, 'x4');
    const g = rnd(M * h, 'g4');
    const WuT = rnd(h * d, 'u4');
    const Wd = rnd(h * d, 'd4');
    const tau = Float32Array.from({ length: h }, (_, i) => (i % 3) * 0.3);
    const y = new Float32Array(M * d);
    const kept = jsSparseFfn(x, g, WuT, Wd, tau, y, M, d, h);
    let want = 0;
    for (let r = 0; r < M; r++) {
      const act = new Float32Array(h);
      for (let c = 0; c < h; c++) {
        const s = silu(g[r * h + c]);
        if (!(Math.abs(Math.fround(s)) >= tau[c])) continue;
        want++;
        let au = 0;
        for (let i = 0; i < d; i++) au += x[r * d + i] * WuT[c * d + i];
        act[c] = s * Math.fround(au);
      }
      const ref = new Float32Array(d);
      jsKernels.matmul(act, Wd, ref, 1, h, d);
      assert.deepEqual(y.subarray(r * d, (r + 1) * d), ref, `row ${r}`);
    }
    assert.equal(kept, want);
    assert.ok(kept > 0 && kept < M * h);
  });
});

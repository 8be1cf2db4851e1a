/**
 * native/sparse.c, CHESS's selective sparse kernels on the batched decode path: a skipped
 * channel's weight rows are never read (poisoned with NaN, the output stays finite and
 * unchanged), each row's bits are the same alone or inside a batch and for every thread count,
 * and the values match a float64 reference of the definition. Skips when the addon is not built.
 */
import { strict as assert } from 'assert';
import { loadNativeKernels, nativeAddon } from '../../core/native';
import { jsSparseFfn, jsSparseRows } from '../../inference/sparse/kernels';
import { RngStream } from '../../core/rng';

interface SparseAddon {
  sparseFfn(x: Float32Array, g: Float32Array, WuT: Float32Array, Wd: Float32Array, tau: Float32Array, y: Float32Array, M: number, d: number, h: number, threads: number): number;
  sparseRows(x: Float32Array, W: Float32Array, y: Float32Array, M: number, K: number, N: number, tau: number, threads: number): number;
}

const probe = loadNativeKernels({ register: false });
const silu = (v: number) => v / (1 + Math.exp(-v));

// Sizes off the kernels' blocks (8 lanes, 64 columns, 32 channels per task) and large enough
// (kept rows over 1 MiB) that two threads really split the work.
const [M, d, h] = [5, 522, 1100];

function setup() {
  const r = RngStream.of(3, 'sparse-native');
  const x = r.normalArray(M * d, 1);
  const g = r.normalArray(M * h, 2);
  const WuT = r.normalArray(h * d, 0.05);
  const Wd = r.normalArray(h * d, 0.05);
  // Channel thresholds around the median |silu(g)|, so about half are kept per row; channels
  // 0..99 are dropped by every row (their weight rows are poisoned below).
  const tau = Float32Array.from({ length: h }, (_, c) => (c < 100 ? 1e30 : 0.3 + 0.4 * ((c * 37) % 11) / 11));
  return { x, g, WuT, Wd, tau };
}

describe(probe.loaded ? 'native CHESS sparse kernels (native/sparse.c)' : `native CHESS sparse kernels (native/sparse.c) [skipped: ${probe.reason}]`, () => {
  let a: SparseAddon;
  before(function () {
    if (!probe.loaded) this.skip();
    a = nativeAddon() as unknown as SparseAddon;
  });

  it('sparseFfn: never reads a skipped channel, matches the float64 definition, and gives each row the same bits alone, in the batch and on 1 or 2 threads', () => {
    const { x, g, WuT, Wd, tau } = setup();
    for (let c = 0; c < 100; c++) {
      WuT.fill(NaN, c * d, (c + 1) * d);
      Wd.fill(NaN, c * d, (c + 1) * d);
    }
    const y1 = new Float32Array(M * d);
    const kept = a.sparseFfn(x, g, WuT, Wd, tau, y1, M, d, h, 1);
    let want = 0;
    for (let r = 0; r < M; r++) {
      const act = new Float64Array(h);
      for (let c = 0; c < h; c++) {
        const s = silu(g[r * h + c]);
        if (!(Math.abs(Math.fround(s)) >= tau[c])) continue;
        want++;
        let au = 0;
        for (let i = 0; i < d; i++) au += x[r * d + i] * WuT[c * d + i];
        act[c] = s * au;
      }
      for (let j = 0; j < d; j++) {
        let ref = 0;
        for (let c = 0; c < h; c++) if (act[c] !== 0) ref += act[c] * Wd[c * d + j];
        const got = y1[r * d + j];
        assert.ok(Number.isFinite(got), `row ${r} column ${j} read a poisoned row`);
        assert.ok(Math.abs(got - ref) <= 1e-4 * (1 + Math.abs(ref)), `row ${r} column ${j}: ${got} vs ${ref}`);
      }
    }
    assert.equal(kept, want);
    assert.ok(kept > 0.3 * M * (h - 100) && kept < 0.7 * M * (h - 100), `kept ${kept} of ${M * h}`);
    const y2 = new Float32Array(M * d);
    assert.equal(a.sparseFfn(x, g, WuT, Wd, tau, y2, M, d, h, 2), kept);
    assert.deepEqual(y2, y1, 'two threads give the bits of one');
    for (let r = 0; r < M; r++) {
      const yr = new Float32Array(d);
      a.sparseFfn(x.subarray(r * d, (r + 1) * d), g.subarray(r * h, (r + 1) * h), WuT, Wd, tau, yr, 1, d, h, 0);
      assert.deepEqual(yr, y1.subarray(r * d, (r + 1) * d), `row ${r} alone`);
    }
    // The JS twin (used without the addon) keeps the same channels and agrees to rounding.
    const yj = new Float32Array(M * d);
    assert.equal(jsSparseFfn(x, g, WuT, Wd, tau, yj, M, d, h), kept);
    for (let i = 0; i < M * d; i++) assert.ok(Math.abs(yj[i] - y1[i]) <= 1e-4 * (1 + Math.abs(y1[i])), `js twin element ${i}`);
  });

  it('sparseRows: never reads a skipped input row, matches the float64 definition, and gives each row the same bits alone, in the batch and on 1 or 2 threads', () => {
    const [K, N] = [700, 536]; // last column strip of 24: the eight-lane tail (sparseFfn above takes the portable one)
    const r = RngStream.of(4, 'sparse-rows');
    const x = r.normalArray(M * K, 1);
    const W = r.normalArray(K * N, 0.05);
    const tau = 0.67;
    // Inputs 0..49 are below tau in every row: their weight rows are poisoned.
    for (let i = 0; i < M; i++) for (let k = 0; k < 50; k++) x[i * K + k] = 0.5 * Math.sign(x[i * K + k]) * Math.min(Math.abs(x[i * K + k]), 1);
    for (let k = 0; k < 50; k++) W.fill(NaN, k * N, (k + 1) * N);
    const y1 = new Float32Array(M * N);
    const kept = a.sparseRows(x, W, y1, M, K, N, tau, 1);
    let want = 0;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let ref = 0;
        for (let k = 0; k < K; k++) if (Math.abs(x[i * K + k]) >= Math.fround(tau)) ref += x[i * K + k] * W[k * N + j];
        assert.ok(Math.abs(y1[i * N + j] - ref) <= 1e-4 * (1 + Math.abs(ref)), `row ${i} column ${j}: ${y1[i * N + j]} vs ${ref}`);
      }
      for (let k = 0; k < K; k++) if (Math.abs(x[i * K + k]) >= Math.fround(tau)) want++;
    }
    assert.equal(kept, want);
    const y2 = new Float32Array(M * N);
    a.sparseRows(x, W, y2, M, K, N, tau, 2);
    assert.deepEqual(y2, y1, 'two threads give the bits of one');
    for (let i = 0; i < M; i++) {
      const yr = new Float32Array(N);
      a.sparseRows(x.subarray(i * K, (i + 1) * K), W, yr, 1, K, N, tau, 0);
      assert.deepEqual(yr, y1.subarray(i * N, (i + 1) * N), `row ${i} alone`);
    }
    const yj = new Float32Array(M * N);
    assert.equal(jsSparseRows(x, W, yj, M, K, N, tau), kept);
  });

  it('sparseRows refuses a negative or non-finite threshold with a RangeError naming the entry', () => {
    for (const tau of [-1, NaN, Infinity]) {
      assert.throws(() => a.sparseRows(new Float32Array(3), new Float32Array(6), new Float32Array(2), 1, 3, 2, tau, 1), /moecat_native\.sparseRows: tau must be a finite number >= 0/);
    }
  });
});

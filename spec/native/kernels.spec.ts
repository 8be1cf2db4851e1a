/**
 * Native cpu kernels (issue 14) against tfjs' own JS kernels on random inputs. Each case runs
 * the same op twice on the `cpu` backend: once with the JS kernels, once with the addon's
 * kernels registered, and compares shapes and values:
 *  - exactly (bit for bit) where the arithmetic is the same sequence of float operations:
 *    element-wise + - * /, squared difference, square, rsqrt, sqrt, neg, abs, copies (transpose,
 *    slice, concat, split, pad, tile), gathers, scatter-adds, sum/mean/max/min, softmax;
 *  - within 1 float32 ulp for exp, log, sigmoid, tanh (same double expression, but libm and V8
 *    may differ in the last double bit);
 *  - within the float32 summation bound |Δ| ≤ 2·K·2^-24·(|A|·|B|) for BatchMatMul (OpenBLAS sums
 *    in a blocked order).
 * Skipped, with the reason, only when the addon has not been built.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../core/backend';
import '../../model/moe/nativeKernels';
import { fusedKernelNames, loadNativeKernels, nativeKernelNames, unloadNativeKernels, NATIVE_KERNELS } from '../../core/native';
import { useTestBackend } from '../helpers/backend';

const probe = loadNativeKernels({ register: false });
const skipReason = probe.reason ?? '';

/** Deterministic pseudo-random floats in [-scale, scale) (no tfjs RNG, so both runs see the same bits). */
function rand(shape: number[], seed: number, scale = 1): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    v[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 2 * scale;
  }
  return tf.tensor(v, shape, 'float32');
}

function randPos(shape: number[], seed: number): tf.Tensor {
  return tf.tidy(() => tf.add(tf.abs(rand(shape, seed)), 0.01));
}

interface Run {
  shapes: number[][];
  values: Float32Array[];
  dtypes: string[];
}

function run(f: () => tf.Tensor | tf.Tensor[]): Run {
  const out = tf.tidy(f);
  const list = Array.isArray(out) ? out : [out];
  const r = { shapes: list.map((t) => t.shape), values: list.map((t) => Float32Array.from(t.dataSync() as ArrayLike<number>)), dtypes: list.map((t) => t.dtype) };
  tf.dispose(list);
  return r;
}

/** Runs f with the JS kernels and with the native ones. */
function both(f: () => tf.Tensor | tf.Tensor[]): { js: Run; nat: Run } {
  unloadNativeKernels();
  const js = run(f);
  const r = loadNativeKernels();
  assert.ok(r.loaded, r.reason);
  const nat = run(f);
  assert.deepEqual(nat.shapes, js.shapes, 'shapes differ');
  assert.deepEqual(nat.dtypes, js.dtypes, 'dtypes differ');
  return { js, nat };
}

function bits(x: Float32Array): Uint32Array {
  return new Uint32Array(x.buffer, x.byteOffset, x.length);
}

function assertExact(f: () => tf.Tensor | tf.Tensor[], what: string): void {
  const { js, nat } = both(f);
  js.values.forEach((v, k) => {
    const a = bits(v);
    const b = bits(nat.values[k]);
    for (let i = 0; i < a.length; i++) {
      if (a[i] !== b[i] && !(Number.isNaN(v[i]) && Number.isNaN(nat.values[k][i]))) {
        assert.fail(`${what}: output ${k} element ${i}: js ${v[i]} native ${nat.values[k][i]}`);
      }
    }
  });
}

/** Distance in float32 ulps (same-sign finite values). */
function ulps(a: number, b: number): number {
  if (a === b) return 0;
  const fa = new Float32Array([a, b]);
  const ia = new Int32Array(fa.buffer);
  const map = (i: number) => (i < 0 ? -2147483648 - i : i);
  return Math.abs(map(ia[0]) - map(ia[1]));
}

function assertUlps(f: () => tf.Tensor | tf.Tensor[], maxUlps: number, what: string): void {
  const { js, nat } = both(f);
  js.values.forEach((v, k) => {
    for (let i = 0; i < v.length; i++) {
      const d = ulps(v[i], nat.values[k][i]);
      if (d > maxUlps) assert.fail(`${what}: element ${i}: js ${v[i]} native ${nat.values[k][i]} (${d} ulps)`);
    }
  });
}

function assertMatMul(aShape: number[], bShape: number[], ta: boolean, tb: boolean): void {
  const a = rand(aShape, 11);
  const b = rand(bShape, 23);
  const K = ta ? aShape[aShape.length - 2] : aShape[aShape.length - 1];
  const { js, nat } = both(() => tf.matMul(a, b, ta, tb));
  unloadNativeKernels();
  const bound = run(() => tf.matMul(tf.abs(a), tf.abs(b), ta, tb)).values[0];
  loadNativeKernels();
  tf.dispose([a, b]);
  const x = js.values[0];
  const y = nat.values[0];
  for (let i = 0; i < x.length; i++) {
    const tol = 2 * K * 2 ** -24 * bound[i] + 1e-30;
    if (Math.abs(x[i] - y[i]) > tol) assert.fail(`matMul ${aShape}x${bShape} tA=${ta} tB=${tb}: element ${i}: js ${x[i]} native ${y[i]} (tol ${tol})`);
  }
}

describe(probe.loaded ? 'native cpu kernels' : `native cpu kernels [skipped: ${skipReason}]`, function () {
  this.timeout(120000);
  let hadNative = false;

  before(async function () {
    if (!probe.loaded) this.skip();
    hadNative = nativeKernelNames().length > 0;
    await selectBackend('cpu');
  });

  after(async () => {
    if (!probe.loaded) return;
    if (hadNative) loadNativeKernels();
    else unloadNativeKernels();
    await useTestBackend();
  });

  it('loads, names every kernel it registers, and reports the BLAS core type and threads', () => {
    const r = loadNativeKernels();
    assert.ok(r.loaded);
    assert.deepEqual([...r.kernels].sort(), [...Object.keys(NATIVE_KERNELS), ...fusedKernelNames()].sort());
    assert.equal(fusedKernelNames().length, 12); // 8 in core/native/fused.ts, 4 MoE kernels registered by model/moe
    assert.ok(r.gemm && r.gemm.supported.includes(r.gemm.isa) && r.gemm.threads >= 1);
  });

  it('BatchMatMul: 2-D plain, transposeA, transposeB and both, within the float32 summation bound', () => {
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
      assertMatMul(ta ? [37, 19] : [19, 37], tb ? [23, 37] : [37, 23], ta, tb);
    }
  });

  it('BatchMatMul: batched 3-D and 4-D (attention shapes), with transposes', () => {
    assertMatMul([3, 16, 24], [3, 24, 16], false, false);
    assertMatMul([2, 4, 16, 24], [2, 4, 16, 24], false, true); // Q·K^T
    assertMatMul([2, 4, 16, 16], [2, 4, 16, 24], true, false); // dP^T·... (gradient shape)
  });

  it('BatchMatMul: broadcast batch (one side unbatched) and degenerate sizes', () => {
    assertMatMul([2, 3, 5, 7], [1, 7, 4], false, false);
    assertMatMul([1, 5, 7], [4, 7, 6], false, false);
    assertMatMul([1, 1], [1, 1], false, false);
    assertMatMul([64, 1], [1, 64], false, false);
  });

  it('BatchMatMul: K = 0 gives zeros, as the JS kernel does', () => {
    assertExact(() => tf.matMul(tf.zeros([3, 0]), tf.zeros([0, 4])), 'matMul K=0');
  });

  it('Add, Sub, Multiply, RealDiv, SquaredDifference: bitwise equal on equal shapes', () => {
    const a = rand([7, 33], 1);
    const b = randPos([7, 33], 2);
    assertExact(() => [tf.add(a, b), tf.sub(a, b), tf.mul(a, b), tf.div(a, b), tf.squaredDifference(a, b)], 'binary same shape');
    tf.dispose([a, b]);
  });

  it('binary ops: bitwise equal under broadcasting (scalar, row, column, both sides, rank 4 mask)', () => {
    const cases: [number[], number[]][] = [
      [[5, 6], []],
      [[], [5, 6]],
      [[5, 6], [6]],
      [[5, 6], [5, 1]],
      [[3, 1, 5], [1, 4, 1]],
      [[2, 3, 8, 8], [8, 8]],
      [[2, 1, 8, 8], [2, 3, 8, 8]],
      [[6, 3, 4], [6, 3, 1]],
      [[2, 3, 4, 5, 6], [3, 1, 5, 1]],
    ];
    cases.forEach(([sa, sb], i) => {
      const a = rand(sa, 100 + i);
      const b = randPos(sb, 200 + i);
      assertExact(() => [tf.add(a, b), tf.sub(a, b), tf.mul(a, b), tf.div(a, b), tf.squaredDifference(a, b)], `binary ${JSON.stringify(sa)} op ${JSON.stringify(sb)}`);
      tf.dispose([a, b]);
    });
  });

  it('binary ops on int32 fall back to the JS kernels (same values and dtype)', () => {
    const a = tf.tensor2d([1, 2, 3, 4], [2, 2], 'int32');
    const b = tf.tensor1d([5, -6], 'int32');
    const { js, nat } = both(() => [tf.add(a, b), tf.mul(a, b), tf.sub(a, b)]);
    assert.deepEqual(nat.values, js.values);
    assert.deepEqual(nat.dtypes, ['int32', 'int32', 'int32']);
    tf.dispose([a, b]);
  });

  it('Square, Rsqrt, Sqrt, Neg, Abs: bitwise equal', () => {
    const x = rand([9, 31], 5, 3);
    const p = randPos([9, 31], 6);
    assertExact(() => [tf.square(x), tf.rsqrt(p), tf.sqrt(p), tf.neg(x), tf.abs(x)], 'unary');
    tf.dispose([x, p]);
  });

  it('Exp, Log, Sigmoid, Tanh: within 1 ulp (same double expression, libm vs V8)', () => {
    const x = rand([4096], 7, 8);
    const p = randPos([4096], 8);
    assertUlps(() => [tf.exp(x), tf.log(p), tf.sigmoid(x), tf.tanh(x)], 1, 'transcendental');
    tf.dispose([x, p]);
  });

  it('Softmax over the last axis: bitwise equal to the JS composition (max, sub, exp, sum, div), up to exp ulps', () => {
    const x = rand([2, 3, 17, 29], 9, 5);
    const masked = tf.tidy(() => tf.add(x, tf.mul(tf.cast(tf.greater(rand([17, 29], 10), 0.5), 'float32'), -1e9)));
    assertUlps(() => [tf.softmax(x), tf.softmax(masked)], 1, 'softmax');
    tf.dispose([x, masked]);
  });

  it('Sum, Mean, Max, Min: bitwise equal over all axes, the last axis, inner axes, several axes, with keepDims', () => {
    const x = rand([4, 5, 6], 12, 10);
    const axesList: (number | number[] | undefined)[] = [undefined, -1, 0, 1, [0, 2], [0, 1, 2]];
    for (const ax of axesList) {
      for (const keep of [false, true]) {
        assertExact(() => [tf.sum(x, ax, keep), tf.mean(x, ax, keep), tf.max(x, ax, keep), tf.min(x, ax, keep)], `reduce axis ${JSON.stringify(ax)} keepDims ${keep}`);
      }
    }
    tf.dispose(x);
  });

  it('Transpose: bitwise equal for 2-D, last-two-axes swaps and general permutations', () => {
    const x2 = rand([37, 45], 13);
    const x4 = rand([2, 3, 4, 5], 14);
    const perms = [[0, 2, 1, 3], [0, 1, 3, 2], [3, 2, 1, 0], [1, 0, 2, 3], [2, 0, 3, 1]];
    assertExact(() => [tf.transpose(x2), ...perms.map((p) => tf.transpose(x4, p))], 'transpose');
    tf.dispose([x2, x4]);
  });

  it('Slice, Concat, SplitV, PadV2, Tile: bitwise equal', () => {
    const x = rand([2, 5, 3, 8], 15);
    const y = rand([2, 5, 3, 4], 16);
    assertExact(
      () => [
        tf.slice(x, [0, 0, 0, 0], [2, 5, 3, 5]),
        tf.slice(x, [1, 2, 1, 3], [1, 2, 2, -1]),
        tf.concat([x, y], 3),
        tf.concat([x, x], 0),
        tf.concat([tf.slice(x, [0, 0, 0, 0], [2, 1, 3, 8]), x], 1),
        ...tf.split(x, [3, 5], 3),
        ...tf.split(x, 5, 1),
        tf.pad(x, [[0, 0], [1, 2], [0, 1], [3, 0]]),
        tf.pad(x, [[1, 0], [0, 0], [0, 0], [0, 0]], 2.5),
        tf.tile(x, [1, 2, 1, 3]),
        tf.tile(tf.reshape(y, [2, 5, 1, 12]), [1, 1, 4, 1]),
      ],
      'movement',
    );
    tf.dispose([x, y]);
  });

  it('GatherV2 (rows, inner axis) and ScatterNd (summing duplicate indices in order): bitwise equal', () => {
    const x = rand([50, 12], 17);
    const idx = tf.tensor1d([3, 3, 0, 49, 7, 3, 12], 'int32');
    const idx2 = tf.tensor1d([11, 0, 5], 'int32');
    const upd = rand([7, 12], 18);
    const nd = tf.tensor2d([3, 3, 0, 49, 7, 3, 12], [7, 1], 'int32');
    assertExact(() => [tf.gather(x, idx), tf.gather(x, idx2, 1), tf.scatterND(nd, upd, [50, 12])], 'gather/scatter');
    tf.dispose([x, idx, idx2, upd, nd]);
  });

  it('GatherV2 rejects an out-of-range index, like the JS kernel', () => {
    loadNativeKernels();
    const x = rand([4, 3], 19);
    assert.throws(() => tf.gather(x, tf.tensor1d([4], 'int32')), /not in \[0, 3\]/);
    x.dispose();
  });

  it('a forward + backward pass through matMul, softmax and RMSNorm-like ops leaks no tensors', () => {
    loadNativeKernels();
    const w = tf.variable(rand([16, 16], 20));
    const x = rand([8, 16], 21);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) {
      const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(tf.softmax(tf.matMul(x, w)), tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), 1e-5)))) as tf.Scalar);
      tf.dispose([value, grads]);
      assert.equal(tf.memory().numTensors, before);
    }
    tf.dispose([w, x]);
  });
});

/**
 * The fused kernels of the native cpu path against the composite tfjs versions in model/ops.ts:
 *  - weightedCrossEntropy: loss and gradient agree to float32 rounding (the fused kernels take
 *    log-sum-exp in double), masked rows get zero gradient, a bad target is refused;
 *  - rmsNorm: output, dx and dw agree within a few float32 ulps of their scale;
 *  - siluMul (SwiGLU activation): output, dg and du likewise;
 *  - softmaxLast (attention): output and gradient, with a causal −1e9 mask giving exact zeros.
 * The fused kernels compute exp with a branch-free polynomial (about 2e-7 relative error), so the
 * bounds are a few float32 ulps of the tensor's scale.
 * Skips, with the reason, only when the addon has not been built.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { CE_KERNEL, loadNativeKernels, RMS_KERNEL, SILU_MUL_KERNEL, SOFTMAX_KERNEL, unloadNativeKernels } from '../../core/native';
import { rmsNorm, siluMul, softmaxLast, weightedCrossEntropy } from '../../model/ops';
import { lcg, useNativeCpu } from '../helpers/native';

const probe = loadNativeKernels({ register: false });
const skipReason = probe.reason ?? '';

function lossAndGrad(z: Float32Array, T: number, V: number, y: Int32Array, w: Float32Array): { loss: number; grad: Float32Array } {
  const logits = tf.tensor2d(z, [T, V]);
  const { value, grad } = tf.valueAndGrad((x: tf.Tensor) => weightedCrossEntropy(x as tf.Tensor2D, y, w))(logits);
  const out = { loss: value.dataSync()[0], grad: Float32Array.from(grad.dataSync()) };
  tf.dispose([logits, value, grad]);
  return out;
}

/** Values and gradients (w.r.t. both inputs, under a fixed random cotangent) of f(a, b). */
function valueAndGrads2(f: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor, a: tf.Tensor, b: tf.Tensor, cot: tf.Tensor): Float32Array[] {
  return tf.tidy(() => {
    const { value, grads } = tf.valueAndGrads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(f(x, y), cot)))([a, b]);
    const y = f(a, b);
    void value;
    return [y, ...grads].map((t) => Float32Array.from(t.dataSync()));
  });
}

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst / Math.max(scale, 1e-30);
}

describe(probe.loaded ? 'fused kernels (native cpu)' : `fused kernels (native cpu) [skipped: ${skipReason}]`, function () {
  this.timeout(120000);
  useNativeCpu(skipReason);

  for (const [T, V, scale] of [
    [7, 11, 3],
    [64, 512, 8],
    [33, 2048, 30],
  ] as const) {
    it(`matches the composite loss and gradient (T=${T}, V=${V}, logits up to ±${scale})`, () => {
      const z = lcg(T * V, T * 31 + V, scale);
      const y = Int32Array.from({ length: T }, (_, i) => (i * 7919) % V);
      const w = Float32Array.from({ length: T }, (_, i) => (i % 5 === 3 ? 0 : 1 / T));
      unloadNativeKernels();
      assert.equal(tf.getKernel(CE_KERNEL, 'cpu'), undefined);
      const ref = lossAndGrad(z, T, V, y, w);
      assert.ok(loadNativeKernels().loaded);
      assert.ok(tf.getKernel(CE_KERNEL, 'cpu'), 'fused kernel registered');
      const got = lossAndGrad(z, T, V, y, w);
      assert.ok(Math.abs(got.loss - ref.loss) <= 2e-6 * Math.max(1, Math.abs(ref.loss)), `loss ${got.loss} vs ${ref.loss}`);
      let worst = 0;
      for (let i = 0; i < ref.grad.length; i++) worst = Math.max(worst, Math.abs(got.grad[i] - ref.grad[i]));
      assert.ok(worst <= 1e-7, `worst gradient difference ${worst}`);
      for (let t = 0; t < T; t++) {
        if (w[t] !== 0) continue;
        for (let j = 0; j < V; j++) assert.equal(got.grad[t * V + j], 0, `masked row ${t} has zero gradient`);
      }
      // Each unmasked row of the gradient sums to ~0 (softmax minus one-hot).
      const row = Array.from(got.grad.subarray(0, V)).reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(row) < 1e-6, `row sum ${row}`);
    });
  }

  it('refuses a target outside the vocabulary with a RangeError', () => {
    assert.ok(loadNativeKernels().loaded);
    assert.throws(
      () => tf.tidy(() => weightedCrossEntropy(tf.zeros([2, 4]) as tf.Tensor2D, Int32Array.of(1, 4), Float32Array.of(1, 1)).dataSync()),
      /target out of range/,
    );
  });

  for (const [rows, d] of [
    [5, 8],
    [300, 192],
  ] as const) {
    it(`rmsNorm: output, dx and dw match the composite (rows=${rows}, d=${d})`, () => {
      const x = tf.tensor2d(lcg(rows * d, rows + d, 3), [rows, d]);
      const w = tf.tensor1d(lcg(d, 7 * d, 1.5));
      const cot = tf.tensor2d(lcg(rows * d, 99, 1), [rows, d]);
      const f = (a: tf.Tensor, b: tf.Tensor) => rmsNorm(a, b, 1e-6);
      unloadNativeKernels();
      assert.equal(tf.getKernel(RMS_KERNEL, 'cpu'), undefined);
      const ref = valueAndGrads2(f, x, w, cot);
      assert.ok(loadNativeKernels().loaded && tf.getKernel(RMS_KERNEL, 'cpu'));
      const got = valueAndGrads2(f, x, w, cot);
      ['y', 'dx', 'dw'].forEach((name, i) => assert.ok(maxRelDiff(got[i], ref[i]) < 2e-6, `${name}: relative difference ${maxRelDiff(got[i], ref[i])}`));
      tf.dispose([x, w, cot]);
    });
  }

  it('siluMul: output, dg and du match the composite (including large |g|)', () => {
    const n = 4096;
    const g = tf.tensor2d(lcg(n, 5, 12), [64, 64]);
    const u = tf.tensor2d(lcg(n, 6, 2), [64, 64]);
    const cot = tf.tensor2d(lcg(n, 8, 1), [64, 64]);
    unloadNativeKernels();
    assert.equal(tf.getKernel(SILU_MUL_KERNEL, 'cpu'), undefined);
    const ref = valueAndGrads2(siluMul, g, u, cot);
    assert.ok(loadNativeKernels().loaded && tf.getKernel(SILU_MUL_KERNEL, 'cpu'));
    const got = valueAndGrads2(siluMul, g, u, cot);
    ['a', 'dg', 'du'].forEach((name, i) => assert.ok(maxRelDiff(got[i], ref[i]) < 2e-6, `${name}: relative difference ${maxRelDiff(got[i], ref[i])}`));
    tf.dispose([g, u, cot]);
  });

  it('softmaxLast: output and gradient match the composite; masked entries are exactly 0', () => {
    const [B, H, S] = [2, 3, 40];
    const maskVals = new Float32Array(S * S);
    for (let i = 0; i < S; i++) for (let j = i + 1; j < S; j++) maskVals[i * S + j] = -1e9;
    const scores = tf.tidy(() => tf.add(tf.tensor4d(lcg(B * H * S * S, 17, 20), [B, H, S, S]), tf.tensor2d(maskVals, [S, S])));
    const cot = tf.tensor4d(lcg(B * H * S * S, 18, 1), [B, H, S, S]);
    const f = (a: tf.Tensor) => softmaxLast(a);
    const run = () =>
      tf.tidy(() => {
        const { value, grad } = tf.valueAndGrad((x: tf.Tensor) => tf.sum(tf.mul(f(x), cot)))(scores);
        void value;
        return [f(scores), grad].map((t) => Float32Array.from(t.dataSync()));
      });
    unloadNativeKernels();
    assert.equal(tf.getKernel(SOFTMAX_KERNEL, 'cpu'), undefined);
    const ref = run();
    assert.ok(loadNativeKernels().loaded && tf.getKernel(SOFTMAX_KERNEL, 'cpu'));
    const got = run();
    assert.ok(maxRelDiff(got[0], ref[0]) < 1e-6, `y: ${maxRelDiff(got[0], ref[0])}`);
    assert.ok(maxRelDiff(got[1], ref[1]) < 1e-5, `dx: ${maxRelDiff(got[1], ref[1])}`);
    for (let r = 0; r < B * H; r++) for (let i = 0; i < S; i++) for (let j = i + 1; j < S; j++) assert.equal(got[0][(r * S + i) * S + j], 0);
    tf.dispose([scores, cot]);
  });
});

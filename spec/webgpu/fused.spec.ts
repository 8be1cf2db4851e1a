/**
 * The fused WGSL kernels (core/webgpu/fusedKernels.ts) against the composite ops they replace:
 * RMSNorm, attention softmax, cross-entropy, the SwiGLU activation and the MoE weighted combine,
 * forward and gradient. Equal to float32 rounding,
 * bit-identical on a rerun, and fewer dispatches.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { moeCombine, rmsNorm, siluMul, softmaxLast, weightedCrossEntropy } from '../../model/ops';
import { registerFusedKernels, unregisterFusedKernels } from '../../core/webgpu/fusedKernels';
import { programCounter } from '../../core/webgpu/trace';
import { useTestBackend } from '../helpers/backend';
import { webgpuOrSkip } from './helpers';

const rnd = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + s) * 2);
const T = 40;
const D = 64;

/** Each op's value and gradients, read back, and the dispatches it took. */
function runAll(): { out: Record<string, Float32Array>; dispatches: number } {
  const d0 = programCounter.dispatches;
  const out = tf.tidy(() => {
    const x = tf.tensor2d(rnd(T * D, 1), [T, D]);
    const w = tf.tensor1d(rnd(D, 2));
    const dy = tf.tensor2d(rnd(T * D, 3), [T, D]);
    const targets = Int32Array.from({ length: T }, (_, i) => (i * 7) % D);
    const weights = Float32Array.from({ length: T }, (_, i) => (i % 3) / T);
    const [rmsDx, rmsDw] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(rmsNorm(a, b, 1e-5), dy)))([x, w]);
    const r: Record<string, tf.Tensor> = {
      rmsY: rmsNorm(x, w, 1e-5),
      rmsDx,
      rmsDw,
      softmaxY: softmaxLast(x),
      softmaxDx: tf.grad((a: tf.Tensor) => tf.sum(tf.mul(softmaxLast(a), dy)))(x),
      ceLoss: weightedCrossEntropy(x, targets, weights),
      ceDz: tf.grad((a: tf.Tensor) => weightedCrossEntropy(a as tf.Tensor2D, targets, weights))(x),
      siluY: siluMul(x, dy),
    };
    const [sdg, sdu] = tf.grads((g: tf.Tensor, u: tf.Tensor) => tf.sum(tf.mul(siluMul(g, u), w)))([x, dy]);
    // Combine with K = 3 slots per token over 20 source rows, duplicates included.
    const src = tf.tensor2d(rnd(20 * D, 4), [20, D]);
    const slots = Int32Array.from({ length: 12 * 3 }, (_, i) => (i * 7) % 20);
    const gates = tf.tensor2d(rnd(36, 5), [36, 1]);
    const dyc = tf.tensor2d(rnd(12 * D, 6), [12, D]);
    const [cds, cdg] = tf.grads((s: tf.Tensor, g: tf.Tensor) => tf.sum(tf.mul(moeCombine(s as tf.Tensor2D, slots, g, 12, 3), dyc)))([src, gates]);
    Object.assign(r, { siluDg: sdg, siluDu: sdu, combineY: moeCombine(src, slots, gates, 12, 3), combineDsrc: cds, combineDgates: cdg });
    return Object.fromEntries(Object.entries(r).map(([k, t]) => [k, t.dataSync().slice() as Float32Array]));
  });
  return { out, dispatches: programCounter.dispatches - d0 };
}

describe('webgpu: fused kernels', function () {
  this.timeout(120000);
  before(async function () {
    await webgpuOrSkip(this);
  });
  after(async () => {
    registerFusedKernels();
    await useTestBackend();
  });

  it('RMSNorm, softmax, cross-entropy, SwiGLU activation and MoE combine (values and gradients) equal the composite ops to float32 rounding, with fewer dispatches', async () => {
    const fused = runAll();
    const again = runAll();
    unregisterFusedKernels();
    let composite;
    try {
      composite = runAll();
    } finally {
      registerFusedKernels();
    }
    for (const [k, c] of Object.entries(composite.out)) {
      const f = fused.out[k];
      assert.equal(f.length, c.length, k);
      let scale = 0;
      for (const v of c) scale = Math.max(scale, Math.abs(v));
      for (let i = 0; i < c.length; i++) assert.ok(Math.abs(f[i] - c[i]) <= 1e-6 * Math.max(1, scale), `${k}[${i}]: fused ${f[i]} vs composite ${c[i]}`);
      assert.ok(Buffer.from(f.buffer).equals(Buffer.from(again.out[k].buffer)), `${k}: a rerun differs`);
    }
    assert.ok(fused.dispatches < composite.dispatches, `fused ${fused.dispatches} vs composite ${composite.dispatches} dispatches`);
  });
});

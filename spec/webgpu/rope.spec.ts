/**
 * The fused attention pieces of core/webgpu/ropeKernels.ts against the composite ops they
 * replace: RoPE on whole heads and on the tail of each head (MLA's query), for shared
 * [S, half] and per-row [B, S, half] tables, and MLA's key (per-head part concatenated with one
 * part shared by all heads). Values and gradients equal to float32 rounding, bit for bit on a
 * rerun, in far fewer dispatches; bad shapes get a clear error.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { applyRope, concatShared, ropeTables, ropeTail } from '../../model/ops';
import { registerRopeKernels, unregisterRopeKernels } from '../../core/webgpu/ropeKernels';
import { programCounter } from '../../core/webgpu/trace';
import { useTestBackend } from '../helpers/backend';
import { webgpuOrSkip } from './helpers';

const rnd = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + s * 78.233) * 2);
const [B, S, H, D] = [3, 16, 4, 16];

const KEEP = 6;

function run(perRow: boolean): { out: Float32Array[]; dispatches: number } {
  const d0 = programCounter.dispatches;
  const out = tf.tidy(() => {
    const tables = (dim: number) => {
      const t = ropeTables(S, dim, 10000, 5);
      const rows = (a: Float32Array) => (perRow ? tf.tensor3d(Float32Array.from({ length: B * a.length }, (_, i) => a[i % a.length] * (1 + Math.floor(i / a.length) * 0.1)), [B, S, dim / 2]) : tf.tensor2d(a, [S, dim / 2]));
      return { cos: rows(t.cos), sin: rows(t.sin) };
    };
    const whole = tables(D);
    const tail = tables(D - KEEP);
    const x = tf.tensor4d(rnd(B * S * H * D, 1), [B, S, H, D]);
    const dy = tf.tensor4d(rnd(B * S * H * D, 2), [B, S, H, D]);
    const r = tf.tensor4d(rnd(B * S * 6, 3), [B, S, 1, 6]);
    const dyk = tf.tensor4d(rnd(B * S * H * (D + 6), 4), [B, S, H, D + 6]);
    const grad = (f: (a: tf.Tensor4D) => tf.Tensor, cot: tf.Tensor) => tf.grad((a: tf.Tensor) => tf.sum(tf.mul(f(a as tf.Tensor4D), cot)))(x);
    const rope = (a: tf.Tensor4D) => applyRope(a, whole.cos, whole.sin);
    const ropeT = (a: tf.Tensor4D) => ropeTail(a, KEEP, tail.cos, tail.sin);
    const [ka, kr] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(concatShared(a as tf.Tensor4D, b as tf.Tensor4D), dyk)))([x, r]);
    return [rope(x), grad(rope, dy), ropeT(x), grad(ropeT, dy), concatShared(x, r), ka, kr].map((v) => Float32Array.from(v.dataSync()));
  });
  return { out, dispatches: programCounter.dispatches - d0 };
}

describe('webgpu: fused RoPE and MLA key', function () {
  this.timeout(120000);
  before(async function () {
    await webgpuOrSkip(this);
  });
  after(async () => {
    registerRopeKernels();
    await useTestBackend();
  });

  for (const perRow of [false, true]) {
    it(`RoPE (whole head, tail of the head) and the shared-part concat: values and gradients equal the composite to float32 rounding, a rerun bit for bit (${perRow ? 'per-row [B, S, half]' : 'shared [S, half]'} tables)`, () => {
      const fused = run(perRow);
      const again = run(perRow);
      unregisterRopeKernels();
      let comp: ReturnType<typeof run>;
      try {
        comp = run(perRow);
      } finally {
        registerRopeKernels();
      }
      for (const [i, name] of ['rope y', 'rope dx', 'ropeTail y', 'ropeTail dx', 'concatShared y', 'concatShared da', 'concatShared dr'].entries()) {
        const [f, c] = [fused.out[i], comp.out[i]];
        assert.equal(f.length, c.length);
        assert.ok(c.some((v) => v !== 0), `${name}: composite all zero`);
        for (let j = 0; j < c.length; j++) assert.ok(Math.abs(f[j] - c[j]) <= 1e-6 * Math.max(1, Math.abs(c[j])), `${name}[${j}]: fused ${f[j]} vs composite ${c[j]}`);
        assert.ok(Buffer.from(f.buffer).equals(Buffer.from(again.out[i].buffer)), `${name}: a rerun differs`);
      }
      assert.ok(fused.dispatches * 4 < comp.dispatches, `fused ${fused.dispatches} vs composite ${comp.dispatches} dispatches`);
    });
  }

  it('an odd roped dimension, tables of the wrong size or a shared part per head get one clear error', () => {
    tf.tidy(() => {
      const t = ropeTables(S, D, 10000);
      assert.throws(() => applyRope(tf.zeros([B, S, H, 7]) as tf.Tensor4D, tf.zeros([S, 3]), tf.zeros([S, 3])), /MoecatRope: expects a float32 \[B, S, H, dim\] with an even dim/);
      assert.throws(() => applyRope(tf.zeros([B, S, H, D]) as tf.Tensor4D, tf.tensor2d(t.cos, [S, D / 2]), tf.zeros([S - 1, D / 2])), /MoecatRope: sin must be float32 \[16, 8\] or \[3, 16, 8\], got \[15,8\]/);
      assert.throws(() => ropeTail(tf.zeros([B, S, H, D]) as tf.Tensor4D, 5, tf.zeros([S, 5]), tf.zeros([S, 5])), /MoecatRope: expects a float32 \[B, S, H, dim\] with an even dim − keep \(keep=5\)/);
      assert.throws(() => concatShared(tf.zeros([B, S, H, D]) as tf.Tensor4D, tf.zeros([B, S, 2, 6]) as tf.Tensor4D), /MoecatConcatShared: expects float32 a \[B, S, H, da\] and r \[B, S, 1, dr\], got \[3,16,4,16\] and \[3,16,2,6\]/);
    });
  });
});

/**
 * The fused RoPE kernels of core/webgpu/ropeKernels.ts against the composite ops they replace
 * (split, four multiplies, subtract, add, concat): value and gradient equal to float32 rounding
 * for shared [S, dim/2] and per-row [B, S, dim/2] tables, bit for bit on a rerun, in one
 * dispatch each way; bad shapes get a clear error.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { applyRope, ropeTables } from '../../model/ops';
import { registerRopeKernels, unregisterRopeKernels } from '../../core/webgpu/ropeKernels';
import { programCounter } from '../../core/webgpu/trace';
import { useTestBackend } from '../helpers/backend';
import { webgpuOrSkip } from './helpers';

const rnd = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + s * 78.233) * 2);
const [B, S, H, D] = [3, 16, 4, 16];

function run(perRow: boolean): { out: Float32Array[]; dispatches: number } {
  const d0 = programCounter.dispatches;
  const out = tf.tidy(() => {
    const t = ropeTables(S, D, 10000, 5);
    const rows = (a: Float32Array) => (perRow ? tf.tensor3d(Float32Array.from({ length: B * a.length }, (_, i) => a[i % a.length] * (1 + Math.floor(i / a.length) * 0.1)), [B, S, D / 2]) : tf.tensor2d(a, [S, D / 2]));
    const cos = rows(t.cos);
    const sin = rows(t.sin);
    const x = tf.tensor4d(rnd(B * S * H * D, 1), [B, S, H, D]);
    const dy = tf.tensor4d(rnd(B * S * H * D, 2), [B, S, H, D]);
    const dx = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(applyRope(a as tf.Tensor4D, cos, sin), dy)))(x);
    return [applyRope(x, cos, sin), dx].map((v) => Float32Array.from(v.dataSync()));
  });
  return { out, dispatches: programCounter.dispatches - d0 };
}

describe('webgpu: fused RoPE', function () {
  this.timeout(120000);
  before(async function () {
    await webgpuOrSkip(this);
  });
  after(async () => {
    registerRopeKernels();
    await useTestBackend();
  });

  for (const perRow of [false, true]) {
    it(`value and gradient equal the composite to float32 rounding, a rerun bit for bit (${perRow ? 'per-row [B, S, dim/2]' : 'shared [S, dim/2]'} tables)`, () => {
      const fused = run(perRow);
      const again = run(perRow);
      unregisterRopeKernels();
      let comp: ReturnType<typeof run>;
      try {
        comp = run(perRow);
      } finally {
        registerRopeKernels();
      }
      for (const [i, name] of ['y', 'dx'].entries()) {
        const [f, c] = [fused.out[i], comp.out[i]];
        assert.equal(f.length, c.length);
        assert.ok(c.some((v) => v !== 0), `${name}: composite all zero`);
        for (let j = 0; j < c.length; j++) assert.ok(Math.abs(f[j] - c[j]) <= 1e-6 * Math.max(1, Math.abs(c[j])), `${name}[${j}]: fused ${f[j]} vs composite ${c[j]}`);
        assert.ok(Buffer.from(f.buffer).equals(Buffer.from(again.out[i].buffer)), `${name}: a rerun differs`);
      }
      assert.ok(fused.dispatches * 4 < comp.dispatches, `fused ${fused.dispatches} vs composite ${comp.dispatches} dispatches`);
    });
  }

  it('an odd head dimension or tables of the wrong size get one clear error', () => {
    tf.tidy(() => {
      const t = ropeTables(S, D, 10000);
      assert.throws(() => applyRope(tf.zeros([B, S, H, 7]) as tf.Tensor4D, tf.zeros([S, 3]), tf.zeros([S, 3])), /MoecatRope: expects a float32 \[B, S, H, dim\] with an even dim/);
      assert.throws(() => applyRope(tf.zeros([B, S, H, D]) as tf.Tensor4D, tf.tensor2d(t.cos, [S, D / 2]), tf.zeros([S - 1, D / 2])), /MoecatRope: sin must be float32 \[16, 8\] or \[3, 16, 8\], got \[15,8\]/);
    });
  });
});

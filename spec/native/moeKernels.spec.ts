/**
 * The fused MoE kernels of the native cpu path (model/moe/nativeKernels.ts) against the composites they
 * replace, on the same backend: all FFN experts in one kernel each way, and the weighted
 * combine. They run the same BLAS calls and the same element-wise arithmetic in the same order,
 * so values and every gradient must be bitwise equal, including experts without rows (zero
 * weight gradients) and tokens whose slots share a source row (duplicate scatter). Bad inputs
 * get a clear error. Skips, with the reason, only when the addon has not been built.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { COMBINE_KERNEL, EXPERTS_KERNEL } from '../../model/moe/nativeKernels';
import { loadNativeKernels, nativeAddon } from '../../core/native';
import { expertsFfn, moeCombine } from '../../model/ops';
import { lcg, useNativeCpu } from '../helpers/native';

const probe = loadNativeKernels({ register: false });
const skipReason = probe.reason ?? '';

/** Value and gradients w.r.t. every input of f under a fixed cotangent, as host arrays. */
function valueAndGrads(f: (...xs: tf.Tensor[]) => tf.Tensor, xs: tf.Tensor[], cot: tf.Tensor): Float32Array[] {
  return tf.tidy(() => {
    const { value, grads } = tf.valueAndGrads((...a: tf.Tensor[]) => tf.sum(tf.mul(f(...a), cot)))(xs);
    void value;
    return [f(...xs), ...grads].map((t) => Float32Array.from(t.dataSync()));
  });
}

function assertBitwise(got: Float32Array[], ref: Float32Array[], what: string[]): void {
  assert.equal(got.length, ref.length);
  for (let i = 0; i < ref.length; i++) {
    assert.equal(got[i].length, ref[i].length, `${what[i]}: length`);
    const a = new Uint32Array(got[i].buffer, got[i].byteOffset, got[i].length);
    const b = new Uint32Array(ref[i].buffer, ref[i].byteOffset, ref[i].length);
    let bad = -1;
    for (let j = 0; j < a.length && bad < 0; j++) if (a[j] !== b[j] && !(got[i][j] === 0 && ref[i][j] === 0)) bad = j;
    assert.equal(bad, -1, `${what[i]}: element ${bad} differs (${got[i][bad]} vs ${ref[i][bad]})`);
  }
}

describe(probe.loaded ? 'fused MoE kernels (native cpu)' : `fused MoE kernels (native cpu) [skipped: ${skipReason}]`, function () {
  this.timeout(120000);
  useNativeCpu(skipReason);

  for (const [d, h, sizes] of [
    [8, 4, [3, 0, 5, 1]],
    [48, 32, [40, 17, 0, 0, 63, 2]],
    [192, 128, [300, 0, 41]],
  ] as const) {
    it(`all experts in one kernel equal the per-expert composite bit for bit (d=${d}, h=${h}, rows ${sizes.join('/')})`, () => {
      assert.ok(tf.getKernel(EXPERTS_KERNEL, 'cpu'), 'fused kernel registered');
      const N = sizes.length;
      const offsets = new Int32Array(N + 1);
      for (let e = 0; e < N; e++) offsets[e + 1] = offsets[e] + sizes[e];
      const R = offsets[N];
      const x = tf.tensor2d(lcg(R * d, 7 + d, 1), [R, d]);
      const ws = Array.from({ length: 3 * N }, (_, i) => (i % 3 === 2 ? tf.tensor2d(lcg(h * d, 100 + i, 0.2), [h, d]) : tf.tensor2d(lcg(d * h, 100 + i, 0.2), [d, h])));
      const cot = tf.tensor2d(lcg(R * d, 99, 1), [R, d]);
      // Autodiff of the composite has no gradient for an expert without rows (its weights are
      // not in the graph): differentiate w.r.t. the used experts there, compare, and check the
      // fused kernel's gradients of the unused ones are exactly zero.
      const used = ws.map((_, i) => i).filter((i) => sizes[Math.floor(i / 3)] > 0);
      const withUsed = (f: (w: tf.Tensor[]) => tf.Tensor) => (xi: tf.Tensor, ...u: tf.Tensor[]) => f(ws.map((w, i) => (used.includes(i) ? u[used.indexOf(i)] : w)));
      const names = ['y', 'dx', ...used.map((i) => `dW${i}`)];
      const ref = valueAndGrads((xi, ...u) => withUsed((w) => expertsFfn(xi as tf.Tensor2D, w, offsets, true))(xi, ...u), [x, ...used.map((i) => ws[i])], cot);
      const got = valueAndGrads((xi, ...u) => withUsed((w) => expertsFfn(xi as tf.Tensor2D, w, offsets))(xi, ...u), [x, ...used.map((i) => ws[i])], cot);
      assertBitwise(got, ref, names);
      // Not vacuous: the output, dx and every used weight's gradient are non-zero.
      for (const [i, g] of got.entries()) assert.ok(g.some((v) => v !== 0), `${names[i]} is not all zero`);
      const all = valueAndGrads((xi, ...w) => expertsFfn(xi as tf.Tensor2D, w, offsets), [x, ...ws], cot);
      for (let i = 0; i < ws.length; i++) if (!used.includes(i)) assert.ok(all[2 + i].every((v) => v === 0), `unused weight ${i} has zero gradient`);
      tf.dispose([x, ...ws, cot]);
    });
  }

  it('16 experts spread over 1, 2 and 3 pool threads give the composite\'s bits (native/experts.c, one task per expert)', () => {
    const m = nativeAddon()!;
    const threadsBefore = m.gemmInfo().threads;
    const sizes = [37, 0, 12, 90, 5, 0, 64, 1, 23, 41, 0, 8, 70, 3, 16, 29];
    const [d, h, N] = [24, 16, sizes.length];
    const offsets = new Int32Array(N + 1);
    for (let e = 0; e < N; e++) offsets[e + 1] = offsets[e] + sizes[e];
    const R = offsets[N];
    const x = tf.tensor2d(lcg(R * d, 5, 1), [R, d]);
    const ws = Array.from({ length: 3 * N }, (_, i) => (i % 3 === 2 ? tf.tensor2d(lcg(h * d, 300 + i, 0.3), [h, d]) : tf.tensor2d(lcg(d * h, 300 + i, 0.3), [d, h])));
    const cot = tf.tensor2d(lcg(R * d, 17, 1), [R, d]);
    const used = ws.map((_, i) => i).filter((i) => sizes[Math.floor(i / 3)] > 0);
    const f = (composite: boolean) => (xi: tf.Tensor, ...u: tf.Tensor[]) => expertsFfn(xi as tf.Tensor2D, ws.map((w, i) => (used.includes(i) ? u[used.indexOf(i)] : w)), offsets, composite);
    const names = ['y', 'dx', ...used.map((i) => `dW${i}`)];
    try {
      m.setThreads(1);
      const ref = valueAndGrads(f(true), [x, ...used.map((i) => ws[i])], cot);
      for (const t of [1, 2, 3]) {
        m.setThreads(t);
        assertBitwise(valueAndGrads(f(false), [x, ...used.map((i) => ws[i])], cot), ref, names.map((n) => `${n} (${t} threads)`));
      }
      assert.ok(ref.every((a) => a.some((v) => v !== 0)), 'outputs and gradients are not all zero');
    } finally {
      m.setThreads(threadsBefore);
      tf.dispose([x, ...ws, cot]);
    }
  });

  it('the fused experts kernel leaks no tensors and refuses offsets that do not cover x', () => {
    const x = tf.tensor2d(lcg(6 * 4, 1, 1), [6, 4]);
    const ws = Array.from({ length: 6 }, (_, i) => (i % 3 === 2 ? tf.zeros([2, 4]) : tf.zeros([4, 2])));
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      expertsFfn(x, ws, Int32Array.of(0, 2, 6));
    });
    assert.equal(tf.memory().numTensors, before);
    assert.throws(() => expertsFfn(x, ws, Int32Array.of(0, 2, 5)), /offsets must run from 0 to the 6 rows/);
    assert.throws(() => expertsFfn(x, ws.slice(0, 5), Int32Array.of(0, 2, 6)), /5 weights for 2 experts/);
    const bad = [...ws.slice(0, 5), tf.zeros([3, 4])];
    assert.throws(() => expertsFfn(x, bad, Int32Array.of(0, 2, 6)), /w5 has shape \[3,4\]/);
    tf.dispose([x, ...ws, ...bad]);
  });

  for (const [T, K, d, R] of [
    [5, 2, 3, 9],
    [64, 4, 48, 300],
  ] as const) {
    it(`the weighted combine equals gather -> mul -> sum bit for bit (T=${T}, K=${K}, d=${d}, duplicate sources)`, () => {
      assert.ok(tf.getKernel(COMBINE_KERNEL, 'cpu'), 'fused kernel registered');
      // Every third slot points at a shared row (as zero-expert slots share their token's row).
      const slot = Int32Array.from({ length: T * K }, (_, i) => (i % 3 === 0 ? R - 1 - (Math.floor(i / K) % 2) : (i * 7919) % R));
      const src = tf.tensor2d(lcg(R * d, 3, 2), [R, d]);
      const gates = tf.tensor2d(lcg(T * K, 5, 1), [T * K, 1]);
      const cot = tf.tensor2d(lcg(T * d, 11, 1), [T, d]);
      const ref = valueAndGrads((s, g) => moeCombine(s as tf.Tensor2D, slot, g, T, K, true), [src, gates], cot);
      const got = valueAndGrads((s, g) => moeCombine(s as tf.Tensor2D, slot, g, T, K), [src, gates], cot);
      assertBitwise(got, ref, ['out', 'dsrc', 'dgates']);
      assert.ok(got.every((a) => a.some((v) => v !== 0)));
      tf.dispose([src, gates, cot]);
    });
  }

  it('the combine kernel refuses a slot source outside the rows', () => {
    const src = tf.zeros([4, 2]) as tf.Tensor2D;
    const gates = tf.ones([4, 1]);
    assert.throws(() => moeCombine(src, Int32Array.of(0, 1, 2, 4), gates, 2, 2), /slot source out of range/);
    tf.dispose([src, gates]);
  });
});

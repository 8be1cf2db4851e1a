/**
 * Two buffer-pool leaks/hazards found in review: `storage.set` over an entry whose old and new
 * values share a buffer must not put that live buffer on the free list; the fused experts
 * gradient's scratch buffers go back to the pool (a training step's allocations then reach a
 * steady state with no fresh ones).
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { BufferPool } from '../../core/bufferPool';
import { loadNativeKernels, nativePoolStats } from '../../core/native';
import { expertsFfn } from '../../model/ops';
import { fakeBackend, lcg, useNativeCpu } from '../helpers/native';

describe('buffer pool: storage.set takes the new reference before dropping the old', () => {
  it('re-setting an entry to a view of its own buffer keeps the buffer live', () => {
    const pool = new BufferPool(1 << 30);
    const backend = fakeBackend();
    const detach = pool.attach(backend);
    const a = pool.take(1000);
    const id = {};
    backend.data.set(id, { values: a });
    backend.data.set(id, { values: a.subarray(0, 500) });
    assert.equal(pool.snapshot().recycled, 0, 'the buffer is still referred to');
    assert.notEqual(pool.take(1000).buffer, a.buffer, 'a live buffer is never handed out');
    backend.data.delete(id);
    assert.equal(pool.snapshot().recycled, 1);
    detach();
  });
});

const probe = loadNativeKernels({ register: false });
const skipReason = probe.reason ?? '';

describe(probe.loaded ? 'fused experts gradient scratch (native cpu)' : `fused experts gradient scratch [skipped: ${skipReason}]`, function () {
  this.timeout(120000);
  useNativeCpu(skipReason);

  it('after warm-up, a forward+backward round takes every buffer from the pool (no misses)', () => {
    const [d, h, sizes] = [32, 24, [20, 7, 0, 13]];
    const offsets = new Int32Array(sizes.length + 1);
    sizes.forEach((n, e) => (offsets[e + 1] = offsets[e] + n));
    const R = offsets[sizes.length];
    const x = tf.tensor2d(lcg(R * d, 3, 1), [R, d]);
    const ws = Array.from({ length: 3 * sizes.length }, (_, i) => (i % 3 === 2 ? tf.tensor2d(lcg(h * d, 50 + i, 0.2), [h, d]) : tf.tensor2d(lcg(d * h, 50 + i, 0.2), [d, h])));
    const round = () =>
      tf.tidy(() => {
        const g = tf.grads((xi: tf.Tensor, ...w: tf.Tensor[]) => tf.sum(expertsFfn(xi as tf.Tensor2D, w, offsets)))([x, ...ws]);
        return g.map((t) => t.dataSync()[0]);
      });
    for (let i = 0; i < 3; i++) round();
    const before = nativePoolStats()!;
    round();
    round();
    const after = nativePoolStats()!;
    assert.ok(after.hits > before.hits, 'the rounds used the pool');
    assert.equal(after.misses - before.misses, 0, 'no fresh allocation once warm: every buffer taken came back');
    tf.dispose([x, ...ws]);
  });
});

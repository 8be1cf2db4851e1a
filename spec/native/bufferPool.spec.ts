/**
 * The native kernels' output-buffer pool (core/bufferPool.ts) and the native AdamW: buffers are
 * reused, and reuse never lets one tensor's data change another's, a dataSync() result, or a
 * user's array; training bits are the same with the pool on or off, and the C AdamW gives the
 * JS AdamW's bits. The pool logic itself runs without the addon; the rest skips, with the
 * reason, only when the addon has not been built.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { BufferPool, sizeClass } from '../../core/bufferPool';
import { loadNativeKernels, nativeAddon, nativePoolStats, unloadNativeKernels } from '../../core/native';
import { adamwStep, adamwStepJs, newAdamWState, ParamSlice } from '../../trainer/adamw';
import { loadTrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer } from '../../trainer/trainer';
import { fakeBackend, useNativeCpu } from '../helpers/native';

const probe = loadNativeKernels({ register: false });
const skipReason = probe.reason ?? '';

function seq(n: number, start = 0): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => start + i);
}

describe('buffer pool (logic)', () => {
  it('size classes leave at most 25% slack and are monotone', () => {
    let prev = 0;
    for (let n = 1; n < 200000; n += 37) {
      const c = sizeClass(n);
      assert.ok(c >= n && c <= Math.max(n, 8) * 1.25 + 1, `class ${c} for ${n}`);
      assert.ok(c >= prev);
      prev = c;
    }
  });

  it('recycles only its own buffers, only when the last entry referring to them goes', () => {
    const pool = new BufferPool(1 << 30);
    const backend = fakeBackend();
    const detach = pool.attach(backend);
    const a = pool.take(1000);
    a.set(seq(1000));
    const id1 = {};
    const id2 = {};
    backend.data.set(id1, { values: a });
    backend.data.set(id2, { values: a.subarray(10, 20) }); // a view, as tfjs' JS slice makes
    const read = backend.readSync(id1) as Float32Array;
    assert.notEqual(read.buffer, a.buffer, 'readSync of a pooled buffer must be a copy');
    backend.data.delete(id1);
    assert.equal(pool.snapshot().recycled, 0, 'the view still refers to the buffer');
    const b = pool.take(1000);
    assert.notEqual(b.buffer, a.buffer);
    backend.data.delete(id2);
    assert.equal(pool.snapshot().recycled, 1);
    const c = pool.take(1000);
    assert.equal(c.buffer, a.buffer, 'released buffer is handed out again');
    // A user's array is never pooled.
    const user = seq(1000);
    const id3 = {};
    backend.data.set(id3, { values: user });
    backend.data.delete(id3);
    assert.notEqual(pool.take(1000).buffer, user.buffer);
    // give() twice does not put one buffer on the free list twice.
    const d = pool.take(5000);
    pool.give(d);
    pool.give(d);
    const e1 = pool.take(5000);
    const e2 = pool.take(5000);
    assert.notEqual(e1.buffer, e2.buffer);
    assert.equal(read[999], 999);
    detach();
  });

  it('drops buffers beyond its cap', () => {
    const pool = new BufferPool(4096 * 4);
    const xs = [pool.take(4096), pool.take(4096)];
    xs.forEach((x) => pool.give(x));
    const s = pool.snapshot();
    assert.equal(s.recycled, 1);
    assert.equal(s.dropped, 1);
    assert.equal(s.pooledBytes, 4096 * 4);
  });
});

describe('buffer pool on the cpu backend with native kernels', function () {
  this.timeout(300000);
  useNativeCpu(skipReason);

  it('reuses buffers, and a reused buffer never changes a live tensor, a dataSync result or a user array', () => {
    assert.ok(nativePoolStats(), 'the pool is on by default');
    const user = seq(4096, 1);
    const userCopy = user.slice();
    const x = tf.tensor(user, [64, 64]);
    const keep: { t: tf.Tensor; want: Float32Array }[] = [];
    const reads: { got: Float32Array; want: Float32Array }[] = [];
    const before = nativePoolStats()!.hits;
    for (let i = 0; i < 20; i++) {
      const y = tf.tidy(() => tf.add(tf.mul(x, i + 1), 0.5)); // native Multiply/Add outputs
      const want = Float32Array.from(userCopy, (v) => Math.fround(Math.fround(v * (i + 1)) + 0.5));
      const got = y.dataSync() as Float32Array;
      reads.push({ got, want });
      // A JS slice kernel path (unstack) makes views of the pooled buffer.
      const rows = tf.unstack(y);
      if (i % 3 === 0) keep.push({ t: rows[5], want: want.slice(5 * 64, 6 * 64) });
      rows.forEach((r, k) => {
        if (!(i % 3 === 0 && k === 5)) r.dispose();
      });
      y.dispose();
    }
    x.dispose();
    assert.ok(nativePoolStats()!.hits > before, 'outputs came from recycled buffers');
    assert.deepEqual(user, userCopy, 'the user array passed to tf.tensor is untouched');
    for (const r of reads) assert.deepEqual(r.got, r.want, 'dataSync results survive later kernels');
    for (const k of keep) {
      assert.deepEqual(k.t.dataSync(), k.want, 'a view kept alive keeps its buffer');
      k.t.dispose();
    }
  });

  it('kernels that do not write every element (pad, scatter) still give zeros on a dirty buffer', () => {
    for (let i = 0; i < 5; i++) {
      // Dirty the free lists with non-zero data of the same size classes.
      tf.tidy(() => tf.add(tf.ones([10, 12]), 7).dataSync());
      const padded = tf.tidy(() => tf.pad(tf.ones([8, 10]), [[1, 1], [1, 1]]));
      const v = padded.dataSync() as Float32Array;
      assert.equal(v.reduce((a, b) => a + b, 0), 80);
      padded.dispose();
      tf.tidy(() => tf.add(tf.ones([10, 12]), 7).dataSync());
      const sc = tf.tidy(() => tf.scatterND(tf.tensor2d([[1], [3]], [2, 1], 'int32'), tf.ones([2, 12]), [10, 12]));
      assert.equal((sc.dataSync() as Float32Array).reduce((a, b) => a + b, 0), 24);
      sc.dispose();
    }
    assert.ok(nativePoolStats()!.hits > 0);
  });

  it('training gives the same bits with the pool on and off', async () => {
    const cfg = loadTrainConfig('configs/tiny.yaml', ['data.synthetic={}', 'data.seqLen=32', 'data.microBatchSize=2', 'data.microBatches=2', 'train.steps=10', 'optim.schedule={type: wsd, warmupSteps: 2, decaySteps: 2}']).config;
    const hashes: string[] = [];
    for (const poolMb of [0, 512]) {
      unloadNativeKernels();
      assert.ok(loadNativeKernels({ poolMb }).loaded);
      assert.equal(nativePoolStats() === null, poolMb === 0);
      const t = new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen));
      for (let i = 0; i < 4; i++) await t.step();
      hashes.push(t.paramHash());
      t.dispose();
    }
    assert.equal(hashes[0], hashes[1]);
  });

  it('the C AdamW (two threads) gives the JS AdamW bits, with per-group LR, decay and clipping', () => {
    const native = nativeAddon();
    assert.ok(native?.adamw, 'addon exports adamw');
    // Above 2^18 parameters the C update splits the elements between two threads.
    const n = 300000;
    const slices: ParamSlice[] = [
      { offset: 0, size: 1000, group: 'embedding' },
      { offset: 1000, size: 150000, group: 'hidden' },
      { offset: 151000, size: 900, group: 'norm' },
      { offset: 151900, size: 148000, group: 'hidden' },
      { offset: 299900, size: 100, group: 'router' },
    ];
    const mk = (seed: number) => {
      let s = seed;
      return Float32Array.from({ length: n }, () => {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        return (s / 2 ** 32 - 0.5) * 0.1;
      });
    };
    const cfg = { beta1: 0.9, beta2: 0.95, eps: 1e-16, weightDecay: 0.1 };
    const run = (useNative: boolean) => {
      const params = mk(1);
      const st = newAdamWState(n);
      const step = useNative ? adamwStep : adamwStepJs;
      for (let t = 0; t < 5; t++) step(params, mk(10 + t), st, slices, 3e-3, cfg, { hidden: 0.25, router: 0.5 }, t === 2 ? 0.37 : 1);
      return { params, m: st.m, v: st.v };
    };
    const js = run(false);
    const c = run(true);
    assert.deepEqual(c.params, js.params);
    assert.deepEqual(c.m, js.m);
    assert.deepEqual(c.v, js.v);
  });
});

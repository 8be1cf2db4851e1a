/**
 * The deterministic kernels of core/webgpu against the CPU backend: the row-list sums must give
 * the CPU's bits (same order of additions), and no program a step can reach may use atomics.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { useTestBackend } from '../helpers/backend';
import { startProgramTrace } from '../../core/webgpu/trace';
import { withOriginalKernel } from '../../core/webgpu/segmentKernels';
import { wouldSplitK } from '../../core/webgpu/matmulGuard';
import { webgpuOrSkip } from './helpers';

/** Runs `fn` on cpu and on webgpu from the same host inputs; returns both outputs' values. */
async function onBoth(fn: () => tf.Tensor): Promise<{ cpu: Float32Array | Int32Array; gpu: Float32Array | Int32Array; gpuTrace: ReturnType<typeof startProgramTrace>['trace'] }> {
  await tf.setBackend('cpu');
  const c = fn();
  const cpu = c.dataSync() as Float32Array;
  c.dispose();
  await tf.setBackend('webgpu');
  const tr = startProgramTrace();
  let gpu: Float32Array;
  try {
    const g = fn();
    gpu = g.dataSync() as Float32Array;
    g.dispose();
  } finally {
    tr.stop();
  }
  return { cpu, gpu, gpuTrace: tr.trace };
}

function randoms(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return (s / 2147483648) * 2 - 1;
  });
}

const bitsEqual = (a: ArrayLike<number>, b: ArrayLike<number>) => Buffer.from(new Float32Array(a).buffer).equals(Buffer.from(new Float32Array(b).buffer));

describe('webgpu: deterministic kernels', function () {
  this.timeout(120000);
  before(async function () {
    await webgpuOrSkip(this);
  });
  after(() => useTestBackend());

  it('ScatterNd with duplicate indices gives the CPU backend bits', async () => {
    const idx = Int32Array.from({ length: 300 }, (_, i) => (i * 37) % 41);
    const upd = randoms(300 * 24, 7);
    const r = await onBoth(() => tf.scatterND(tf.tensor2d(idx, [300, 1], 'int32'), tf.tensor2d(upd, [300, 24]), [41, 24]));
    assert.ok(bitsEqual(r.cpu, r.gpu));
    assert.ok([...r.gpuTrace.counts.keys()].some((k) => k.includes('moecatRowListSum')), `programs: ${[...r.gpuTrace.counts.keys()]}`);
  });

  it('the gradient of tf.gather (UnsortedSegmentSum) is reproducible bit for bit and matches the CPU to float32 rounding', async () => {
    const ids = Int32Array.from({ length: 200 }, (_, i) => (i * 13) % 29);
    const x = randoms(50 * 16, 3);
    const dy = randoms(200 * 16, 5);
    const grad = () => {
      const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, tf.tensor1d(ids, 'int32')), tf.tensor2d(dy, [200, 16]))));
      return g(tf.tensor2d(x, [50, 16]));
    };
    const r = await onBoth(grad);
    const again = await onBoth(grad);
    assert.ok(bitsEqual(r.gpu, again.gpu), 'two webgpu runs differ');
    // The CPU backend sums segments in double and rounds once; the GPU adds in float32.
    for (let i = 0; i < r.cpu.length; i++) assert.ok(Math.abs(r.cpu[i] - r.gpu[i]) <= 1e-6 * Math.max(1, Math.abs(r.cpu[i])), `element ${i}`);
    assert.ok([...r.gpuTrace.counts.keys()].some((k) => k.includes('moecatRowListSum')), `programs: ${[...r.gpuTrace.counts.keys()]}`);
    assert.deepEqual([...r.gpuTrace.atomic], []);
  });

  it('SparseSegmentSum and Bincount give the CPU backend values', async () => {
    const data = randoms(10 * 3, 11);
    const s = await onBoth(() => tf.sparse.sparseSegmentSum(tf.tensor2d(data, [10, 3]), tf.tensor1d([0, 3, 3, 9, 1], 'int32'), tf.tensor1d([0, 0, 1, 3, 3], 'int32')));
    assert.ok(bitsEqual(s.cpu, s.gpu));
    const b = await onBoth(() => tf.bincount(tf.tensor1d([1, 4, 4, 2, 9, 0, 4], 'int32'), tf.tensor1d(randoms(7, 2)), 6));
    assert.ok(bitsEqual(b.cpu, b.gpu));
    assert.deepEqual([...s.gpuTrace.atomic, ...b.gpuTrace.atomic], []);
  });

  it('a small-output matMul with K >= 2000 avoids split-K, is reproducible, and is within the float32 error bound', async () => {
    const a = randoms(4 * 3000, 1);
    const bm = randoms(3000 * 40, 2);
    await tf.setBackend('webgpu');
    const backend = tf.backend() as unknown as { thresholdToIncreaseWorkgroups: number };
    const args = { inputs: { a: { shape: [4, 3000] }, b: { shape: [3000, 40] } }, backend, attrs: {} } as unknown as Parameters<typeof wouldSplitK>[0];
    assert.equal(wouldSplitK(args), true, 'tfjs would have taken split-K for this shape');
    const r = await onBoth(() => tf.matMul(tf.tensor2d(a, [4, 3000]), tf.tensor2d(bm, [3000, 40])));
    assert.deepEqual([...r.gpuTrace.atomic], []);
    assert.ok(![...r.gpuTrace.counts.keys()].some((k) => /SplitK/i.test(k)), `programs: ${[...r.gpuTrace.counts.keys()]}`);
    const again = await onBoth(() => tf.matMul(tf.tensor2d(a, [4, 3000]), tf.tensor2d(bm, [3000, 40])));
    assert.ok(bitsEqual(r.gpu, again.gpu), 'two webgpu runs differ');
    // Against a float64 reference: |error| <= K·u·sum|a·b| (u = 2^-24), the standard bound.
    for (let i = 0; i < 4; i++) {
      for (let j = 0; j < 40; j++) {
        let ref = 0;
        let mag = 0;
        for (let k = 0; k < 3000; k++) {
          ref += a[i * 3000 + k] * bm[k * 40 + j];
          mag += Math.abs(a[i * 3000 + k] * bm[k * 40 + j]);
        }
        assert.ok(Math.abs(r.gpu[i * 40 + j] - ref) <= 3000 * 2 ** -24 * mag, `(${i},${j}): ${r.gpu[i * 40 + j]} vs ${ref}`);
      }
    }
  });

  it("the tracer refuses tfjs' own atomic UnsortedSegmentSum, and records it when asked", async () => {
    await tf.setBackend('webgpu');
    const run = () => tf.tidy(() => tf.unsortedSegmentSum(tf.ones([6, 2]), tf.tensor1d([0, 1, 0, 1, 2, 2], 'int32'), 3).dataSync());
    assert.throws(() => withOriginalKernel('UnsortedSegmentSum', run), /float atomics/);
    const tr = startProgramTrace({ allowAtomics: true });
    try {
      withOriginalKernel('UnsortedSegmentSum', run);
    } finally {
      tr.stop();
    }
    assert.ok([...tr.trace.atomic].some((k) => /UnsortedSegmentSum/i.test(k)), `atomic: ${[...tr.trace.atomic]}`);
  });

  it('synchronous reads return the written values for float32, int32 and bool', async () => {
    await tf.setBackend('webgpu');
    const f = tf.tidy(() => tf.add(tf.tensor1d([1.5, -2, 3]), 1).dataSync());
    const i = tf.tidy(() => tf.add(tf.tensor1d([1, 2, 3], 'int32'), tf.scalar(4, 'int32')).dataSync());
    const b = tf.tidy(() => tf.greater(tf.tensor1d([1, 5, 3]), 2).dataSync());
    assert.deepEqual(Array.from(f), [2.5, -1, 4]);
    assert.deepEqual(Array.from(i), [5, 6, 7]);
    assert.deepEqual(Array.from(b), [0, 1, 1]);
  });
});

/**
 * Native cpu kernels in training (issue 14): determinism with the addon, independence of the
 * thread count, agreement with the JS kernels, and a clean fallback when the addon file
 * is absent. Tests that need the addon skip, with the reason, only when it has not been built.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import * as os from 'os';
import { nativeOptionsFromEnv, selectBackend } from '../../core/backend';
import { loadNativeKernels, nativeKernelNames, unloadNativeKernels } from '../../core/native';
import { loadTrainConfig, TrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer } from '../../trainer/trainer';
import { useTestBackend } from '../helpers/backend';

const probe = loadNativeKernels({ register: false });
const skipReason = probe.reason ?? '';

function tinyConfig(): TrainConfig {
  return loadTrainConfig('configs/tiny.yaml', [
    'data.synthetic={}',
    'data.seqLen=32',
    'data.microBatchSize=2',
    'data.microBatches=2',
    'train.steps=10',
    'optim.schedule={type: wsd, warmupSteps: 2, decaySteps: 2}',
  ]).config;
}

async function train(steps: number): Promise<{ hash: string; fingerprints: string[]; losses: number[] }> {
  const cfg = tinyConfig();
  const t = new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen));
  const fingerprints: string[] = [];
  const losses: number[] = [];
  for (let i = 0; i < steps; i++) {
    const r = await t.step();
    if (r.kind !== 'step') throw new Error(`unexpected spike: ${r.event.reason}`);
    fingerprints.push(r.metrics.fingerprint);
    losses.push(r.metrics.loss);
  }
  const hash = t.paramHash();
  t.dispose();
  return { hash, fingerprints, losses };
}

function rand(shape: number[], seed: number): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    v[i] = s / 2 ** 32 - 0.5;
  }
  return tf.tensor(v, shape);
}

describe('native cpu kernels in training', function () {
  this.timeout(600000);
  let hadNative = false;

  before(async () => {
    hadNative = nativeKernelNames().length > 0;
    await selectBackend('cpu');
  });

  after(async () => {
    if (hadNative) loadNativeKernels();
    else unloadNativeKernels();
    await useTestBackend();
  });

  it('reports not-loaded, with the missing path as the reason, and registers nothing when the addon file is absent', () => {
    unloadNativeKernels();
    const r = loadNativeKernels({ addonPath: '/nonexistent/moecat_native.node' });
    assert.equal(r.loaded, false);
    assert.match(r.reason ?? '', /addon not built: .*\/nonexistent\/moecat_native\.node does not exist/);
    assert.deepEqual(r.kernels, []);
    assert.deepEqual(nativeKernelNames(), []);
  });

  it('training falls back cleanly to the JS kernels when the addon is absent', async () => {
    unloadNativeKernels();
    loadNativeKernels({ addonPath: '/nonexistent/moecat_native.node' });
    const { losses } = await train(1);
    assert.ok(Number.isFinite(losses[0]) && losses[0] > 0, `loss ${losses[0]}`);
  });

  it('MOECAT_NATIVE=0 disables the addon with a clear reason', () => {
    const r = loadNativeKernels(nativeOptionsFromEnv({ MOECAT_NATIVE: '0' }));
    assert.equal(r.loaded, false);
    assert.match(r.reason ?? '', /MOECAT_NATIVE=0/);
  });

  describe(probe.loaded ? 'with the addon' : `with the addon [skipped: ${skipReason}]`, () => {
    before(function () {
      if (!probe.loaded) this.skip();
    });

    it('two runs with the same seed give bitwise-identical weights and fingerprints', async () => {
      loadNativeKernels();
      const a = await train(3);
      const b = await train(3);
      assert.equal(a.hash, b.hash);
      assert.deepEqual(a.fingerprints, b.fingerprints);
    });

    it('matMul bits are the same for 1, 2 and 3 threads on model shapes', () => {
      const shapes: [number[], number[], boolean, boolean][] = [
        [[1024, 192], [192, 2048], false, false],
        [[1024, 192], [1024, 2048], true, false],
        [[1024, 2048], [192, 2048], false, true],
        [[48, 128, 48], [48, 128, 48], false, true],
        [[300, 192], [192, 128], false, false],
      ];
      const runOnce = () =>
        shapes.map(([sa, sb, ta, tb], i) => {
          const a = rand(sa, 1 + i);
          const b = rand(sb, 100 + i);
          const c = tf.matMul(a, b, ta, tb);
          const v = Buffer.from(Float32Array.from(c.dataSync()).buffer);
          tf.dispose([a, b, c]);
          return v;
        });
      loadNativeKernels({ threads: 1 });
      const one = runOnce();
      for (const threads of [2, 3]) {
        loadNativeKernels({ threads });
        runOnce().forEach((v, i) => assert.ok(v.equals(one[i]), `shape ${i}: ${threads} threads differ from 1`));
      }
      loadNativeKernels(); // default policy again
    });

    it('the default policy uses every core (the thread count never changes a bit)', () => {
      const r = loadNativeKernels();
      assert.equal(r.gemm?.threads, os.cpus().length);
    });

    it('training with 1 and 2 threads gives the same weights and fingerprints', async () => {
      loadNativeKernels({ threads: 1 });
      const a = await train(2);
      loadNativeKernels({ threads: 2 });
      const b = await train(2);
      loadNativeKernels();
      assert.equal(a.hash, b.hash);
      assert.deepEqual(a.fingerprints, b.fingerprints);
    });

    it('training with native kernels follows the JS kernels to float32 rounding (loss within 1e-4 after 2 steps)', async () => {
      unloadNativeKernels();
      const js = await train(2);
      loadNativeKernels();
      const nat = await train(2);
      js.losses.forEach((l, i) => assert.ok(Math.abs(l - nat.losses[i]) < 1e-4, `step ${i + 1}: js ${l} native ${nat.losses[i]}`));
    });

    it('leaks no tensors across native training steps', async () => {
      loadNativeKernels();
      const cfg = tinyConfig();
      const t = new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen));
      await t.step();
      const m1 = tf.memory();
      await t.step();
      await t.step();
      const m2 = tf.memory();
      t.dispose();
      assert.equal(m2.numTensors, m1.numTensors);
      assert.equal(m2.numBytes, m1.numBytes);
    });
  });
});

/**
 * `parallel.shard: full` in process (LocalGroup): each rank holds only its shard of the weights
 * and gathers one unit at a time, and the weights, metrics and Adam moments are the bits of
 * `shard: none`. Also the units, the sharded initialisation and the start-up state budget.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../core/backend';
import { ConfigError } from '../../core/errors';
import { sha256Hex } from '../../core/hash';
import { flatLayout, flatten } from '../../model/flatParams';
import { initParams, paramSpecs } from '../../model/params';
import { loadTrainConfig, TrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { initParamShard, paramUnits } from '../../trainer/fullShard';
import { StepMetrics } from '../../trainer/metrics';
import { shardOf } from '../../trainer/shardedOptimizer';
import { checkStateBudget, estimateStateBytes, treeBuffers } from '../../trainer/stateBudget';
import { Trainer } from '../../trainer/trainer';
import { LocalGroup } from '../helpers/localGroup';

function tinyConfig(sets: string[] = []): TrainConfig {
  return loadTrainConfig('configs/tiny.yaml', [
    'data.synthetic={}',
    'data.seqLen=16',
    'data.microBatchSize=2',
    'data.microBatches=4',
    'train.steps=10',
    'optim.clipNorm=0.05',
    'optim.schedule={type: wsd, warmupSteps: 1, decaySteps: 2}',
    ...sets,
  ]).config;
}

interface Run {
  hash: string;
  metrics: StepMetrics[];
  moments: string;
  trainers: Trainer[];
  /** Live tfjs tensors after each step. */
  tensors: number[];
}

async function train(cfg: TrainConfig, steps: number, W: number): Promise<Run> {
  const group = new LocalGroup(W);
  const trainers = Array.from({ length: W }, (_, r) => new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen), { dp: group.member(r) }));
  const metrics: StepMetrics[] = [];
  const tensors: number[] = [];
  for (let s = 0; s < steps; s++) {
    const ms = await Promise.all(trainers.map(async (t) => {
      const r = await t.step();
      // A rollback is recorded in place of the step's metrics (both runs must agree on it too).
      return r.kind === 'step' ? r.metrics : ({ spike: r.event } as unknown as StepMetrics);
    }));
    for (const m of ms) assert.deepEqual({ ...m, step_ms: 0, tokens_per_s: 0 }, { ...ms[0], step_ms: 0, tokens_per_s: 0 }, 'ranks disagree within a step');
    metrics.push({ ...ms[0], step_ms: 0, tokens_per_s: 0 });
    tensors.push(tf.memory().numTensors);
  }
  const hashes = await Promise.all(trainers.map((t) => t.paramHashGathered()));
  assert.ok(hashes.every((h) => h === hashes[0]), 'ranks disagree on the weights');
  const full = await Promise.all(trainers.map((t) => t.checkpointStateGathered()));
  const moments = sha256Hex(Buffer.concat([Buffer.from(full[0].opt.m.buffer), Buffer.from(full[0].opt.v.buffer)]));
  return { hash: hashes[0], metrics, moments, trainers, tensors };
}

describe('sharded weights (parallel.shard: full)', function () {
  this.timeout(300000);
  before(async () => {
    await selectBackend((process.env.MOECAT_TEST_BACKEND as 'wasm') ?? 'wasm');
  });

  it('the units tile the layout in order: embedding, each layer, head', () => {
    const layout = flatLayout(paramSpecs(tinyConfig().model));
    const units = paramUnits(layout);
    assert.deepEqual(units.map((u) => u.name), ['embed', 'layer.0', 'layer.1', 'head']);
    let at = 0;
    for (const u of units) {
      assert.equal(u.lo, at);
      at = u.hi;
    }
    assert.equal(at, layout.total);
    assert.deepEqual(units[3].specs.map((s) => s.name), ['model.norm.weight', 'lm_head.weight']);
  });

  it('each rank initialises only its shard, and the shards are the full initialisation', () => {
    const cfg = tinyConfig();
    const layout = flatLayout(paramSpecs(cfg.model));
    const whole = flatten(layout, initParams(cfg.model, cfg.seed, cfg.optim.initScale));
    const W = 3;
    const parts = Array.from({ length: W }, (_, r) => initParamShard(cfg.model, layout, shardOf(layout.total, { rank: r, worldSize: W }), cfg.seed, cfg.optim.initScale));
    assert.deepEqual(parts.map((p) => p.length), Array.from({ length: W }, (_, r) => shardOf(layout.total, { rank: r, worldSize: W })).map((s) => s.hi - s.lo));
    assert.equal(sha256Hex(Buffer.concat(parts.map((p) => Buffer.from(p.buffer)))), sha256Hex(Buffer.from(whole.buffer)));
  });

  it('world sizes 1, 2 and 4 give the weights, metrics and Adam moments of shard: none, bit for bit (z-loss on, 1 to 8 microbatches per rank)', async () => {
    const steps = 2;
    const sets = ['train.zLossCoef=0.001', 'data.microBatches=8'];
    const ref = await train(tinyConfig(sets), steps, 1);
    ref.trainers.forEach((t) => t.dispose());
    for (const W of [1, 2, 4]) {
      const run = await train(tinyConfig([...sets, 'parallel.shard=full']), steps, W);
      assert.deepEqual(run.metrics, ref.metrics, `metrics, world size ${W}`);
      assert.equal(run.hash, ref.hash, `param_hash, world size ${W}`);
      assert.equal(run.moments, ref.moments, `Adam moments, world size ${W}`);
      assert.equal(run.tensors[1], run.tensors[0], `tfjs tensors leak from step to step (world size ${W})`);
      const n = run.trainers[0].layout.total;
      const unit = Math.max(...paramUnits(run.trainers[0].layout).map((u) => u.hi - u.lo));
      for (const t of run.trainers) {
        const b = t.stateBytes();
        // Weights, reduced gradient and moments are the rank's shard; gradient buffers unit-sized.
        assert.equal(b.params, 4 * (t.shard!.hi - t.shard!.lo));
        assert.ok(Math.abs(b.params - (4 * n) / W) <= 4, `params ${b.params} at W ${W}`);
        assert.equal(b.reducedGrad, b.params);
        assert.equal(b.optimizer, 2 * b.params);
        assert.equal(b.gradBuffers, treeBuffers(8 / W) * 4 * unit);
        assert.equal(b.gathered, 2 * 4 * unit);
        assert.equal(t.store.vars.size, 0, 'no rank holds the whole model as tfjs variables');
      }
      run.trainers.forEach((t) => t.dispose());
    }
  });

  it('a spike rollback restores the sharded weights (same events and weights as shard: none)', async () => {
    const sets = ['train.injectGradScale=[{dataStep: 3, scale: 1000}]', 'stability.spike={minSteps: 2, snapshotEvery: 2}'];
    const ref = await train(tinyConfig(sets), 5, 1);
    const run = await train(tinyConfig([...sets, 'parallel.shard=full']), 5, 2);
    assert.deepEqual(run.metrics, ref.metrics);
    assert.equal(run.hash, ref.hash);
    assert.equal(ref.trainers[0].state.spikes.length, 1, 'the injected spike was not detected');
    assert.deepEqual(run.trainers[0].state.spikes, ref.trainers[0].state.spikes);
    [...ref.trainers, ...run.trainers].forEach((t) => t.dispose());
  });

  it('the state budget counts the tree buffers the trainer allocates and refuses a mode over the limit', async () => {
    assert.deepEqual([1, 2, 3, 4, 5, 8].map(treeBuffers), [1, 2, 2, 3, 3, 4]);
    const ref = await train(tinyConfig(), 1, 1);
    const layout = ref.trainers[0].layout;
    assert.equal(ref.trainers[0].stateBytes().gradBuffers, (estimateStateBytes(layout, 'none', 1, 4).grads - 4 * layout.total), 'none: buffers of the local tree');
    ref.trainers.forEach((t) => t.dispose());
    const none = estimateStateBytes(layout, 'none', 4, 4).total;
    const full = estimateStateBytes(layout, 'full', 4, 4).total;
    assert.ok(full < none / 2, `full ${full} vs none ${none} on 4 ranks`);
    const limit = Math.floor((none + full) / 2);
    const cfg = (mode: string) => tinyConfig([`parallel.shard=${mode}`, `parallel.maxStateBytes=${limit}`]);
    assert.throws(() => checkStateBudget(cfg('none'), layout, 4), (e: unknown) => e instanceof ConfigError && /parallel\.maxStateBytes/.test(e.message) && /under parallel\.shard: none on 4 ranks/.test(e.message));
    assert.doesNotThrow(() => checkStateBudget(cfg('full'), layout, 4));
    assert.doesNotThrow(() => checkStateBudget(tinyConfig(['parallel.shard=none']), layout, 1), 'no limit by default');
  });

  it('refuses settings that need the whole model on one rank', () => {
    assert.throws(() => tinyConfig(['parallel.shard=full', 'stability.routerRatioEvery=5']), /routerRatioEvery/);
  });
});

/**
 * `parallel.shard: optimizer` in process (LocalGroup): each rank keeps only its slice of the
 * Adam moments, and the weights, metrics and gathered moments are the bits of `shard: none`.
 */
import { strict as assert } from 'assert';
import { selectBackend } from '../../core/backend';
import { loadTrainConfig, TrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer } from '../../trainer/trainer';
import { StepMetrics } from '../../trainer/metrics';
import { slicesInShard, shardOf } from '../../trainer/shardedOptimizer';
import { LocalGroup } from '../helpers/localGroup';
import { sha256Hex } from '../../core/hash';

function tinyConfig(sets: string[] = []): TrainConfig {
  return loadTrainConfig('configs/tiny.yaml', [
    'data.synthetic={}',
    'data.seqLen=16',
    'data.microBatchSize=2',
    'data.microBatches=4',
    'train.steps=10',
    // A low clip threshold: the clip factor (from the chained global norm) shapes every update.
    'optim.clipNorm=0.05',
    'optim.schedule={type: wsd, warmupSteps: 1, decaySteps: 2}',
    ...sets,
  ]).config;
}

interface Run {
  hash: string;
  metrics: StepMetrics[];
  moments: string;
  shardLengths: number[];
}

async function train(cfg: TrainConfig, steps: number, W: number): Promise<Run> {
  const group = new LocalGroup(W);
  const trainers = Array.from({ length: W }, (_, r) => new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen), { dp: group.member(r) }));
  const metrics: StepMetrics[] = [];
  for (let s = 0; s < steps; s++) {
    const ms = await Promise.all(trainers.map(async (t) => {
      const r = await t.step();
      if (r.kind !== 'step') throw new Error(`unexpected spike: ${r.event.reason}`);
      return r.metrics;
    }));
    for (const m of ms) assert.deepEqual({ ...m, step_ms: 0, tokens_per_s: 0 }, { ...ms[0], step_ms: 0, tokens_per_s: 0 }, 'ranks disagree within a step');
    metrics.push({ ...ms[0], step_ms: 0, tokens_per_s: 0 });
  }
  const hashes = trainers.map((t) => t.paramHash());
  assert.ok(hashes.every((h) => h === hashes[0]), 'ranks hold different weights');
  const shardLengths = trainers.map((t) => t.state.opt.m.length);
  const full = await Promise.all(trainers.map((t) => t.checkpointStateGathered()));
  const moments = sha256Hex(Buffer.concat([Buffer.from(full[0].opt.m.buffer), Buffer.from(full[0].opt.v.buffer)]));
  trainers.forEach((t) => t.dispose());
  return { hash: hashes[0], metrics, moments, shardLengths };
}

describe('sharded optimizer state (parallel.shard: optimizer)', function () {
  this.timeout(300000);
  before(async () => {
    await selectBackend((process.env.MOECAT_TEST_BACKEND as 'wasm') ?? 'wasm');
  });

  it('slicesInShard cuts the parameter slices at the shard edges and rebases them', () => {
    const slices = [
      { offset: 0, size: 5, group: 'embedding' as const },
      { offset: 5, size: 3, group: 'norm' as const },
      { offset: 8, size: 4, group: 'hidden' as const },
    ];
    assert.deepEqual(slicesInShard(slices, { lo: 4, hi: 9 }), [
      { offset: 0, size: 1, group: 'embedding' },
      { offset: 1, size: 3, group: 'norm' },
      { offset: 4, size: 1, group: 'hidden' },
    ]);
    assert.deepEqual(shardOf(10, { rank: 1, worldSize: 4 }), { lo: 3, hi: 6 });
  });

  it('world sizes 1, 2 and 4 give the weights, metrics and Adam moments of shard: none, bit for bit', async () => {
    const steps = 3;
    const ref = await train(tinyConfig(), steps, 1);
    assert.ok(ref.metrics.some((m) => m.grad_norm > 0.05), 'the clip threshold should bind on some step');
    for (const W of [1, 2, 4]) {
      const r = await train(tinyConfig(['parallel.shard=optimizer']), steps, W);
      assert.equal(r.hash, ref.hash, `param_hash at W=${W}`);
      assert.deepEqual(r.metrics, ref.metrics, `metrics at W=${W}`);
      assert.equal(r.moments, ref.moments, `gathered Adam moments at W=${W}`);
      const total = ref.shardLengths[0];
      assert.deepEqual(r.shardLengths, Array.from({ length: W }, (_, k) => shardOf(total, { rank: k, worldSize: W }).hi - shardOf(total, { rank: k, worldSize: W }).lo), 'each rank holds only its slice of the moments');
      assert.ok(Math.max(...r.shardLengths) <= Math.ceil(total / W));
    }
  });

  it('a spike rollback restores the sharded moments: W=2 sharded equals one unsharded process', async () => {
    const sets = [
      'data.microBatches=2',
      'optim.schedule={type: constant, warmupSteps: 0}',
      'stability.spike={window: 10, k: 6, minSteps: 5, snapshotEvery: 4, maxRollbacks: 2, minRelative: 0.1, gradFactor: 10}',
      'train.injectGradScale=[{dataStep: 12, scale: 10000}]',
    ];
    const runTo = async (cfg: TrainConfig, W: number) => {
      const group = new LocalGroup(W);
      const ts = Array.from({ length: W }, (_, r) => new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen), { dp: group.member(r) }));
      const events: string[] = [];
      while (ts[0].state.step < 16) {
        const rs = await Promise.all(ts.map((t) => t.step()));
        if (rs[0].kind === 'spike') events.push(JSON.stringify(rs[0].event));
      }
      const hashes = ts.map((t) => t.paramHash());
      ts.forEach((t) => t.dispose());
      assert.ok(hashes.every((h) => h === hashes[0]));
      return { hash: hashes[0], events };
    };
    const ref = await runTo(tinyConfig(sets), 1);
    assert.equal(ref.events.length, 1, 'the injected spike should be rolled back once');
    const sharded = await runTo(tinyConfig([...sets, 'parallel.shard=optimizer']), 2);
    assert.deepEqual(sharded.events, ref.events);
    assert.equal(sharded.hash, ref.hash);
  });

  it('an unknown shard mode is refused naming the key', () => {
    assert.throws(() => tinyConfig(['parallel.shard=everything']), /parallel\.shard/);
  });
});

import { strict as assert } from 'assert';
import { selectBackend } from '../../core/backend';
import { loadTrainConfig, TrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer } from '../../trainer/trainer';
import { LocalGroup } from '../helpers/localGroup';
import { StepMetrics } from '../../trainer/metrics';

function tinyConfig(sets: string[] = []): TrainConfig {
  return loadTrainConfig('configs/tiny.yaml', [
    'data.synthetic={}',
    'data.seqLen=32',
    'data.microBatchSize=2',
    'data.microBatches=4',
    'train.steps=10',
    'optim.schedule={type: wsd, warmupSteps: 2, decaySteps: 2}',
    ...sets,
  ]).config;
}

async function train(cfg: TrainConfig, steps: number, worldSize = 1): Promise<{ hash: string; fingerprints: string[] }> {
  const group = new LocalGroup(worldSize);
  const trainers = Array.from({ length: worldSize }, (_, r) => new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen), { dp: group.member(r) }));
  const fingerprints: string[] = [];
  for (let s = 0; s < steps; s++) {
    const ms = await Promise.all(trainers.map((t) => stepOf(t)));
    for (const m of ms) assert.equal(m.fingerprint, ms[0].fingerprint, 'ranks disagree within a step');
    fingerprints.push(ms[0].fingerprint);
  }
  const hashes = trainers.map((t) => t.paramHash());
  trainers.forEach((t) => t.dispose());
  assert.ok(hashes.every((h) => h === hashes[0]), 'ranks hold different weights');
  return { hash: hashes[0], fingerprints };
}

async function stepOf(t: Trainer): Promise<StepMetrics> {
  const r = await t.step();
  if (r.kind !== 'step') throw new Error(`unexpected spike: ${r.event.reason}`);
  return r.metrics;
}

describe('trainer determinism', function () {
  this.timeout(300000);
  before(async () => {
    await selectBackend((process.env.MOECAT_TEST_BACKEND as 'wasm') ?? 'wasm');
  });

  it('two runs with the same config and seed give bitwise-identical weights and fingerprints', async () => {
    const a = await train(tinyConfig(), 3);
    const b = await train(tinyConfig(), 3);
    assert.equal(a.hash, b.hash);
    assert.deepEqual(a.fingerprints, b.fingerprints);
  });

  it('a different seed gives different weights', async () => {
    const a = await train(tinyConfig(), 1);
    const b = await train(tinyConfig(['seed=4321']), 1);
    assert.notEqual(a.hash, b.hash);
  });

  it('data-parallel world sizes 1, 2 and 4 with the same global batch give the same bits', async () => {
    const cfg = tinyConfig();
    const w1 = await train(cfg, 2, 1);
    const w2 = await train(cfg, 2, 2);
    const w4 = await train(cfg, 2, 4);
    assert.equal(w2.hash, w1.hash);
    assert.equal(w4.hash, w1.hash);
    assert.deepEqual(w4.fingerprints, w1.fingerprints);
  });

  it('the loss falls on learnable data', async () => {
    const cfg = tinyConfig(['optim.lr=0.01', 'train.steps=25', 'optim.schedule={type: constant, warmupSteps: 3}']);
    const t = new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen));
    const first = (await stepOf(t)).lm_loss;
    let last = first;
    for (let i = 0; i < 24; i++) last = (await stepOf(t)).lm_loss;
    t.dispose();
    assert.ok(last < first - 0.5, `loss ${first} -> ${last}`);
  });
});

import { strict as assert } from 'assert';
import { selectBackend } from '../../core/backend';
import { TrainingError } from '../../core/errors';
import { loadTrainConfig, TrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { SpikeEvent, Trainer } from '../../trainer/trainer';
import { SpikeDetector } from '../../trainer/stability';

function cfg(sets: string[]): TrainConfig {
  return loadTrainConfig('configs/tiny.yaml', [
    'data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=1', 'train.steps=30',
    'optim.schedule={type: constant, warmupSteps: 0}',
    'stability.spike={window: 10, k: 6, minSteps: 5, snapshotEvery: 4, maxRollbacks: 2, minRelative: 0.1, gradFactor: 10}',
    ...sets,
  ]).config;
}

async function runTo(t: Trainer, steps: number): Promise<SpikeEvent[]> {
  const events: SpikeEvent[] = [];
  while (t.state.step < steps) {
    const r = await t.step();
    if (r.kind === 'spike') events.push(r.event);
  }
  return events;
}

describe('loss-spike detection and rollback', function () {
  this.timeout(300000);
  before(async () => {
    await selectBackend((process.env.MOECAT_TEST_BACKEND as 'wasm') ?? 'wasm');
  });

  it('the detector flags a value far above the rolling window and not ordinary noise', () => {
    const d = new SpikeDetector({ window: 10, k: 6, minSteps: 5, minRelative: 0.1, gradFactor: 10 });
    for (let i = 0; i < 10; i++) assert.equal(d.check(5 - i * 0.01 + (i % 2) * 0.02, 1 + (i % 3) * 0.05), null);
    assert.equal(d.check(4.9, 1.02), null);
    assert.equal(d.check(5.3, 3), null, 'a 6% loss rise and a 3x gradient are noise, not spikes');
    assert.match(String(d.check(4.9, 50)), /grad norm/);
    assert.match(String(d.check(9, 1)), /loss/);
    assert.match(String(d.check(Number.NaN, 1)), /non-finite/);
  });

  it('an injected gradient spike is detected, rolled back and its batch skipped; the run finishes', async () => {
    const c = cfg(['train.injectGradScale=[{dataStep: 12, scale: 10000}]']);
    const t = new Trainer(c, new MarkovSource(c.seed, c.model.vocabSize, 2, 16));
    const events = await runTo(t, 20);
    assert.equal(events.length, 1);
    assert.equal(events[0].data_step, 12);
    assert.equal(events[0].step, 13);
    assert.ok(events[0].restored_to <= 12 && events[0].restored_to >= 8);
    assert.deepEqual(t.state.skipped, [12]);
    assert.equal(t.state.step, 20);
    assert.equal(t.state.dataStep, 21);
    // The result equals a clean run told to skip batch 12 from the start: rollback is exact.
    const clean = new Trainer(c, new MarkovSource(c.seed, c.model.vocabSize, 2, 16));
    clean.state.skipped = [12];
    const cleanEvents = await runTo(clean, 20);
    assert.equal(cleanEvents.length, 0);
    assert.equal(clean.paramHash(), t.paramHash());
    t.dispose();
    clean.dispose();
  });

  it('gives up with a clear error after maxRollbacks', async () => {
    const c = cfg(['train.injectGradScale=[{dataStep: 10, scale: 1e4}, {dataStep: 11, scale: 1e4}, {dataStep: 12, scale: 1e4}]']);
    const t = new Trainer(c, new MarkovSource(c.seed, c.model.vocabSize, 2, 16));
    await assert.rejects(runTo(t, 20), (e: unknown) => e instanceof TrainingError && /after 2 rollbacks/.test(e.message));
    t.dispose();
  });
});

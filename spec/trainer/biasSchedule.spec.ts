/** The expert-bias update rate can follow the LR schedule (model.moe.biasUpdateSchedule: lr). */
import { strict as assert } from 'assert';
import { selectBackend } from '../../core/backend';
import { loadTrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { biasUpdateRateAt, lrAt } from '../../trainer/schedule';
import { Trainer } from '../../trainer/trainer';

function trainer(schedule: 'constant' | 'lr'): Trainer {
  const { config: cfg } = loadTrainConfig('configs/tiny.yaml', [
    'data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=1', 'train.steps=8',
    'optim.schedule={type: wsd, warmupSteps: 4, decaySteps: 2}', `model.moe.biasUpdateSchedule=${schedule}`,
  ]);
  return new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen));
}

describe('expert-bias update-rate schedule', function () {
  this.timeout(120000);
  before(() => selectBackend((process.env.MOECAT_TEST_BACKEND as 'wasm') ?? 'wasm'));

  it('biasUpdateRateAt: constant ignores the LR, lr scales mu by lr/peak', () => {
    assert.equal(biasUpdateRateAt(0.05, 'constant', 1e-4, 1e-3), 0.05);
    assert.ok(Math.abs(biasUpdateRateAt(0.05, 'lr', 1e-4, 1e-3) - 0.005) < 1e-15);
    assert.equal(biasUpdateRateAt(0.05, 'lr', 1e-3, 1e-3), 0.05);
  });

  it('the first step (LR at 1/4 of peak in warmup) moves the biases by 1/4 of the constant-rate update', async () => {
    const a = trainer('constant');
    const b = trainer('lr');
    try {
      assert.equal(a.cfg.model.moe.biasUpdateSchedule, 'constant');
      await a.step();
      await b.step();
      const ratio = lrAt(0, b.cfg.optim.lr, { ...b.cfg.optim.schedule, totalSteps: b.cfg.train.steps }) / b.cfg.optim.lr;
      assert.equal(ratio, 0.25);
      let moved = 0;
      for (let l = 0; l < a.state.biases.length; l++) {
        for (let i = 0; i < a.state.biases[l].length; i++) {
          const da = a.state.biases[l][i];
          const db = b.state.biases[l][i];
          if (da !== 0) moved++;
          assert.ok(Math.abs(db - da * ratio) <= 1e-6 * Math.abs(da) + 1e-12, `layer ${l} expert ${i}: ${db} vs ${da} * ${ratio}`);
        }
      }
      assert.ok(moved > 0, 'the constant-rate controller moved some bias');
    } finally {
      a.dispose();
      b.dispose();
    }
  });
});

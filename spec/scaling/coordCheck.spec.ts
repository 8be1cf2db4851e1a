import { strict as assert } from 'assert';
import { useTestBackend } from '../helpers/backend';
import { loadTrainConfig } from '../../trainer/config';
import { coordinateCheck, widthSets } from '../../trainer/transfer';

// The width-32 proxy: the tiny model's shape at half width.
const PROXY = [
  'data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=4', 'data.microBatches=1', 'train.steps=10',
  'optim.lr=0.01', 'optim.schedule={type: constant}', 'stability.spike={enabled: false}',
  'model.dModel=32', 'model.attention.nHeads=2', 'model.attention.qLoraRank=16', 'model.attention.kvLoraRank=16', 'model.ffnHidden=64', 'model.moe.expertHidden=32',
];
const WIDTHS = [32, 64, 128];
const STEPS = 4;

/** Largest |log2| ratio of a layer's activation RMS between the widest and narrowest model. */
function drift(rms: number[][]): number {
  const first = rms[0];
  const last = rms[rms.length - 1];
  let worst = 0;
  for (let j = 1; j < first.length; j++) worst = Math.max(worst, Math.abs(Math.log2(last[j] / first[j])));
  return worst;
}

describe('coordinate check: per-layer activation RMS across widths 32, 64, 128', function () {
  this.timeout(600000);
  const rms: Record<'transfer' | 'sp', number[][]> = { transfer: [], sp: [] };
  before(async () => {
    await useTestBackend();
    const proxy = loadTrainConfig('configs/tiny.yaml', PROXY).config;
    for (const rule of ['transfer', 'sp'] as const) {
      for (const d of WIDTHS) {
        const { config } = loadTrainConfig('configs/tiny.yaml', [...PROXY, ...widthSets(proxy.model, d, rule)]);
        rms[rule].push(await coordinateCheck(config, STEPS));
      }
    }
  });

  it('stays flat under the transfer rule: every layer within a factor 1.5 from d=32 to d=128', () => {
    const d = drift(rms.transfer);
    assert.ok(d < Math.log2(1.5), `transfer drift 2^${d.toFixed(3)}; rms ${JSON.stringify(rms.transfer)}`);
  });

  it('drifts under plain SP: some layer grows by more than 2x from d=32 to d=128', () => {
    const d = drift(rms.sp);
    assert.ok(d > 1, `SP drift 2^${d.toFixed(3)}; rms ${JSON.stringify(rms.sp)}`);
  });

  it('SP drifts at least 4x more (in log2 ratio) than the transfer rule', () => {
    assert.ok(drift(rms.sp) > 4 * drift(rms.transfer), `sp ${drift(rms.sp).toFixed(3)} vs transfer ${drift(rms.transfer).toFixed(3)}`);
  });

  it('the embedding output is the same under both rules (embeddings keep their init)', () => {
    for (let i = 0; i < WIDTHS.length; i++) assert.ok(Math.abs(rms.transfer[i][0] - rms.sp[i][0]) / rms.sp[i][0] < 0.5);
  });
});

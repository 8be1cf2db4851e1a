import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { selectBackend } from '../../core/backend';
import { loadTrainConfig } from '../../trainer/config';
import { runTraining } from '../../trainer/run';
import { readMetrics } from '../../trainer/metrics';
import { loadTrainerCheckpoint } from '../../trainer/checkpointing';

const SETS = [
  'data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=2', 'train.steps=8',
  'train.checkpointEvery=0', 'train.paramHashEvery=1', 'optim.schedule={type: wsd, warmupSteps: 2, decaySteps: 3}',
];

async function run(outDir: string, maxSteps?: number, resume = false) {
  const { config, raw } = loadTrainConfig('configs/tiny.yaml', SETS);
  const r = await runTraining({ outDir, config: resume ? undefined : config, rawConfig: resume ? undefined : raw, resume, maxSteps, backend: 'test' });
  const hash = r.trainer.paramHash();
  r.trainer.dispose();
  return hash;
}

function stepLines(dir: string) {
  return readMetrics(path.join(dir, 'metrics.jsonl')).filter((m) => m.fingerprint).map((m) => `${m.step}:${m.fingerprint}:${m.param_hash}`);
}

describe('train, stop, resume', function () {
  this.timeout(300000);
  let tmp: string;
  before(async () => {
    await selectBackend((process.env.MOECAT_TEST_BACKEND as 'wasm') ?? 'wasm');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-resume-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('N steps straight equal k steps + resume to N, for k = 1, 3, 5 (param_hash and every fingerprint)', async () => {
    const straight = path.join(tmp, 'straight');
    const hash = await run(straight);
    const lines = stepLines(straight);
    assert.equal(lines.length, 8);
    for (const k of [1, 3, 5]) {
      const dir = path.join(tmp, `k${k}`);
      await run(dir, k);
      assert.equal(stepLines(dir).length, k);
      const resumed = await run(dir, undefined, true);
      assert.equal(resumed, hash, `k=${k}`);
      assert.deepEqual(stepLines(dir), lines, `k=${k}`);
    }
  });

  it('a checkpoint restores weights, optimizer moments, biases and counters exactly', async () => {
    const dir = path.join(tmp, 'ck');
    const hash = await run(dir, 4);
    const ck = loadTrainerCheckpoint(dir);
    assert.equal(ck.state.step, 4);
    assert.equal(ck.state.opt.t, 4);
    assert.equal(ck.saved.param_hash, hash);
    assert.equal(ck.state.biases.length, ck.config.model.nLayers);
    assert.ok(ck.state.biases[0].some((b) => b !== 0), 'the bias controller moved the biases');
    assert.ok(ck.state.opt.v.some((x) => x > 0));
  });

  it('resuming a directory without checkpoints is a clear error', async () => {
    const dir = path.join(tmp, 'empty');
    fs.mkdirSync(dir);
    await assert.rejects(run(dir, undefined, true), /no checkpoint to resume from/);
  });
});

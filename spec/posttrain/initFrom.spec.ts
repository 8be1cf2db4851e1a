/**
 * `--init-from` (trainer/initFrom.ts): a new run at step 0 from the parent's exact weights
 * and expert biases, optimizer reset or kept, lineage in every state.json, resume keeps the
 * lineage, and a model config that differs from the parent's is refused naming the key
 * (maxSeqLen and ropeBase may only grow).
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { selectBackend } from '../../core/backend';
import { ConfigError } from '../../core/errors';
import { loadCheckpoint } from '../../core/checkpoint';
import { loadTrainConfig } from '../../trainer/config';
import { runTraining } from '../../trainer/run';
import { loadTrainerCheckpoint } from '../../trainer/checkpointing';
import { Trainer } from '../../trainer/trainer';

const SETS = [
  'data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=1', 'train.steps=3',
  'train.checkpointEvery=0', 'train.paramHashEvery=1', 'optim.schedule={type: constant}',
];

function cfg(extra: string[] = []) {
  return loadTrainConfig('configs/tiny.yaml', [...SETS, ...extra]);
}

describe('--init-from', function () {
  this.timeout(300000);
  let tmp: string;
  let parentDir: string;
  let parentHash: string;
  before(async () => {
    await selectBackend((process.env.MOECAT_TEST_BACKEND as 'wasm') ?? 'wasm');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-initfrom-'));
    parentDir = path.join(tmp, 'parent');
    const { config, raw } = cfg();
    const r = await runTraining({ outDir: parentDir, config, rawConfig: raw, backend: 'test' });
    parentHash = r.trainer.paramHash();
    r.trainer.dispose();
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  async function child(name: string, extra: string[], maxSteps?: number, onStart?: (t: Trainer) => void) {
    const { config, raw } = cfg([`initFrom.checkpoint=${JSON.stringify(parentDir)}`, 'seed=99', ...extra]);
    const r = await runTraining({ outDir: path.join(tmp, name), config, rawConfig: raw, backend: 'test', maxSteps, onStart: (t) => onStart?.(t) });
    r.trainer.dispose();
    return r;
  }

  it('starts at step 0 from the parent\'s exact weights and biases, with Adam moments reset', async () => {
    const parent = loadTrainerCheckpoint(parentDir);
    assert.equal(parent.saved.param_hash, parentHash);
    let seen: { step: number; hash: string; t: number; m0: number; biases: number[][]; tokens: number } | null = null;
    await child('reset', [], 1, (t) => {
      seen = { step: t.state.step, hash: t.paramHash(), t: t.state.opt.t, m0: t.state.opt.m.reduce((a, x) => a + Math.abs(x), 0), biases: t.state.biases.map((b) => Array.from(b)), tokens: t.state.tokens };
    });
    assert.ok(seen);
    const s = seen as unknown as { step: number; hash: string; t: number; m0: number; biases: number[][]; tokens: number };
    assert.equal(s.step, 0);
    assert.equal(s.tokens, 0);
    assert.equal(s.hash, parentHash, 'param hash at step 0 equals the parent\'s');
    assert.deepEqual(s.biases, parent.state.biases.map((b) => Array.from(b)));
    assert.ok(parent.state.biases[0].some((b) => b !== 0), 'the parent\'s biases are not the initial zeros');
    assert.equal(s.t, 0);
    assert.equal(s.m0, 0);
  });

  it('records the lineage (parent dir, step, param_hash) in state.json, and keeps it across resume', async () => {
    await child('lineage', [], 1);
    const dir = path.join(tmp, 'lineage');
    const ck = loadCheckpoint(dir);
    assert.equal(path.basename(ck.dir), 'step-00000001');
    const st = ck.state as { step: number; lineage: { parent: string; parent_step: number; parent_param_hash: string; optimizer: string } };
    assert.equal(st.step, 1);
    assert.equal(st.lineage.parent, loadCheckpoint(parentDir).dir);
    assert.equal(st.lineage.parent_step, 3);
    assert.equal(st.lineage.parent_param_hash, parentHash);
    assert.equal(st.lineage.optimizer, 'reset');
    const r = await runTraining({ outDir: dir, resume: true, backend: 'test' });
    r.trainer.dispose();
    const after = loadCheckpoint(dir).state as typeof st;
    assert.equal(after.step, 3);
    assert.deepEqual(after.lineage, st.lineage);
  });

  it('keeps the parent\'s Adam moments with optimizer: keep', async () => {
    const parent = loadTrainerCheckpoint(parentDir);
    let t = -1;
    let same = false;
    await child('keep', ['initFrom.optimizer=keep'], 1, (tr) => {
      t = tr.state.opt.t;
      same = Buffer.compare(Buffer.from(tr.state.opt.v.buffer), Buffer.from(parent.state.opt.v.buffer)) === 0;
    });
    assert.equal(t, 3);
    assert.ok(same);
  });

  it('refuses a model config that differs from the parent\'s, naming the key', async () => {
    await assert.rejects(child('bad-width', ['model.moe.nExperts=4'], 1), (e: Error) => e instanceof ConfigError && e.message.startsWith('model.moe.nExperts:') && /is 4 here but 8/.test(e.message));
    await assert.rejects(child('bad-layers', ['model.nLayers=1'], 1), (e: Error) => e instanceof ConfigError && /model\.nLayers/.test(e.message));
    await assert.rejects(child('shrink', ['model.maxSeqLen=64'], 1), (e: Error) => e instanceof ConfigError && /model\.maxSeqLen is 64, below the parent's 128/.test(e.message));
  });

  it('lets maxSeqLen and ropeBase grow (long-context extension) with the weights unchanged', async () => {
    let hash = '';
    const r = await child('grow', ['model.maxSeqLen=256', 'model.ropeBase=100000', 'data.seqLen=64'], 1, (t) => {
      hash = t.paramHash();
    });
    assert.equal(hash, parentHash);
    assert.equal(r.trainer.state.step, 1);
    assert.ok(Number.isFinite(r.last!.loss));
  });
});

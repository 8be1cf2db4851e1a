/** The programmatic entry (package.json `main`): train, load a checkpoint, generate. */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as api from '../../index';
import { parseModelConfig } from '../../model/config';
import { readMetrics } from '../../trainer/metrics';
import { testTokenizer, tinyModelConfig, tmpDir, writeModelCheckpoint } from '../inference/fixtures';

describe('programmatic entry (index.ts)', function () {
  this.timeout(300000);
  const dirs: string[] = [];
  after(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
  before(() => api.selectBackend((process.env.MOECAT_TEST_BACKEND as 'wasm') ?? 'wasm'));

  it('package.json main points at the compiled entry and its types at index.ts', () => {
    const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8')) as { main: string; types: string };
    assert.equal(pkg.main, 'dist/index.js');
    assert.ok(fs.existsSync(pkg.main), 'dist/index.js exists after the build');
    assert.equal(pkg.types, 'index.ts');
    assert.ok(fs.existsSync(pkg.types));
    for (const f of ['train', 'loadModel', 'generate', 'selectBackend', 'auditRun', 'verifyRun', 'loadTrainConfig']) assert.equal(typeof (api as Record<string, unknown>)[f], 'function', f);
  });

  it('train() runs a config with overrides and returns the final param_hash recorded in metrics.jsonl', async () => {
    const root = tmpDir('moecat-api-');
    dirs.push(root);
    const out = path.join(root, 'run');
    const steps: number[] = [];
    const r = await api.train({
      config: 'configs/tiny.yaml', out, maxSteps: 3, onStep: (m) => steps.push(m.step),
      set: ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=1', 'train.steps=6', 'optim.schedule={type: wsd, warmupSteps: 1, decaySteps: 1}'],
    });
    assert.deepEqual(steps, [1, 2, 3]);
    assert.equal(r.step, 3);
    assert.equal(readMetrics(path.join(out, 'metrics.jsonl')).pop()!.param_hash, r.paramHash);
    assert.equal(r.checkpoints.length, 1);
    await assert.rejects(api.train({ config: 'configs/tiny.yaml', out, set: ['model.dmodel=3'] }), (e: unknown) => e instanceof api.ConfigError && /did you mean dModel/.test(e.message));
  });

  it('loadModel() + generate() give the same greedy text twice; a missing checkpoint is refused', async () => {
    const root = tmpDir('moecat-api-');
    dirs.push(root);
    const run = writeModelCheckpoint(path.join(root, 'run'), parseModelConfig(tinyModelConfig), 3, testTokenizer().toJSON());
    const m = api.loadModel(run);
    try {
      assert.equal(m.step, 10);
      const a = await api.generate(m, 'the quick', { maxTokens: 6 });
      const b = await api.generate(m, 'the quick', { maxTokens: 6 });
      assert.equal(a.text, b.text);
      assert.equal(a.completionTokens, 6);
      assert.equal(a.finishReason, 'length');
      await assert.rejects(api.generate(m, ''), (e: unknown) => e instanceof api.ConfigError && /the prompt is empty/.test(e.message));
    } finally {
      m.dispose();
    }
    assert.throws(() => api.loadModel(path.join(root, 'nope')), (e: unknown) => e instanceof api.CheckpointError);
  });
});

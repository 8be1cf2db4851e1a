/**
 * webgpu against the CPU (issue 21 item 7): bits differ across backends, values must not.
 * Losses of tiny training within 1e-4 relative, logits of one checkpoint within 1e-5, and the
 * serving paths (`moecat generate`, the OpenAI server) answer on webgpu as on the CPU.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import OpenAI from 'openai';
import { selectBackend, BackendName } from '../../core/backend';
import { loadTrainConfig, TrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer } from '../../trainer/trainer';
import { loadServingModel, ServingModel } from '../../inference/loadModel';
import { generate } from '../../inference/generate';
import { startServer } from '../../inference/server';
import { forward } from '../../model/transformer';
import { useTestBackend } from '../helpers/backend';
import { testTokenizer, tmpDir, writeModelCheckpoint } from '../inference/fixtures';
import { webgpuEnv, webgpuOrSkip } from './helpers';

const STEPS = Number(process.env.MOECAT_WEBGPU_AGREEMENT_STEPS ?? 8);

/** cpu-native where the addon is built, else the JS cpu backend. */
async function cpuReference(): Promise<BackendName> {
  try {
    await selectBackend('cpu-native');
    return 'cpu-native';
  } catch {
    await selectBackend('cpu');
    return 'cpu';
  }
}

async function losses(backend: BackendName, cfg: TrainConfig, steps: number): Promise<number[]> {
  await selectBackend(backend);
  const t = new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen));
  const out: number[] = [];
  try {
    for (let s = 0; s < steps; s++) {
      const r = await t.step();
      if (r.kind !== 'step') throw new Error('unexpected spike');
      out.push(r.metrics.lm_loss);
    }
  } finally {
    t.dispose();
  }
  return out;
}

function logitsOf(m: ServingModel, tokens: Int32Array): Float32Array {
  return tf.tidy(() => {
    const r = forward(m.config, m.store.getter, tokens, 1, tokens.length, { biases: m.biases });
    return r.logits!.dataSync() as Float32Array;
  });
}

describe('webgpu: agreement with the CPU and serving', function () {
  this.timeout(300000);
  let ref: BackendName;
  let runDir: string;
  const tok = testTokenizer();
  before(async function () {
    await webgpuOrSkip(this);
    ref = await cpuReference();
    const { config } = loadTrainConfig('configs/tiny.yaml', ['data.synthetic={}', 'model.vocabSize=272']);
    runDir = tmpDir('moecat-webgpu-serve-');
    writeModelCheckpoint(runDir, config.model, 5, tok.toJSON());
  });
  after(async () => {
    if (runDir) fs.rmSync(runDir, { recursive: true, force: true });
    await useTestBackend();
  });

  it(`tiny's lm_loss over ${STEPS} steps is within 1e-4 relative of the CPU reference`, async () => {
    const cfg = loadTrainConfig('configs/tiny.yaml', ['data.synthetic={}', 'data.seqLen=32', 'data.microBatchSize=2', 'data.microBatches=2', `train.steps=${STEPS}`, 'optim.schedule={type: wsd, warmupSteps: 2, decaySteps: 2}']).config;
    const cpu = await losses(ref, cfg, STEPS);
    const gpu = await losses('webgpu', cfg, STEPS);
    const rel = Math.max(...gpu.map((g, i) => Math.abs(g - cpu[i]) / Math.abs(cpu[i])));
    console.log(`      measured: max relative lm_loss difference ${rel.toExponential(2)} over ${STEPS} steps vs ${ref} (loss ${cpu[0].toFixed(4)} -> ${cpu[STEPS - 1].toFixed(4)})`);
    for (let i = 0; i < STEPS; i++) {
      assert.ok(Math.abs(gpu[i] - cpu[i]) <= 1e-4 * Math.abs(cpu[i]), `step ${i + 1}: webgpu ${gpu[i]} vs ${ref} ${cpu[i]}`);
    }
    assert.ok(cpu[STEPS - 1] !== cpu[0], 'the loss did not move, so agreement proves little');
  });

  it('the logits of one checkpoint agree within 1e-5', async () => {
    const tokens = Int32Array.from(tok.encode('the quick brown fox jumps over the lazy dog; the model says hello'));
    await selectBackend(ref);
    const mc = loadServingModel(runDir);
    const a = logitsOf(mc, tokens);
    mc.store.dispose();
    await selectBackend('webgpu');
    const mg = loadServingModel(runDir);
    const b = logitsOf(mg, tokens);
    mg.store.dispose();
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    console.log(`      measured: max |Δlogit| ${worst.toExponential(2)} vs ${ref} over ${a.length} logits`);
    assert.ok(worst <= 1e-5, `max |Δlogit| ${worst}`);
  });

  it('moecat generate runs on webgpu and greedy text equals the CPU reference', () => {
    const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');
    const args = [CLI, 'generate', '--checkpoint', runDir, '--prompt', 'the model says', '--max-tokens', '12', '--temperature', '0'];
    const gpu = spawnSync(process.execPath, args, { env: webgpuEnv(), encoding: 'utf8', timeout: 120000 });
    assert.equal(gpu.status, 0, gpu.stderr);
    assert.match(gpu.stderr, /backend: webgpu on /);
    const cpu = spawnSync(process.execPath, args, { env: { ...process.env, MOECAT_BACKEND: ref }, encoding: 'utf8', timeout: 120000 });
    assert.equal(cpu.status, 0, cpu.stderr);
    assert.ok(gpu.stdout.length > 0);
    assert.equal(gpu.stdout, cpu.stdout);
  });

  it('the OpenAI server answers on webgpu: greedy completion equals generate(), streaming adds up', async () => {
    await selectBackend('webgpu');
    const model = loadServingModel(runDir);
    const srv = await startServer({ model, tokenizer: tok, host: '127.0.0.1', port: 0, maxBatch: 4, modelId: 'tiny' });
    try {
      const client = new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'unused', maxRetries: 0 });
      const prompt = 'The model says';
      const want = generate(model, tok.encode(prompt), { temperature: 0, topP: 1, topK: 0, seed: 0, maxTokens: 10, stopIds: [tok.special.eos] });
      const r = await client.completions.create({ model: 'tiny', prompt, max_tokens: 10, temperature: 0 });
      assert.equal(r.choices[0].text, tok.decode(want.ids, { skipSpecial: true }));
      const stream = await client.completions.create({ model: 'tiny', prompt, max_tokens: 10, temperature: 0, stream: true });
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
      assert.equal(text, r.choices[0].text);
    } finally {
      await srv.close();
      model.store.dispose();
    }
  });
});

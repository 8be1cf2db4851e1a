/**
 * `moecat serve --kv a2ats` (inference/kv/engineSteps.ts): A2ATS retrieval attention inside the
 * continuous-batching engine, driven by the official `openai` client. With ratio 1 the served
 * greedy text equals the full-attention server's; with a small ratio it equals batch-1
 * generateA2ATS, /metrics shows an attended share below 1, concurrent requests keep their own
 * state and equal their sequential results, and finished sequences free their state. Codebooks
 * calibrated with `--keys post-rope` serve the same way. The CLI refuses a checkpoint without
 * codebooks and `--sparsity` together with `--kv a2ats`.
 */
import { strict as assert } from 'assert';
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import OpenAI from 'openai';
import { testBackendName, useTestBackend } from '../helpers/backend';
import { loadServingModel, ServingModel } from '../../inference/loadModel';
import { RunningServer, startServer } from '../../inference/server';
import { calibrateA2ATS } from '../../inference/kv/calibrate';
import { A2ATSServing, loadKvMode } from '../../inference/kv/options';
import { A2ATSEngineSteps, a2atsEngineSteps } from '../../inference/kv/engineSteps';
import { generateA2ATS } from '../../inference/kv/model';
import { parseModelConfig } from '../../model/config';
import { testTokenizer, tinyModelConfig, tmpDir, writeModelCheckpoint } from './fixtures';

const tok = testTokenizer();
const CLI = path.join(__dirname, '..', '..', 'cli', 'main.js');
const CALIBRATION = 'the quick brown fox jumps over the lazy dog; the model says hello there, then stops. '.repeat(3);
/** ~40 prompt tokens: with a window of 4 and 2 sinks most keys are far, so retrieval decides. */
const LONG = 'the quick brown fox jumps over the lazy dog; the model says hello there';

/** One sample of /metrics. */
async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `${name} missing from /metrics`);
  return Number(m[1]);
}

/** The compiled CLI with the test backend and no API key from the environment. */
function cliEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, MOECAT_BACKEND: testBackendName() };
  delete env.MOECAT_API_KEY;
  return env;
}

describe('serve --kv a2ats (A2ATS retrieval attention in the engine)', function () {
  this.timeout(60000);
  let runDir: string;
  let bareDir: string;
  let postDir: string;
  let model: ServingModel;
  let small: A2ATSServing;
  let smallSteps: A2ATSEngineSteps;
  const servers: RunningServer[] = [];
  let full: OpenAI;
  let exact: OpenAI;
  let sparse: OpenAI;
  let exactSrv: RunningServer;
  let sparseSrv: RunningServer;

  const client = (srv: RunningServer) => new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'unused', maxRetries: 0, timeout: 30000 });
  const serve = async (steps?: A2ATSEngineSteps) => {
    const srv = await startServer({ model, tokenizer: tok, host: '127.0.0.1', port: 0, maxBatch: 8, modelId: 'tiny', steps });
    servers.push(srv);
    return srv;
  };

  before(async () => {
    await useTestBackend();
    runDir = tmpDir('moecat-a2ats-serve-');
    writeModelCheckpoint(runDir, parseModelConfig(tinyModelConfig), 11, tok.toJSON());
    calibrateA2ATS({ checkpoint: runDir, text: CALIBRATION, codebookSize: 32, seed: 1, b: 512 });
    postDir = tmpDir('moecat-a2ats-post-');
    writeModelCheckpoint(postDir, parseModelConfig(tinyModelConfig), 11, tok.toJSON());
    calibrateA2ATS({ checkpoint: postDir, text: CALIBRATION, codebookSize: 32, seed: 1, keys: 'post-rope' });
    bareDir = tmpDir('moecat-a2ats-bare-');
    writeModelCheckpoint(bareDir, parseModelConfig(tinyModelConfig), 11, tok.toJSON());
    model = loadServingModel(runDir);
    full = client(await serve());
    exactSrv = await serve(a2atsEngineSteps(model, loadKvMode(model.dir, 'a2ats', 1)!));
    exact = client(exactSrv);
    small = loadKvMode(model.dir, 'a2ats', 0.1, { window: 4, sinks: 2 })!;
    smallSteps = a2atsEngineSteps(model, small);
    sparseSrv = await serve(smallSteps);
    sparse = client(sparseSrv);
  });
  after(async () => {
    for (const s of servers) await s.close();
    model?.store.dispose();
    for (const d of [runDir, bareDir, postDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  it('with ratio 1 (every key retrieved) greedy completions equal the full-attention server token for token', async () => {
    for (const prompt of ['The model says', LONG]) {
      const q = { model: 'tiny', prompt, max_tokens: 24, temperature: 0, logprobs: 0 };
      const a = await full.completions.create(q);
      const b = await exact.completions.create(q);
      assert.equal(b.choices[0].text, a.choices[0].text);
      assert.deepEqual(b.choices[0].logprobs!.tokens, a.choices[0].logprobs!.tokens);
      assert.equal(b.choices[0].finish_reason, a.choices[0].finish_reason);
      assert.deepEqual(b.usage, a.usage);
      // Host attention accumulates in float64: logprobs agree to rounding, not bitwise.
      a.choices[0].logprobs!.token_logprobs!.forEach((lp, i) => assert.ok(Math.abs(lp - b.choices[0].logprobs!.token_logprobs![i]) < 1e-3, `token ${i}: ${lp}`));
    }
    const messages = [{ role: 'user' as const, content: 'Hi!' }];
    const a = await full.chat.completions.create({ model: 'tiny', messages, max_tokens: 12, temperature: 0 });
    const b = await exact.chat.completions.create({ model: 'tiny', messages, max_tokens: 12, temperature: 0 });
    assert.equal(b.choices[0].message.content, a.choices[0].message.content);
    assert.ok((await metric(exactSrv.url, 'moecat_a2ats_available_keys_total')) > 0, 'the A2ATS steps decoded');
    assert.equal(await metric(exactSrv.url, 'moecat_a2ats_attended_share'), 1);
  });

  it('with a small ratio it answers through retrieval attention: tokens and logprobs of batch-1 generateA2ATS, attended share < 1 on /metrics', async () => {
    const ids = tok.encode(LONG);
    assert.ok(ids.length >= 30, `prompt has ${ids.length} tokens`);
    const ref = generateA2ATS(model, ids, { maxTokens: 30, temperature: 0, topP: 1, topK: 0, seed: 0, stopIds: [tok.special.eos] }, small.codebooks, small.opts);
    assert.ok(ref.attendedShare < 1, `reference attended share ${ref.attendedShare}`);
    const att0 = await metric(sparseSrv.url, 'moecat_a2ats_attended_keys_total');
    const avail0 = await metric(sparseSrv.url, 'moecat_a2ats_available_keys_total');
    const r = await sparse.completions.create({ model: 'tiny', prompt: LONG, max_tokens: 30, temperature: 0, logprobs: 0 });
    assert.equal(r.choices[0].finish_reason, ref.finishReason);
    assert.equal(r.choices[0].text, tok.decode(ref.ids, { skipSpecial: true }));
    assert.deepEqual(r.choices[0].logprobs!.token_logprobs, ref.logprobs);
    assert.deepEqual(r.usage, { prompt_tokens: ids.length, completion_tokens: ref.ids.length, total_tokens: ids.length + ref.ids.length });
    const share = await metric(sparseSrv.url, 'moecat_a2ats_attended_share');
    assert.ok(share > 0 && share < 1, `attended share ${share}`);
    const attended = (await metric(sparseSrv.url, 'moecat_a2ats_attended_keys_total')) - att0;
    const available = (await metric(sparseSrv.url, 'moecat_a2ats_available_keys_total')) - avail0;
    assert.ok(Math.abs(attended / available - ref.attendedShare) < 1e-12, `${attended}/${available} vs ${ref.attendedShare}`);
    assert.equal(await metric(sparseSrv.url, 'moecat_a2ats_sequences'), 0, 'the finished sequence released its A2ATS state');
  });

  it('post-rope codebooks (same weights): the key mode is reported; ratio 1 equals the full server token for token; a small ratio answers as batch-1 generateA2ATS', async () => {
    const exactPost = loadKvMode(postDir, 'a2ats', 1)!;
    assert.equal(exactPost.opts.keys, 'post-rope');
    const exactSteps = a2atsEngineSteps(model, exactPost);
    assert.match(exactSteps.describe(), /^kv a2ats: ratio 1, window 64, sinks 8, keys post-rope; 8 codebooks/);
    const q = { model: 'tiny', prompt: LONG, max_tokens: 24, temperature: 0, logprobs: 0 };
    const a = await full.completions.create(q);
    const b = await client(await serve(exactSteps)).completions.create(q);
    assert.equal(b.choices[0].text, a.choices[0].text);
    assert.deepEqual(b.choices[0].logprobs!.tokens, a.choices[0].logprobs!.tokens);
    assert.deepEqual(b.usage, a.usage);
    assert.ok(exactSteps.stats().available > 0, 'the A2ATS steps decoded');
    const smallPost = loadKvMode(postDir, 'a2ats', 0.1, { window: 4, sinks: 2 })!;
    const ref = generateA2ATS(model, tok.encode(LONG), { maxTokens: 30, temperature: 0, topP: 1, topK: 0, seed: 0, stopIds: [tok.special.eos] }, smallPost.codebooks, smallPost.opts);
    assert.ok(ref.attendedShare < 1, `reference attended share ${ref.attendedShare}`);
    const r = await client(await serve(a2atsEngineSteps(model, smallPost))).completions.create({ ...q, max_tokens: 30 });
    assert.equal(r.choices[0].text, tok.decode(ref.ids, { skipSpecial: true }));
    assert.deepEqual(r.choices[0].logprobs!.token_logprobs, ref.logprobs);
  });

  it('concurrent requests decode in one batch, each with its own A2ATS state, equal to their sequential results; state and tensors are freed', async () => {
    const prompts = [LONG, 'one two three', 'Mixture of experts: zero experts cost nothing.'];
    const q = (prompt: string) => ({ model: 'tiny', prompt, max_tokens: 30, temperature: 0, logprobs: 0 });
    const alone: string[] = [];
    for (const p of prompts) alone.push((await sparse.completions.create(q(p))).choices[0].text);
    assert.equal(smallSteps.stats().largestBatch, 1);
    const tensors = tf.memory().numTensors;
    const together = await Promise.all(prompts.map((p) => sparse.completions.create(q(p))));
    assert.deepEqual(together.map((r) => r.choices[0].text), alone);
    assert.ok(together.every((r) => r.choices[0].finish_reason !== null));
    assert.ok(smallSteps.stats().largestBatch >= 2, `largest decode batch ${smallSteps.stats().largestBatch}`);
    await sparseSrv.engine.whenIdle();
    assert.equal(smallSteps.stats().sequences, 0);
    assert.equal(await metric(sparseSrv.url, 'moecat_a2ats_sequences'), 0);
    assert.equal(await metric(sparseSrv.url, 'moecat_kv_cache_bytes'), 0);
    assert.equal(tf.memory().numTensors, tensors, 'placeholder caches are all disposed');
    assert.ok(smallSteps.stats().share < 1);
  });

  it('reports the host-tier bytes of running sequences on the KV-cache gauge and frees them on cancel', async () => {
    const ctl = new AbortController();
    const stream = await sparse.completions.create({ model: 'tiny', prompt: 'one two three', max_tokens: 60, temperature: 0, stream: true }, { signal: ctl.signal });
    let bytes = 0;
    try {
      for await (const c of stream) {
        if (c.choices[0]?.text === undefined) continue;
        bytes = await metric(sparseSrv.url, 'moecat_kv_cache_bytes');
        break;
      }
    } finally {
      ctl.abort();
    }
    assert.ok(bytes > 0, 'a running A2ATS sequence holds host bytes');
    for (let i = 0; i < 100 && smallSteps.stats().sequences > 0; i++) await new Promise((r) => setTimeout(r, 20));
    await sparseSrv.engine.whenIdle();
    assert.equal(smallSteps.stats().sequences, 0, 'the cancelled sequence released its A2ATS state');
  });

  it('the CLI refuses --kv a2ats without codebooks and together with --sparsity (one line, exit 2)', () => {
    const run = (args: string[]) => spawnSync(process.execPath, [CLI, 'serve', '--port', '0', ...args], { encoding: 'utf8', env: cliEnv(), timeout: 30000 });
    const none = run(['--checkpoint', bareDir, '--kv', 'a2ats']);
    assert.equal(none.status, 2, none.stderr);
    assert.match(none.stderr, /^error: --kv: the checkpoint has no a2ats\.safetensors \(run `moecat calibrate --method a2ats --checkpoint .*` first\)$/m);
    const both = run(['--checkpoint', runDir, '--kv', 'a2ats', '--sparsity', 'chess']);
    assert.equal(both.status, 2, both.stderr);
    assert.match(both.stderr, /^error: --kv a2ats cannot be combined with --sparsity/m);
  });

  it('`moecat serve --kv a2ats --kv-ratio 0.5` reports the mode at start-up and answers', async () => {
    const child = spawn(process.execPath, [CLI, 'serve', '--checkpoint', runDir, '--port', '0', '--kv', 'a2ats', '--kv-ratio', '0.5', '--model-name', 'tiny', '--quiet'], { env: cliEnv() });
    let stderr = '';
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no start-up line in 30 s:\n${stderr}`)), 30000);
        child.stderr.on('data', (d: Buffer) => {
          stderr += d.toString();
          const m = /^serving .* at (http:\/\/\S+)\/v1 .*$/m.exec(stderr);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]);
          }
        });
        child.on('exit', (code) => reject(new Error(`serve exited with ${code}:\n${stderr}`)));
      });
      assert.match(stderr, /^kv a2ats: ratio 0\.5, window 64, sinks 8, keys wrope, b 512; 8 codebooks/m);
      assert.match(stderr, /^serving 'tiny' .* \| kv a2ats ratio 0\.5$/m);
      const c = new OpenAI({ baseURL: url + '/v1', apiKey: 'unused', maxRetries: 0, timeout: 30000 });
      const r = await c.completions.create({ model: 'tiny', prompt: 'The model says', max_tokens: 5, temperature: 0 });
      assert.equal(r.choices[0].finish_reason, 'length');
      assert.equal(r.usage!.completion_tokens, 5);
      assert.ok((await metric(url, 'moecat_a2ats_available_keys_total')) > 0);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0);
  });
});

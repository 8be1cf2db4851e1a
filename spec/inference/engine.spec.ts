/**
 * The serving engine (DESIGN.md section 8): batched decode equals decoding alone, greedy
 * output equals generate(), caches are freed, stop rules and seeded sampling hold.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { useTestBackend } from '../helpers/backend';
import { generate } from '../../inference/generate';
import { Engine, EngineError, GenerationRequest } from '../../inference/engine';
import { makeModel, testTokenizer, tinyModelConfig } from './fixtures';
import { ServingModel } from '../../inference/loadModel';
import { hostEngineSteps } from '../../inference/hostSteps';
import { trimHostHeap } from '../../inference/decodeKernels';

const tok = testTokenizer();
const prompts = ['Hello there', 'The quick brown fox jumps', 'a', 'Mixture of experts with zero experts and a long prompt to prefill'];
const greedy = { temperature: 0, topP: 1, topK: 0, seed: 0 };

function req(p: string, maxTokens: number, extra: Partial<GenerationRequest> = {}): GenerationRequest {
  return { promptIds: tok.encode(p), maxTokens, sampling: greedy, ...extra };
}

describe('inference engine', () => {
  let m: ServingModel;
  before(async () => {
    await useTestBackend();
    m = makeModel();
  });
  after(() => m.store.dispose());

  it('runs the steps\' idle hook once idleReleaseMs after the last request, never while requests run; the host hook drops scratch and trims', async () => {
    const calls: number[] = [];
    const base = hostEngineSteps();
    let running = 0;
    const steps = { ...base, idle: (mm: ServingModel) => calls.push(running) && base.idle!(mm) };
    const e = new Engine(m, tok, { maxBatch: 2, steps, idleReleaseMs: 30 });
    running = 1;
    const a = e.submit(req(prompts[0], 12));
    const b = e.submit(req(prompts[1], 6));
    await Promise.all([a.result, b.result]);
    running = 0;
    assert.deepEqual(calls, [], 'not while requests ran');
    await new Promise((r) => setTimeout(r, 150));
    assert.deepEqual(calls, [0], 'once, after the engine went idle');
    // New work before the timer fires cancels it; the next idle period runs it again.
    await e.submit(req(prompts[2], 3)).result;
    await e.submit(req(prompts[2], 3)).result;
    await new Promise((r) => setTimeout(r, 150));
    assert.deepEqual(calls, [0, 0]);
    // After the release the decoder still decodes the same bits.
    const ref = generate(m, tok.encode(prompts[3]), { ...greedy, maxTokens: 8 });
    assert.deepEqual((await e.submit(req(prompts[3], 8)).result).tokens.map((t) => t.logprob), ref.logprobs);
    assert.equal(typeof trimHostHeap(), 'boolean');
    // Closing cancels a pending release (the model may be disposed right after close).
    const n = calls.length;
    await e.close();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(calls.length, n, 'no release after close');
  });

  it('greedy output of a request alone equals generate() token for token', async () => {
    const e = new Engine(m, tok, { maxBatch: 4 });
    for (const p of prompts) {
      const ref = generate(m, tok.encode(p), { ...greedy, maxTokens: 20 });
      const got = await e.submit(req(p, 20)).result;
      assert.deepEqual(got.tokens.map((t) => t.id), ref.ids, p);
      assert.equal(got.finishReason, 'length');
    }
    await e.close();
  });

  it('greedy output inside a batch of concurrent requests equals generate(), logprobs to the bit', async () => {
    const e = new Engine(m, tok, { maxBatch: 8 });
    const refs = prompts.map((p) => generate(m, tok.encode(p), { ...greedy, maxTokens: 24 }));
    // Different lengths join at different steps: the batch holds sequences of unequal cache lengths.
    const handles = prompts.flatMap((p, i) => [e.submit(req(p, 24)), e.submit(req(p, 24 - 3 * i))]);
    const res = await Promise.all(handles.map((h) => h.result));
    prompts.forEach((p, i) => {
      assert.deepEqual(res[2 * i].tokens.map((t) => t.id), refs[i].ids, p);
      assert.deepEqual(res[2 * i].tokens.map((t) => t.logprob), refs[i].logprobs, p);
      assert.deepEqual(res[2 * i + 1].tokens.map((t) => t.id), refs[i].ids.slice(0, 24 - 3 * i), p);
    });
    await e.close();
  });
  it('a GQA model with sequential layers also decodes in a batch exactly as generate()', async () => {
    const g = makeModel({ ...tinyModelConfig, layerType: 'sequential', attention: { type: 'gqa', nHeads: 4, nKvHeads: 2, headDim: 8 } }, 3);
    try {
      const e = new Engine(g, tok, { maxBatch: 4 });
      const res = await Promise.all(prompts.map((p) => e.submit(req(p, 16)).result));
      prompts.forEach((p, i) => {
        const ref = generate(g, tok.encode(p), { ...greedy, maxTokens: 16 });
        assert.deepEqual(res[i].tokens.map((t) => t.logprob), ref.logprobs, p);
      });
      await e.close();
    } finally {
      g.store.dispose();
    }
  });

  it('new requests join the running batch between decode steps', async () => {
    const e = new Engine(m, tok, { maxBatch: 4 });
    const events: string[] = [];
    let second: Promise<unknown> | undefined;
    const first = e.submit(req(prompts[1], 30), {
      onDelta: (_d, t) => {
        if (!t) return;
        events.push('A');
        if (events.length === 5) second = e.submit(req(prompts[0], 5), { onDelta: (_x, u) => u && events.push('B') }).result;
      },
    }).result;
    await first;
    await second;
    // B ran to completion while A was still decoding: its tokens sit between A's.
    assert.equal(events.filter((x) => x === 'B').length, 5);
    assert.equal(events[events.length - 1], 'A');
    assert.ok(events.indexOf('B') < events.lastIndexOf('A') - 5);
    await e.close();
  });

  it('a cancelled request leaves the batch and frees its cache; tensors return to the idle count', async () => {
    const e = new Engine(m, tok, { maxBatch: 4 });
    const idle = tf.memory().numTensors;
    let seen = 0;
    const h = e.submit(req(prompts[3], 60), { onDelta: (_d, t) => t && ++seen === 3 && h.cancel() });
    const other = e.submit(req(prompts[0], 10));
    const r = await h.result;
    assert.equal(r.finishReason, 'cancelled');
    assert.ok(r.completionTokens < 60);
    assert.equal((await other.result).completionTokens, 10);
    await e.whenIdle();
    assert.equal(e.kvCacheBytes(), 0);
    assert.equal(tf.memory().numTensors, idle);
    await e.close();
  });

  it('stops at the context end with finish reason length', async () => {
    const e = new Engine(m, tok, { maxBatch: 2 });
    const n = m.config.maxSeqLen - 2;
    const r = await e.submit({ promptIds: Array.from({ length: n }, (_, i) => 97 + (i % 26)), maxTokens: 50, sampling: greedy }).result;
    // Positions n-1 .. maxSeqLen-1 can be fed: the prompt's logits plus two decode steps.
    assert.equal(r.completionTokens, 3);
    assert.equal(r.finishReason, 'length');
    await e.close();
  });

  it('stops at a stop id, which is counted as generated but not returned', async () => {
    const e = new Engine(m, tok, { maxBatch: 2 });
    const ref = generate(m, tok.encode(prompts[1]), { ...greedy, maxTokens: 12 });
    const stopId = ref.ids[6];
    const r = await e.submit(req(prompts[1], 12, { stopIds: [stopId] })).result;
    const at = ref.ids.indexOf(stopId);
    assert.equal(r.finishReason, 'stop');
    assert.deepEqual(r.tokens.map((t) => t.id), ref.ids.slice(0, at));
    assert.equal(r.completionTokens, at + 1);
    await e.close();
  });

  it('reports FFN experts per token; with every slot pinned on zero experts it is 0', async () => {
    const c = m.config;
    const saved = m.biases;
    const K = c.moe.topK;
    const pin = (zeroSlots: number) =>
      Array.from({ length: c.nLayers }, () => {
        const b = new Float32Array(c.moe.nExperts + c.moe.nZeroExperts);
        for (let z = 0; z < c.moe.nZeroExperts; z++) b[c.moe.nExperts + z] = z < zeroSlots ? 1 : -1;
        return b;
      });
    const e = new Engine(m, tok, { maxBatch: 4 });
    try {
      for (const zero of [0, 1, 2]) {
        m.biases = pin(zero);
        const rs = await Promise.all([e.submit(req(prompts[0], 6)).result, e.submit(req(prompts[2], 6)).result]);
        for (const r of rs) assert.equal(r.ffnExpertsPerToken, K - zero);
      }
    } finally {
      m.biases = saved;
      await e.close();
    }
  });

  it('refuses bad requests and a full queue with typed errors', () => {
    const e = new Engine(m, tok, { maxBatch: 1, maxQueue: 1 });
    assert.throws(() => e.submit(req('', 4)), (x: Error) => x instanceof EngineError && /empty/.test(x.message));
    assert.throws(() => e.submit({ promptIds: [m.config.vocabSize], maxTokens: 1, sampling: greedy }), EngineError);
    const h = e.submit(req('x', 2));
    assert.throws(() => e.submit(req('y', 2)), (x: Error) => x instanceof EngineError && x.code === 'E_OVERLOADED');
    h.cancel();
    return e.close();
  });
});

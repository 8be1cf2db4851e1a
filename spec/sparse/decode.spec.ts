/**
 * The plain-JS batch-1 decoder mirrors the model (model forward is the reference), and with
 * every threshold at zero the sparse path computes exactly what the dense path computes.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { useTestBackend } from '../helpers/backend';
import { makeModel, tinyModelConfig, testTokenizer } from '../inference/fixtures';
import { forward } from '../../model/transformer';
import { generate } from '../../inference/generate';
import { ServingModel } from '../../inference/loadModel';
import { hostModel, HostKvCache, SparseDecoder, sparseGenerate, zeroThresholds, SparsityPlan } from '../../inference/sparse';
import { ModelConfigInput } from '../../model/config';

const ids = [5, 17, 200, 3, 3, 99, 140, 7, 61, 250, 12, 8];

/** Max |Δ| between the JS decoder's per-position logits and model forward on the whole sequence. */
function maxLogitGap(m: ServingModel): number {
  const dec = new SparseDecoder(hostModel(m));
  const cache = new HostKvCache(m.config);
  const ref = tf.tidy(() => forward(m.config, (n) => m.store.get(n), Int32Array.from(ids), 1, ids.length, { biases: m.biases }).logits!.dataSync() as Float32Array);
  const V = m.config.vocabSize;
  let gap = 0;
  ids.forEach((id, t) => {
    const z = dec.step(id, cache, null);
    for (let i = 0; i < V; i++) gap = Math.max(gap, Math.abs(z[i] - ref[t * V + i]));
  });
  return gap;
}

const gqaSequential: ModelConfigInput = {
  ...tinyModelConfig,
  layerType: 'sequential',
  attention: { type: 'gqa', nHeads: 4, nKvHeads: 2, headDim: 8 },
};

describe('sparse decode (plain JS, batch 1)', () => {
  let m: ServingModel;
  before(async () => {
    await useTestBackend();
    m = makeModel();
  });
  after(() => m.store.dispose());

  // float32 tfjs against JS with some float64 accumulation: logits are O(10) at initStd 0.5.
  it('dense decode equals model forward, MLA + ScMoE (max |Δlogit| < 2e-4)', () => {
    assert.ok(maxLogitGap(m) < 2e-4, String(maxLogitGap(m)));
  });

  it('dense decode equals model forward, GQA + sequential layers (max |Δlogit| < 2e-4)', () => {
    const g = makeModel(gqaSequential, 11);
    try {
      const gap = maxLogitGap(g);
      assert.ok(gap < 2e-4, String(gap));
    } finally {
      g.store.dispose();
    }
  });

  it('with all thresholds zero the sparse path (CHESS + attention, and CATS) equals the dense path bitwise', () => {
    const host = hostModel(m);
    const thresholds = zeroThresholds(host.ffnHidden, host.attentionBlocks);
    const run = (plan: SparsityPlan | null) => {
      const dec = new SparseDecoder(host);
      const cache = new HostKvCache(m.config);
      return ids.map((id) => Float32Array.from(dec.step(id, cache, plan)));
    };
    const dense = run(null);
    assert.deepEqual(run({ ffn: 'chess', attention: true, thresholds }), dense);
    assert.deepEqual(run({ ffn: 'cats', attention: false, thresholds }), dense);
  });

  it('greedy sparseGenerate with zero thresholds equals generate() token for token', () => {
    const host = hostModel(m);
    const plan: SparsityPlan = { ffn: 'chess', attention: true, thresholds: zeroThresholds(host.ffnHidden, host.attentionBlocks) };
    const dec = new SparseDecoder(host);
    const greedy = { temperature: 0, topP: 1, topK: 0, seed: 0, maxTokens: 24 };
    for (const p of ['Hello there', 'The quick brown fox']) {
      const prompt = testTokenizer().encode(p);
      const ref = generate(m, prompt, greedy);
      const got = sparseGenerate(dec, plan, prompt, greedy);
      assert.deepEqual(got.ids, ref.ids, p);
      assert.equal(got.finishReason, ref.finishReason);
    }
  });
});

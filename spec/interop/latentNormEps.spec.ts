/**
 * `model.attention.latentNormEps` (transformers fixes the MLA latent-norm eps at 1e-6): the
 * model uses it, and every inference path that recomputes MLA (the batched engine, the A2ATS
 * host tier, the serving decoder) agrees with the model when it differs from rmsEps.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { useTestBackend } from '../helpers/backend';
import { makeModel, testTokenizer, tinyModelConfig } from '../inference/fixtures';
import { forward } from '../../model/transformer';
import { generate } from '../../inference/generate';
import { Engine } from '../../inference/engine';
import { A2ATSCache, hostForward } from '../../inference/kv/model';
import { hostDecoder, HostSequence } from '../../inference/hostDecode';
import { ServingModel } from '../../inference/loadModel';
import { ModelConfigInput } from '../../model/config';

// An eps far from rmsEps (1e-5), so a path that ignored the field would be visibly off.
const cfg: ModelConfigInput = { ...tinyModelConfig, attention: { ...(tinyModelConfig.attention as object), latentNormEps: 0.5 } as ModelConfigInput['attention'] };
const ids = [5, 17, 200, 3, 3, 99, 140, 7, 61, 250, 12, 8];

function logits(m: ServingModel): Float32Array {
  return tf.tidy(() => forward(m.config, (n) => m.store.get(n), Int32Array.from(ids), 1, ids.length, { biases: m.biases }).logits!.dataSync() as Float32Array);
}

describe('model.attention.latentNormEps', () => {
  let m: ServingModel;
  before(async () => {
    await useTestBackend();
    m = makeModel(cfg);
  });
  after(() => m.store.dispose());

  it('changes the model (the same weights with the default eps give other logits)', () => {
    const d = makeModel(tinyModelConfig);
    try {
      const a = logits(m);
      const b = logits(d);
      let gap = 0;
      for (let i = 0; i < a.length; i++) gap = Math.max(gap, Math.abs(a[i] - b[i]));
      assert.ok(gap > 1e-2, `max |Δlogit| ${gap}`);
    } finally {
      d.store.dispose();
    }
  });

  it('the batched engine decodes exactly as generate()', async () => {
    const tok = testTokenizer();
    const e = new Engine(m, tok, { maxBatch: 2 });
    const greedy = { temperature: 0, topP: 1, topK: 0, seed: 0 };
    const got = await e.submit({ promptIds: ids, maxTokens: 12, sampling: greedy }).result;
    await e.close();
    const ref = generate(m, ids, { ...greedy, maxTokens: 12 });
    assert.deepEqual(got.tokens.map((t) => t.logprob), ref.logprobs);
  });

  it('the A2ATS host tier and the serving decoder match the model (abs 2e-4)', () => {
    const ref = logits(m);
    const V = m.config.vocabSize;
    const host = hostForward(m, new A2ATSCache(m.config, null, { window: 4, sinks: 2, b: 2048, ratio: 1 }), ids, false).logits;
    const last = ref.subarray((ids.length - 1) * V);
    for (let i = 0; i < V; i++) assert.ok(Math.abs(host[i] - last[i]) < 2e-4, `A2ATS logit ${i}: ${host[i]} vs ${last[i]}`);
    const seq = new HostSequence(m.config);
    ids.forEach((token, pos) => {
      const z = hostDecoder(m).run([{ seq, token, pos }], [true]).logits;
      for (let i = 0; i < V; i++) assert.ok(Math.abs(z[i] - ref[pos * V + i]) < 2e-4, `serving decoder position ${pos} logit ${i}`);
    });
  });
});

/**
 * The sparse engine steps are drop-in replacements for engineStep's prefill/decodeBatch: with
 * zero thresholds their greedy decode (one row and a batch of two with different lengths)
 * picks the same tokens as the default engine path.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { useTestBackend } from '../helpers/backend';
import { makeModel } from '../inference/fixtures';
import { ServingModel } from '../../inference/loadModel';
import { argmax } from '../../inference/sampling';
import * as dense from '../../inference/engineStep';
import { EngineSteps, hostModel, SparseDecoder, sparseEngineSteps, zeroThresholds } from '../../inference/sparse';

function greedyRows(steps: EngineSteps, m: ServingModel, prompts: number[][], n: number): { ids: number[][] } {
  const ids: number[][] = [];
  const caches: dense.LayerCaches[] = [];
  const past: number[] = [];
  const last: number[] = [];
  for (const p of prompts) {
    const r = steps.prefill(m, p);
    const t = argmax(r.logits.dataSync() as Float32Array);
    r.logits.dispose();
    ids.push([t]);
    caches.push(r.caches[0]);
    past.push(p.length);
    last.push(t);
  }
  for (let s = 1; s < n; s++) {
    const r = steps.decodeBatch(m, last, past, caches);
    const z = r.logits.dataSync() as Float32Array;
    const V = m.config.vocabSize;
    r.logits.dispose();
    prompts.forEach((_, b) => {
      dense.disposeCaches(caches[b]);
      caches[b] = r.caches[b];
      past[b]++;
      last[b] = argmax(z.subarray(b * V, (b + 1) * V));
      ids[b].push(last[b]);
    });
  }
  caches.forEach((c) => dense.disposeCaches(c));
  return { ids };
}

describe('sparse engine steps', () => {
  let m: ServingModel;
  before(async () => {
    await useTestBackend();
    m = makeModel();
  });
  after(() => m.store.dispose());

  it('with zero thresholds, greedy decode of 1 and 2 rows equals the default engine path token for token', () => {
    const host = hostModel(m);
    const steps = sparseEngineSteps(new SparseDecoder(host), { ffn: 'chess', attention: true, thresholds: zeroThresholds(host.ffnHidden, host.attentionBlocks) });
    const ref: EngineSteps = { prefill: dense.prefill, decodeBatch: dense.decodeBatch };
    const before = tf.memory().numTensors;
    for (const prompts of [[[5, 17, 200, 3]], [[9, 8, 7], [100, 101, 102, 103, 104, 105]]]) {
      assert.deepEqual(greedyRows(steps, m, prompts, 12).ids, greedyRows(ref, m, prompts, 12).ids);
    }
    assert.equal(tf.memory().numTensors, before, 'placeholder caches are all disposed');
  });
});

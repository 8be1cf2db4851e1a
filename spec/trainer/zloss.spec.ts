/**
 * The hidden z-loss counts the same positions as the LM loss: with a loss mask (SFT prompt
 * tokens, padding) only masked-in positions add to the sum that is divided by their count.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { RngStream } from '../../core/rng';
import { parseModelConfig } from '../../model/config';
import { initParams, paramSpecs, ParamStore } from '../../model/params';
import { initialBiases } from '../../model/transformer';
import { Batch } from '../../data/batch';
import { microbatchLoss } from '../../trainer/losses';
import { useTestBackend } from '../helpers/backend';

const c = parseModelConfig({
  vocabSize: 260, dModel: 16, nLayers: 1, ffnHidden: 16, maxSeqLen: 8, initStd: 0.3, layerType: 'sequential',
  moe: { nExperts: 4, nZeroExperts: 2, topK: 2, expertHidden: 8, routedScalingFactor: 1, targetFfnPerToken: 1.5, balanceAlpha: 0.1, expertGroups: 2 },
  attention: { type: 'gqa', nHeads: 4, nKvHeads: 2, headDim: 4 },
});

describe('hidden z-loss under a loss mask', () => {
  before(useTestBackend);

  it('sums lse(|h_t|)^2 over masked-in positions only and divides by their count', () => {
    const B = 2;
    const S = 8;
    const r = RngStream.of(3, 'spec:zloss');
    const inputs = new Int32Array(B * S).map(() => r.int(c.vocabSize));
    const targets = new Int32Array(B * S).map(() => r.int(c.vocabSize));
    // An SFT-like mask: prompt (first 5 positions of each row) masked out.
    const lossMask = new Float32Array(B * S).map((_, i) => (i % S >= 5 ? 1 : 0));
    const T = lossMask.reduce((a, b) => a + b, 0);
    const mb: Batch = { inputs, targets, lossMask, batchSize: B, seqLen: S };
    const store = new ParamStore(paramSpecs(c), initParams(c, 1));
    const coef = 0.01;
    let z = 0;
    let hidden: Float32Array = new Float32Array();
    tf.tidy(() => {
      const parts = microbatchLoss(c, (n) => store.get(n), mb, { globalTokens: T, globalSeqs: B }, { biases: initialBiases(c), zLossCoef: coef });
      z = parts.z!.dataSync()[0];
      hidden = parts.hidden.dataSync() as Float32Array;
    });
    const d = hidden.length / (B * S);
    const lse2 = (t: number): number => {
      let mx = -Infinity;
      for (let j = 0; j < d; j++) mx = Math.max(mx, Math.abs(hidden[t * d + j]));
      let s = 0;
      for (let j = 0; j < d; j++) s += Math.exp(Math.abs(hidden[t * d + j]) - mx);
      return (mx + Math.log(s)) ** 2;
    };
    let masked = 0;
    let all = 0;
    for (let t = 0; t < B * S; t++) {
      all += lse2(t);
      if (lossMask[t]) masked += lse2(t);
    }
    const want = (coef * masked) / T;
    const inflated = (coef * all) / T;
    assert.ok(Math.abs(z - want) < 1e-5 * want, `z ${z} vs masked-in reference ${want}`);
    // The old normalisation (all positions over the masked-in count) is far from it.
    assert.ok(Math.abs(inflated - want) > 0.5 * want, `${inflated} vs ${want}`);
    store.dispose();
  });
});

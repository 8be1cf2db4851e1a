/**
 * Device-level balance loss with zero experts as group D+1 (DESIGN.md section 2):
 * per sequence L = alpha·sum_j f_j·P_j/tau_j, tau_j = K_e/(K·D) (j ≤ D), (K−K_e)/K (zero group).
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { parseModelConfig } from '../../model/config';
import { balanceLoss, balanceWeights, expertGroup } from '../../model/moe/balanceLoss';
import { selectExperts } from '../../model/moe/router';
import { RngStream } from '../../core/rng';
import { useTestBackend } from '../helpers/backend';

function config(alpha: number, ke: number) {
  return parseModelConfig({
    vocabSize: 260,
    dModel: 8,
    nLayers: 1,
    attention: { type: 'gqa', nHeads: 2, nKvHeads: 1, headDim: 4 },
    ffnHidden: 8,
    moe: { nExperts: 4, nZeroExperts: 2, topK: 2, expertHidden: 4, targetFfnPerToken: ke, balanceAlpha: alpha, expertGroups: 2 },
    maxSeqLen: 64,
  });
}

describe('model/moe balance loss', () => {
  before(useTestBackend);

  it('groups FFN experts in contiguous blocks and zero experts as group D+1', () => {
    const c = config(0.1, 1.5);
    assert.deepEqual([0, 1, 2, 3, 4, 5].map((e) => expertGroup(e, c)), [0, 0, 1, 1, 2, 2]);
  });

  it('equals alpha·sum_j f_j·P_j/tau_j computed by hand (summed over sequences)', () => {
    const c = config(0.1, 1.5); // K = 2, D = 2: tau = [1.5/4, 1.5/4, 0.5/2]
    const B = 2;
    const S = 3;
    const E = 6;
    const K = 2;
    const probs = [
      [0.3, 0.2, 0.1, 0.1, 0.2, 0.1],
      [0.05, 0.05, 0.4, 0.3, 0.1, 0.1],
      [0.1, 0.1, 0.1, 0.1, 0.35, 0.25],
      [0.25, 0.25, 0.2, 0.1, 0.1, 0.1],
      [0.1, 0.3, 0.1, 0.1, 0.1, 0.3],
      [0.2, 0.1, 0.1, 0.4, 0.1, 0.1],
    ];
    const idx = new Int32Array([0, 1, 2, 3, 4, 5, 0, 1, 1, 5, 3, 0]);
    const group = [0, 0, 1, 1, 2, 2];
    const tau = [1.5 / (2 * 2), 1.5 / (2 * 2), (2 - 1.5) / 2];
    let want = 0;
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < 3; j++) {
        let slots = 0;
        for (let s = b * S * K; s < (b + 1) * S * K; s++) if (group[idx[s]] === j) slots++;
        const f = slots / (S * K);
        let P = 0;
        for (let t = b * S; t < (b + 1) * S; t++) for (let e = 0; e < E; e++) if (group[e] === j) P += probs[t][e];
        P /= S;
        want += (0.1 * f * P) / tau[j];
      }
    }
    const got = tf.tidy(() => balanceLoss(c, tf.tensor2d(probs), idx, B, S).dataSync()[0]);
    assert.ok(Math.abs(got - want) <= 1e-6 * want, `${got} vs ${want}`);
  });

  it('with K_e = K the zero group has tau = 0 and gets no weight (no division by zero)', () => {
    const c = config(0.1, 2);
    const w = balanceWeights(c, new Int32Array([0, 4, 1, 5]), 1, 2);
    assert.equal(w[2], 0);
    assert.ok(w.every(Number.isFinite));
  });

  it('its gradient moves router probability away from the over-used zero group', () => {
    const c = config(1, 1.5);
    // Both slots of every token on zero experts: f = [0, 0, 1] against tau = [3/8, 3/8, 1/4].
    const logits = tf.tensor2d([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1]]);
    const idx = new Int32Array([4, 5, 4, 5]);
    const g = tf.tidy(() => tf.grad((z: tf.Tensor) => balanceLoss(c, tf.softmax(z) as tf.Tensor2D, idx, 1, 2))(logits).dataSync());
    for (const t of [0, 1]) {
      for (let e = 0; e < 4; e++) assert.ok(g[t * 6 + e] < 0, `FFN logit ${e} grad ${g[t * 6 + e]} should be < 0 (descent raises it)`);
      for (let e = 4; e < 6; e++) assert.ok(g[t * 6 + e] > 0, `zero logit ${e} grad ${g[t * 6 + e]} should be > 0`);
    }
    logits.dispose();
  });

  it('trained alone on the router, it drives the FFN:zero slot ratio to K_e:(K−K_e)', () => {
    // d = 8, T = 64 tokens in 4 sequences; router initialised to prefer zero experts strongly.
    const c = config(1, 1.5);
    const B = 4;
    const S = 16;
    const T = B * S;
    const d = 8;
    const E = 6;
    const K = 2;
    // Feature 0 is a constant 1, and the router's zero-expert columns read it with weight 3.
    const xs = RngStream.of(2, 'spec:x').normalArray(T * d, 1);
    for (let t = 0; t < T; t++) xs[t * d] = 1;
    const x = tf.tensor2d(xs, [T, d]);
    const w0 = RngStream.of(2, 'spec:wr').normalArray(d * E, 0.1);
    w0[4] = 3;
    w0[5] = 3;
    const wr = tf.variable(tf.tensor2d(w0, [d, E]), true, 'spec-router');
    const ffnShare = (): number => {
      const probs = tf.tidy(() => tf.softmax(tf.matMul(x, wr)).dataSync() as Float32Array);
      const r = selectExperts(probs, new Float32Array(E), T, E, K, c.moe.nExperts);
      return (T * K - r.zeroSlots) / (T * K);
    };
    const opt = tf.train.sgd(0.5);
    const start = ffnShare();
    const trace: number[] = [];
    for (let step = 0; step < 300; step++) {
      const probs = tf.tidy(() => tf.softmax(tf.matMul(x, wr)).dataSync() as Float32Array);
      const idx = selectExperts(probs, new Float32Array(E), T, E, K, c.moe.nExperts).idx;
      tf.tidy(() => {
        opt.minimize(() => tf.div(balanceLoss(c, tf.softmax(tf.matMul(x, wr)) as tf.Tensor2D, idx, B, S), B) as tf.Scalar, false, [wr]);
      });
      trace.push(ffnShare());
    }
    if (process.env.MOECAT_SPEC_DEBUG) console.log(trace.filter((_, i) => i % 10 === 0).map((v) => v.toFixed(2)).join(' '));
    const end = trace.slice(-20).reduce((a, b) => a + b, 0) / 20;
    const target = 1.5 / 2; // K_e/K: FFN slots : zero slots = 1.5 : 0.5
    tf.dispose([x, wr]);
    opt.dispose();
    assert.ok(start < 0.4, `start FFN share ${start} should be far below ${target}`);
    assert.ok(Math.abs(end - target) < 0.05, `FFN share of slots over the last 20 steps ${end} (target ${target}, start ${start})`);
  });
});

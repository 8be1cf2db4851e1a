/**
 * Aux-loss-free budget controller (DESIGN.md section 2):
 *   b_i += mu·((K_e/K)·(1/N) − T_i/(K·T_all)) for FFN experts, b_i = 0 for zero experts.
 * On a synthetic routing problem it moves the mean number of FFN experts per token to K_e.
 */
import { strict as assert } from 'assert';
import { selectExperts } from '../../model/moe/router';
import { updateExpertBias } from '../../model/moe/biasController';
import { RngStream } from '../../core/rng';

const N = 8;
const Z = 4;
const E = N + Z;
const K = 3;
const KE = 2;
const T = 256;

/** Router probabilities for one batch: softmax of N(0,1) logits plus `skew` on FFN experts. */
function batchProbs(rng: RngStream, skew: number): Float32Array {
  const p = new Float32Array(T * E);
  for (let t = 0; t < T; t++) {
    let sum = 0;
    const row = new Float64Array(E);
    for (let e = 0; e < E; e++) {
      row[e] = Math.exp(rng.normal() + (e < N ? skew : 0));
      sum += row[e];
    }
    for (let e = 0; e < E; e++) p[t * E + e] = row[e] / sum;
  }
  return p;
}

function ffnPerToken(counts: Int32Array): number {
  return counts.reduce((a, b) => a + b, 0) / T;
}

/** Runs the controller for `steps` fresh batches; returns the mean FFN experts/token per step. */
function control(skew: number, steps: number, mu: number, bias: Float32Array): number[] {
  const rng = RngStream.of(1, 'spec:bias', skew);
  const trace: number[] = [];
  for (let s = 0; s < steps; s++) {
    const r = selectExperts(batchProbs(rng, skew), bias, T, E, K, N);
    trace.push(ffnPerToken(r.ffnCounts));
    updateExpertBias(bias, r.ffnCounts, T, { nFfn: N, topK: K, targetFfn: KE, mu });
  }
  return trace;
}

const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;

describe('model/moe bias controller', () => {
  it('one update follows the formula exactly (float64 then float32) and zeroes zero-expert biases', () => {
    const bias = new Float32Array([0.01, -0.02, 0, 0.5, 0, 0.3, -0.1, 0.2, 0.7, -0.7, 1, 2]);
    const before = bias.slice();
    const counts = new Int32Array([100, 0, 50, 30, 80, 20, 60, 40]);
    updateExpertBias(bias, counts, T, { nFfn: N, topK: K, targetFfn: KE, mu: 0.003 });
    for (let i = 0; i < N; i++) assert.equal(bias[i], Math.fround(before[i] + 0.003 * (KE / K / N - counts[i] / (K * T))));
    for (let i = N; i < E; i++) assert.ok(Object.is(bias[i], 0), `zero expert ${i} bias ${bias[i]}`);
  });

  it('with mu = 0 or no tokens the biases do not move', () => {
    const bias = new Float32Array(E).fill(0.25);
    updateExpertBias(bias, new Int32Array(N).fill(10), T, { nFfn: N, topK: K, targetFfn: KE, mu: 0 });
    updateExpertBias(bias, new Int32Array(N).fill(10), 0, { nFfn: N, topK: K, targetFfn: KE, mu: 0.1 });
    assert.ok(bias.every((b) => b === 0.25));
  });

  for (const [skew, label] of [[1.5, 'too many FFN experts'], [-1.5, 'too few FFN experts']] as const) {
    it(`moves the mean FFN experts per token from far off (${label}) to within 0.05 of K_e = ${KE}`, () => {
      const bias = new Float32Array(E);
      const trace = control(skew, 600, 0.05, bias);
      if (process.env.MOECAT_SPEC_DEBUG) console.log(trace.filter((_, i) => i % 20 === 0).map((v) => v.toFixed(2)).join(' '));
      const start = trace[0];
      const end = mean(trace.slice(-50));
      assert.ok(Math.abs(start - KE) > 0.6, `start ${start} is not far from K_e`);
      assert.ok(Math.abs(end - KE) < 0.05, `mean FFN experts/token over the last 50 steps ${end} (start ${start})`);
      for (let i = N; i < E; i++) assert.ok(Object.is(bias[i], 0), `zero expert ${i} bias ${bias[i]}`);
    });
  }
});

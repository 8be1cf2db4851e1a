/**
 * sampling.descendingOrder (one native numeric sort of packed keys) gives exactly the order of
 * the comparator sort it replaced: descending logit, ties (and -0 vs +0) by ascending id; and
 * sampleToken (no per-token arrays, one exp per logit at temperature 1) draws exactly what the
 * plain formulation draws.
 */
import { strict as assert } from 'assert';
import { descendingOrder, SamplingParams, sampleToken } from '../../inference/sampling';
import { RngStream } from '../../core/rng';

/** The plain formulation sampleToken must equal (its code before it reused buffers). */
function reference(logits: Float32Array, p: SamplingParams, position: number): { id: number; logprob: number } {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i] - max);
  const logZ = max + Math.log(z);
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
  const cand = order.slice(0, p.topK > 0 ? Math.min(p.topK, order.length) : order.length);
  const w = cand.map((i) => Math.exp((logits[i] - max) / p.temperature));
  const total = w.reduce((a, b) => a + b, 0);
  let keep = cand.length;
  if (p.topP < 1) {
    let cum = 0;
    for (let j = 0; j < cand.length; j++) {
      cum += w[j] / total;
      if (cum >= p.topP) {
        keep = j + 1;
        break;
      }
    }
  }
  const id = cand[RngStream.of(p.seed, 'sample', position).categorical(w.slice(0, keep))];
  return { id, logprob: logits[id] - logZ };
}

describe('sampling order', () => {
  it('equals sort((a, b) => z[b] - z[a] || a - b) with ties, signed zeros and infinities', () => {
    let s = 99;
    const rnd = () => {
      s = (s * 1664525 + 1013904223) >>> 0;
      return s / 2 ** 32;
    };
    for (let t = 0; t < 200; t++) {
      const n = 1 + Math.floor(rnd() * 3000);
      const z = Float32Array.from({ length: n }, () => {
        const r = rnd();
        return r < 0.1 ? 0 : r < 0.15 ? -0 : r < 0.3 ? Math.round((rnd() - 0.5) * 4) : (rnd() - 0.5) * 40;
      });
      if (t % 7 === 0) z[0] = Infinity;
      if (t % 11 === 0) z[n - 1] = -Infinity;
      const ref = Array.from(z.keys()).sort((a, b) => z[b] - z[a] || a - b);
      assert.deepEqual(descendingOrder(z), ref, `case ${t} (n = ${n})`);
    }
  });

  it('sampleToken draws the id and log-probability of the plain formulation (temperatures, top-k, top-p, ties)', () => {
    let s = 7;
    const rnd = () => {
      s = (s * 1664525 + 1013904223) >>> 0;
      return s / 2 ** 32;
    };
    const ids = new Set<number>();
    for (let t = 0; t < 300; t++) {
      const n = 1 + Math.floor(rnd() * 2500);
      const z = Float32Array.from({ length: n }, () => (rnd() < 0.2 ? Math.round((rnd() - 0.5) * 6) : (rnd() - 0.5) * 8));
      const p: SamplingParams = { temperature: [1, 0.7, 1.3, 1][t % 4], topK: t % 3 === 0 ? Math.floor(rnd() * 50) : 0, topP: t % 5 === 0 ? 0.5 + rnd() / 2 : 1, seed: t };
      const got = sampleToken(z, p, t % 17);
      assert.deepEqual(got, reference(z, p, t % 17), `case ${t} (n = ${n}, ${JSON.stringify(p)})`);
      ids.add(got.id);
    }
    assert.ok(ids.size > 100, 'the draws vary');
  });
});

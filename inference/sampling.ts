/**
 * Seeded sampling from logits: temperature, top-k, top-p. Each draw uses the named stream
 * (seed, 'sample', position), so the same seed gives the same text whatever else is batched.
 * temperature 0 is greedy (argmax, ties to the lower id).
 */
import { RngStream } from '../core/rng';

export interface SamplingParams {
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
}

export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * Ids by descending logit, ties by ascending id: the order `sort((a, b) => z[b] - z[a] || a - b)`
 * gives (-0 ties +0), found with one native numeric sort of a Float64Array instead of a
 * comparator sort. Each key is (the logit's float32 bits mapped so that larger logits sort
 * first) * 2^21 + id, an integer below 2^53, so keys are exact and distinct.
 */
export function descendingOrder(logits: Float32Array): number[] {
  const n = logits.length;
  if (n > 1 << 21) return Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
  const keys = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    f32[0] = logits[i] + 0; // -0 -> +0
    const u = u32[0];
    const asc = u & 0x80000000 ? ~u >>> 0 : (u | 0x80000000) >>> 0; // ascending with the float
    keys[i] = (0xffffffff - asc) * 2097152 + i;
  }
  keys.sort();
  const order = new Array<number>(n);
  for (let i = 0; i < n; i++) order[i] = keys[i] % 2097152;
  return order;
}

/** Returns the sampled id and its log-probability under the unmodified distribution. */
export function sampleToken(logits: Float32Array, p: SamplingParams, position: number): { id: number; logprob: number } {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i] - max);
  const logZ = max + Math.log(z);
  if (p.temperature <= 0) {
    const id = argmax(logits);
    return { id, logprob: logits[id] - logZ };
  }
  const order = descendingOrder(logits);
  const k = p.topK > 0 ? Math.min(p.topK, order.length) : order.length;
  const cand = order.slice(0, k);
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
  const rng = RngStream.of(p.seed, 'sample', position);
  const j = rng.categorical(w.slice(0, keep));
  const id = cand[j];
  return { id, logprob: logits[id] - logZ };
}

/** log Z = logsumexp(logits), computed from the max for stability. */
export function logNormalizer(logits: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i] - max);
  return max + Math.log(z);
}

/** The n most likely ids with their log-probabilities (descending, ties to the lower id). */
export function topLogprobs(logits: Float32Array, n: number, logZ = logNormalizer(logits)): { id: number; logprob: number }[] {
  if (n <= 0) return [];
  const best: number[] = [];
  for (let i = 0; i < logits.length; i++) {
    if (best.length === n && logits[i] <= logits[best[n - 1]]) continue;
    let j = best.length === n ? n - 1 : best.length;
    if (best.length < n) best.push(i);
    while (j > 0 && logits[best[j - 1]] < logits[i]) {
      best[j] = best[j - 1];
      j--;
    }
    best[j] = i;
  }
  return best.map((id) => ({ id, logprob: logits[id] - logZ }));
}

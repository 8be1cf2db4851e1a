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
  const keys = sortedKeys(logits);
  const order = new Array<number>(n);
  for (let i = 0; i < n; i++) order[i] = keys[i] % 2097152;
  return order;
}

let keyScratch = new Float64Array(0);

/** descendingOrder's sorted keys (n <= 2^21), in a buffer reused by the next call. */
function sortedKeys(logits: Float32Array): Float64Array {
  const n = logits.length;
  if (keyScratch.length !== n) keyScratch = new Float64Array(n);
  const keys = keyScratch;
  for (let i = 0; i < n; i++) {
    f32[0] = logits[i] + 0; // -0 -> +0
    const u = u32[0];
    const asc = u & 0x80000000 ? ~u >>> 0 : (u | 0x80000000) >>> 0; // ascending with the float
    keys[i] = (0xffffffff - asc) * 2097152 + i;
  }
  keys.sort();
  return keys;
}

let expScratch = new Float64Array(0);
let weightScratch = new Float64Array(0);

/**
 * One draw. The numbers are those of the plain formulation (e^(z−max) summed in id order for log
 * Z; the candidates' weights e^((z−max)/T) in descending order, their sum from the first; top-p
 * by the running share; a categorical draw over the kept prefix), computed without per-token
 * arrays: at temperature 1 the weights are the log Z terms themselves (the same doubles), so
 * each logit's exp runs once.
 */
export function sampleToken(logits: Float32Array, p: SamplingParams, position: number): { id: number; logprob: number } {
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
  if (expScratch.length < n) expScratch = new Float64Array(n);
  const ex = expScratch;
  let z = 0;
  for (let i = 0; i < n; i++) z += ex[i] = Math.exp(logits[i] - max);
  const logZ = max + Math.log(z);
  if (p.temperature <= 0) {
    const id = argmax(logits);
    return { id, logprob: logits[id] - logZ };
  }
  const k = p.topK > 0 ? Math.min(p.topK, n) : n;
  const cand = n > 1 << 21 ? Int32Array.from(descendingOrder(logits)) : null;
  const keys = cand ? null : sortedKeys(logits);
  const idAt = (j: number) => (cand ? cand[j] : keys![j] % 2097152);
  if (weightScratch.length < k) weightScratch = new Float64Array(k);
  const w = weightScratch;
  let total = 0;
  for (let j = 0; j < k; j++) {
    const i = idAt(j);
    w[j] = p.temperature === 1 ? ex[i] : Math.exp((logits[i] - max) / p.temperature);
    total += w[j];
  }
  let keep = k;
  if (p.topP < 1) {
    let cum = 0;
    for (let j = 0; j < k; j++) {
      cum += w[j] / total;
      if (cum >= p.topP) {
        keep = j + 1;
        break;
      }
    }
  }
  const rng = RngStream.of(p.seed, 'sample', position);
  const id = idAt(rng.categorical(w.subarray(0, keep)));
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

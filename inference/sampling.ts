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
 * gives (-0 ties +0), found with a radix sort of the logits' bits (sortedIds) instead of a
 * comparator sort.
 */
export function descendingOrder(logits: Float32Array): number[] {
  const n = logits.length;
  return Array.from(sortedIds(logits).subarray(0, n));
}

let keyA = new Uint32Array(0);
let keyB = new Uint32Array(0);
let idA = new Int32Array(0);
let idB = new Int32Array(0);
/** Bucket counts of the three radix digits (11, 11 and 10 bits). */
const counts = new Int32Array(3 * 2048);

/**
 * descendingOrder's ids in a buffer reused by the next call: a stable LSD radix sort (three
 * digits of 11, 11 and 10 bits, counted in one pass) of each logit's float32 bits mapped so that
 * larger logits come first; ids start ascending and every pass is stable, so ties stay by
 * ascending id.
 */
function sortedIds(logits: Float32Array): Int32Array {
  const n = logits.length;
  if (keyA.length < n) {
    keyA = new Uint32Array(n);
    keyB = new Uint32Array(n);
    idA = new Int32Array(n);
    idB = new Int32Array(n);
  }
  let k = keyA;
  let id = idA;
  let k2 = keyB;
  let id2 = idB;
  counts.fill(0);
  for (let i = 0; i < n; i++) {
    f32[0] = logits[i] + 0; // -0 -> +0
    const u = u32[0];
    const key = u & 0x80000000 ? u : ~(u | 0x80000000) >>> 0; // ascending with -logit
    k[i] = key;
    id[i] = i;
    counts[key & 2047]++;
    counts[2048 + ((key >>> 11) & 2047)]++;
    counts[4096 + (key >>> 22)]++;
  }
  for (let d = 0; d < 3; d++) {
    const shift = 11 * d;
    const base = 2048 * d;
    if (n === 0 || counts[base + ((k[0] >>> shift) & 2047)] === n) continue; // one bucket: the pass keeps the order
    let sum = 0;
    for (let b = base; b < base + 2048; b++) {
      const c = counts[b];
      counts[b] = sum;
      sum += c;
    }
    for (let i = 0; i < n; i++) {
      const key = k[i];
      const at = counts[base + ((key >>> shift) & 2047)]++;
      k2[at] = key;
      id2[at] = id[i];
    }
    const tk = k;
    k = k2;
    k2 = tk;
    const ti = id;
    id = id2;
    id2 = ti;
  }
  return id;
}

let expScratch = new Float64Array(0);
let weightScratch = new Float64Array(0);

/**
 * One draw. The numbers are those of the plain formulation (e^(z−max) summed in id order for log
 * Z; the candidates' weights e^((z−max)/T) in descending order, their sum from the first; top-p
 * by the running share; a categorical draw over the kept prefix), computed without per-token
 * arrays (the ids sorted in place): at temperature 1 the weights are the log Z terms themselves (the same doubles), so
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
  const ids = sortedIds(logits);
  if (weightScratch.length < k) weightScratch = new Float64Array(k);
  const w = weightScratch;
  let total = 0;
  for (let j = 0; j < k; j++) {
    const i = ids[j];
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
  const id = ids[rng.categorical(w.subarray(0, keep))];
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

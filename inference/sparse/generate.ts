/**
 * Batch-1 generation and held-out perplexity on the plain-JS decoder. The prompt is run
 * densely (prefill: CHESS targets the memory-bound decode), then each new token decodes with
 * the sparsity plan. Mirrors inference/generate.ts (stop ids, stop strings, sampling seeds).
 */
import { acceptToken, GenerateOptions, GenerateResult } from '../generate';
import { sampleToken } from '../sampling';
import { HostKvCache, SparseDecoder } from './decode';
import { SparsityPlan } from './thresholds';

export function sparseGenerate(dec: SparseDecoder, plan: SparsityPlan | null, prompt: number[], o: GenerateOptions): GenerateResult {
  if (prompt.length === 0) throw new Error('empty prompt');
  const c = dec.c;
  const cache = new HostKvCache(c);
  const out: number[] = [];
  const logprobs: number[] = [];
  let logits: Float32Array = new Float32Array(0);
  for (const id of prompt) logits = dec.step(id, cache, null);
  let finish: 'stop' | 'length' = 'length';
  const rows0 = dec.counters.ffnExpertRows;
  const tok0 = dec.counters.tokens;
  while (out.length < o.maxTokens) {
    const { id, logprob } = sampleToken(logits, o, cache.length);
    if (acceptToken(o, out, logprobs, id, logprob) === 'stop') {
      finish = 'stop';
      break;
    }
    if (out.length >= o.maxTokens || cache.length >= c.maxSeqLen) break;
    logits = dec.step(id, cache, plan);
  }
  const steps = dec.counters.tokens - tok0;
  const ffnExpertsPerToken = steps ? (dec.counters.ffnExpertRows - rows0) / steps / c.nLayers : 0;
  return { ids: out, logprobs, finishReason: finish, ffnExpertsPerToken };
}

/**
 * Mean next-token negative log-likelihood over windows, every position decoded with the plan
 * (teacher forcing through the decode path, so the sparsity seen is what generation sees).
 */
export function windowNll(dec: SparseDecoder, plan: SparsityPlan | null, windows: Int32Array[]): { nll: number; tokens: number } {
  let sum = 0;
  let n = 0;
  for (const w of windows) {
    const cache = new HostKvCache(dec.c);
    for (let t = 0; t + 1 < w.length; t++) {
      const z = dec.step(w[t], cache, plan);
      let max = -Infinity;
      for (let i = 0; i < z.length; i++) if (z[i] > max) max = z[i];
      let s = 0;
      for (let i = 0; i < z.length; i++) s += Math.exp(z[i] - max);
      sum += max + Math.log(s) - z[w[t + 1]];
      n++;
    }
  }
  return { nll: n ? sum / n : 0, tokens: n };
}

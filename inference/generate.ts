/**
 * Single-sequence generation with a KV cache: prefill the prompt once, then decode one token
 * per step reusing cached keys/values. Zero experts are skipped by the MoE layer itself.
 * `step` is the tfjs forward over a KV cache (model/transformer); `generate` runs on the
 * engine's batched host decode path.
 */
import * as tf from '@tensorflow/tfjs';
import { tidyKeep } from '../core/tfjsInternals';
import { forward } from '../model/transformer';
import { AttnCache } from '../model/attention';
import { ServingModel } from './loadModel';
import { SamplingParams, sampleToken } from './sampling';
import { hostDecoder, HostSequence } from './hostDecode';

export interface GenerateOptions extends SamplingParams {
  maxTokens: number;
  /** Stop when one of these token ids is produced (not emitted). */
  stopIds?: number[];
  /** Stop when the decoded text ends with one of these strings. */
  stopStrings?: string[];
  decode?: (ids: number[]) => string;
  onToken?: (id: number, logprob: number) => void | boolean;
}

/**
 * Applies a sampled token to a generation: a stop id ends it unemitted; otherwise the token is
 * appended, and the callback or a stop string may end it. Shared by every decode loop.
 */
export function acceptToken(o: GenerateOptions, out: number[], logprobs: number[], id: number, logprob: number): 'stop' | 'go' {
  if (o.stopIds?.includes(id)) return 'stop';
  out.push(id);
  logprobs.push(logprob);
  if (o.onToken?.(id, logprob) === false) return 'stop';
  if (o.stopStrings?.length && o.decode) {
    const text = o.decode(out);
    if (o.stopStrings.some((s) => s && text.endsWith(s))) return 'stop';
  }
  return 'go';
}

export interface GenerateResult {
  ids: number[];
  logprobs: number[];
  finishReason: 'stop' | 'length';
  ffnExpertsPerToken: number;
}

/** Runs the model over `ids` at positions past..past+n−1, returning last-position logits. */
export interface StepOut {
  logits: tf.Tensor2D;
  caches: [AttnCache, AttnCache][];
  ffn: tf.Scalar;
}

export function step(m: ServingModel, ids: number[], past: number, caches: [AttnCache, AttnCache][] | undefined): StepOut {
  // tidy keeps the returned tensors (caches included) and frees every intermediate.
  return tidyKeep((): StepOut => {
    const f = forward(m.config, (n) => m.store.get(n), Int32Array.from(ids), 1, ids.length, {
      biases: m.biases,
      caches,
      pastLength: past,
    });
    const V = m.config.vocabSize;
    const last = tf.slice(f.logits!, [ids.length - 1, 0], [1, V]);
    const ffn = f.moe.reduce((a, s) => a + s.stats.ffnRows / s.stats.tokens, 0) / f.moe.length;
    return { logits: last as tf.Tensor2D, caches: f.caches, ffn: tf.scalar(ffn) };
  });
}

/**
 * Greedy/sampled generation on the batched host decode path (hostDecode.ts), the same path the
 * engine decodes on: the prompt runs as one batch of rows, then one row per step. So a request
 * alone in the engine, or inside any batch, gives these tokens and logprobs bit for bit.
 */
export function generate(m: ServingModel, prompt: number[], o: GenerateOptions): GenerateResult {
  if (prompt.length === 0) throw new Error('empty prompt');
  const dec = hostDecoder(m);
  const L = m.config.nLayers;
  const out: number[] = [];
  const logprobs: number[] = [];
  const seq = new HostSequence(m.config, prompt.length + o.maxTokens);
  let input = prompt;
  let finish: 'stop' | 'length' = 'length';
  let ffnSum = 0;
  let ffnN = 0;
  while (out.length < o.maxTokens && seq.length + input.length <= m.config.maxSeqLen) {
    const rows = input.map((token, i) => ({ seq, token, pos: seq.length + i }));
    const r = dec.run(rows, rows.map((_, i) => i === rows.length - 1));
    ffnSum += r.ffnRows.reduce((a, x) => a + x, 0) / (rows.length * L);
    ffnN++;
    const { id, logprob } = sampleToken(r.logits, o, seq.length);
    if (acceptToken(o, out, logprobs, id, logprob) === 'stop') {
      finish = 'stop';
      break;
    }
    input = [id];
  }
  return { ids: out, logprobs, finishReason: finish, ffnExpertsPerToken: ffnN ? ffnSum / ffnN : 0 };
}

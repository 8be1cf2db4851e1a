/**
 * The decoder-only model: embeddings -> L LongCat-Flash layers -> RMSNorm -> untied lm_head.
 * `forward` serves training (full sequences) and inference (with per-layer KV caches and a
 * position offset).
 */
import * as tf from '@tensorflow/tfjs';
import { ModelConfig } from './config';
import { AttnCache, AttnContext, causalMask, ParamGetter, ropeDim, segmentCausalMask } from './attention';
import { gatherRows, rmsNorm, ropeTables } from './ops';
import { scmoeLayer, MoeFn } from './scmoeLayer';
import { MoeOutput } from './moe/layer';

export interface ForwardOptions {
  /** Expert biases, one Float32Array(N+Z) per layer. */
  biases: Float32Array[];
  ropeBase?: number;
  /** Segment ids [B·S] to block attention across packed documents. */
  segmentIds?: Int32Array;
  /** Per-layer [attn0, attn1] caches of past keys/values (inference). */
  caches?: [AttnCache, AttnCache][];
  /** Number of cached positions (all rows share it). */
  pastLength?: number;
  balance?: boolean;
  /** Whether to compute logits (training computes them; hidden-state probes may not). */
  logits?: boolean;
  /** Per-layer MoE override (expert parallelism). */
  moe?: (layer: number) => MoeFn | undefined;
}

export interface ForwardResult {
  /** Last-layer hidden states before the final norm [B·S, d] (hidden z-loss reads these). */
  hidden: tf.Tensor2D;
  logits?: tf.Tensor2D;
  moe: MoeOutput[];
  caches: [AttnCache, AttnCache][];
}

/** The attention context of a forward over B rows of S positions (RoPE tables, causal or segment mask). */
export function forwardContext(c: ModelConfig, B: number, S: number, opts: Pick<ForwardOptions, 'pastLength' | 'ropeBase' | 'segmentIds'>): AttnContext {
  const past = opts.pastLength ?? 0;
  const rope = ropeTables(S, ropeDim(c), opts.ropeBase ?? c.ropeBase, past);
  const half = ropeDim(c) / 2;
  return {
    B,
    S,
    cos: tf.tensor2d(rope.cos, [S, half]),
    sin: tf.tensor2d(rope.sin, [S, half]),
    mask: opts.segmentIds ? segmentCausalMask(opts.segmentIds, B, S) : S > 1 || past > 0 ? causalMask(S, past) : null,
  };
}

export function forward(c: ModelConfig, P: ParamGetter, tokens: Int32Array, B: number, S: number, opts: ForwardOptions): ForwardResult {
  const ctx = forwardContext(c, B, S, opts);
  let x = gatherRows(P('model.embed_tokens.weight') as tf.Tensor2D, tokens);
  const moe: MoeOutput[] = [];
  const caches: [AttnCache, AttnCache][] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const r = scmoeLayer(c, P, l, x, ctx, opts.biases[l], { caches: opts.caches?.[l], balance: opts.balance, moe: opts.moe?.(l) });
    x = r.out;
    moe.push(r.moe);
    caches.push(r.caches);
  }
  const result: ForwardResult = { hidden: x, moe, caches };
  if (opts.logits !== false) result.logits = headLogits(c, P, x);
  return result;
}

/** Final RMSNorm and the untied lm_head on last-layer hidden states [rows, d]. */
export function headLogits(c: ModelConfig, P: ParamGetter, x: tf.Tensor2D): tf.Tensor2D {
  const h = rmsNorm(x, P('model.norm.weight'), c.rmsEps) as tf.Tensor2D;
  return tf.matMul(h, P('lm_head.weight') as tf.Tensor2D) as tf.Tensor2D;
}

/** Zero expert biases for a fresh model. */
export function initialBiases(c: ModelConfig): Float32Array[] {
  return Array.from({ length: c.nLayers }, () => new Float32Array(c.moe.nExperts + c.moe.nZeroExperts));
}

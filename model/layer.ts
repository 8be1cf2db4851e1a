/**
 * The LongCat-Flash layer's dataflow, written once (DESIGN.md section 2). ScMoE:
 *   h1 = x + Attn0(RMS(x));  u = RMS(h1);  m = MoE(u)   (shortcut: needed only at the end)
 *   h2 = h1 + FFN0(u);  h3 = h2 + Attn1(RMS(h2));  y = h3 + FFN1(RMS(h3)) + m
 * Sequential (the comparison baseline): the MoE takes FFN0's place, h2 = h1 + MoE(u), and y
 * has no shortcut term.
 *
 * The dataflow is generic over the value type `T` (tfjs tensors for training, the serving
 * engine and A2ATS; host Float32Arrays for the batch-1 CHESS decoder) and takes typed hooks for
 * what differs between those paths: attention (full sequence, KV cache, per-row decode cache,
 * A2ATS retrieval), dense FFN (dense or CHESS-sparse), and MoE (local, or expert-parallel with
 * its communication in flight). Every path calls `runLayer`; the order in which it calls the
 * hooks (Attn0, MoE, FFN0, Attn1, FFN1) is part of the contract: observers, counters and the
 * expert-parallel overlap depend on it.
 */
import { ModelConfig } from './config';

export type LayerType = ModelConfig['layerType'];

/** The four RMSNorms of a layer, by their parameter names. */
export type LayerNormName = 'input_layernorm.0' | 'post_attention_layernorm.0' | 'input_layernorm.1' | 'post_attention_layernorm.1';

/** A MoE result: at least its output rows (paths add routing, statistics, balance loss). */
export interface MoeResult<T> {
  out: T;
}

/**
 * A MoE whose communication is still in flight (expert parallelism). ScMoE calls `mid()` after
 * FFN0 and `finish()` after FFN1, so dispatch/combine overlap the dense work; the sequential
 * layer calls `finish()` at once.
 */
export interface PendingMoe<R> {
  pending: true;
  mid(): void;
  finish(): R;
}

export function isPendingMoe<R>(r: R | PendingMoe<R>): r is PendingMoe<R> {
  return (r as PendingMoe<R>).pending === true;
}

/** What differs between the paths that run a layer. */
export interface LayerHooks<T, R extends MoeResult<T>> {
  /** RMSNorm with the layer's weight `name`. */
  norm(x: T, name: LayerNormName): T;
  /** Attention block `block` (0 or 1) on its normalised input. */
  attention(x: T, block: 0 | 1): T;
  /** Dense SwiGLU FFN `mlps.{j}` (dense or activation-sparse). */
  ffn(x: T, j: 0 | 1): T;
  /** The MoE on u = RMS(h1): done at once, or pending (expert parallelism). */
  moe(u: T): R | PendingMoe<R>;
  /** Residual add a + b (a path may add in place into a). */
  add(a: T, b: T): T;
}

export interface LayerResult<T, R> {
  out: T;
  moe: R;
}

export function runLayer<T, R extends MoeResult<T>>(type: LayerType, x: T, h: LayerHooks<T, R>): LayerResult<T, R> {
  const scmoe = type === 'scmoe';
  const h1 = h.add(x, h.attention(h.norm(x, 'input_layernorm.0'), 0));
  const u = h.norm(h1, 'post_attention_layernorm.0');
  const started = h.moe(u);
  // A pending (expert-parallel) MoE is resolved immediately by the sequential layer, and after
  // FFN1 by ScMoE (dispatch overlaps FFN0, expert compute + combine overlap Attn1 and FFN1).
  const pending = isPendingMoe(started) ? started : null;
  let moe: R | null = pending ? (scmoe ? null : pending.finish()) : (started as R);
  const h2 = scmoe ? h.add(h1, h.ffn(u, 0)) : h.add(h1, moe!.out);
  if (!moe) pending!.mid();
  const h3 = h.add(h2, h.attention(h.norm(h2, 'input_layernorm.1'), 1));
  let y = h.add(h3, h.ffn(h.norm(h3, 'post_attention_layernorm.1'), 1));
  if (!moe) moe = pending!.finish();
  if (scmoe) y = h.add(y, moe.out);
  return { out: y, moe };
}

/**
 * One LongCat-Flash layer (DESIGN.md section 2). ScMoE:
 *   h1 = x + Attn0(RMS(x));  u = RMS(h1);  m = MoE(u)   (shortcut: needed only at the end)
 *   h2 = h1 + FFN0(u);  h3 = h2 + Attn1(RMS(h2));  y = h3 + FFN1(RMS(h3)) + m
 * Sequential (the comparison baseline): the MoE takes FFN0's place, h2 = h1 + MoE(u), and y
 * has no shortcut term.
 */
import * as tf from '@tensorflow/tfjs';
import { ModelConfig } from './config';
import { attention, AttnCache, AttnContext, ParamGetter } from './attention';
import { rmsNorm, swiglu } from './ops';
import { moeLayer, MoeOutput } from './moe/layer';

export interface LayerOutput {
  out: tf.Tensor2D;
  moe: MoeOutput;
  caches: [AttnCache, AttnCache];
}

/** What a MoE override needs besides u: the layer's parameters, bias and batch shape. */
export interface MoeCall {
  c: ModelConfig;
  P: ParamGetter;
  /** Parameter prefix of the MoE block, e.g. `model.layers.0.mlp`. */
  prefix: string;
  bias: Float32Array;
  shape: { B: number; S: number };
  balance?: boolean;
}

/**
 * A MoE whose communication is still in flight (expert parallelism). ScMoE calls `mid()` after
 * FFN0 and `finish()` after FFN1, so dispatch/combine overlap the dense work; the sequential
 * layer calls `finish()` at once.
 */
export interface PendingMoe {
  pending: true;
  mid(): void;
  finish(): MoeOutput;
}

/** How a layer obtains its MoE output; expert parallelism substitutes a distributed version. */
export type MoeFn = (u: tf.Tensor2D, call: MoeCall) => MoeOutput | PendingMoe;

function isPending(r: MoeOutput | PendingMoe): r is PendingMoe {
  return (r as PendingMoe).pending === true;
}

export function scmoeLayer(
  c: ModelConfig,
  P: ParamGetter,
  l: number,
  x: tf.Tensor2D,
  ctx: AttnContext,
  bias: Float32Array,
  opts: { caches?: [AttnCache, AttnCache]; balance?: boolean; moe?: MoeFn } = {},
): LayerOutput {
  const p = `model.layers.${l}`;
  const norm = (t: tf.Tensor, name: string) => rmsNorm(t, P(`${p}.${name}.weight`), c.rmsEps) as tf.Tensor2D;
  const ffn = (t: tf.Tensor2D, j: number) =>
    swiglu(t, P(`${p}.mlps.${j}.gate_proj.weight`), P(`${p}.mlps.${j}.up_proj.weight`), P(`${p}.mlps.${j}.down_proj.weight`));
  const runMoe: MoeFn = opts.moe ?? ((u) => moeLayer(c, P, `${p}.mlp`, u, bias, ctx, { balance: opts.balance }));

  const a0 = attention(c, P, `${p}.self_attn.0`, norm(x, 'input_layernorm.0'), ctx, opts.caches?.[0]);
  const h1 = tf.add(x, a0.out) as tf.Tensor2D;
  const u = norm(h1, 'post_attention_layernorm.0');
  const started = runMoe(u, { c, P, prefix: `${p}.mlp`, bias, shape: ctx, balance: opts.balance });
  // A pending (expert-parallel) MoE is resolved immediately by the sequential layer, and after
  // FFN1 by ScMoE (dispatch overlaps FFN0, expert compute + combine overlap Attn1 and FFN1).
  let moe: MoeOutput | null = isPending(started) ? (c.layerType === 'scmoe' ? null : started.finish()) : started;
  const h2 = (c.layerType === 'scmoe' ? tf.add(h1, ffn(u, 0)) : tf.add(h1, moe!.out)) as tf.Tensor2D;
  if (!moe) (started as PendingMoe).mid();
  const a1 = attention(c, P, `${p}.self_attn.1`, norm(h2, 'input_layernorm.1'), ctx, opts.caches?.[1]);
  const h3 = tf.add(h2, a1.out) as tf.Tensor2D;
  let y = tf.add(h3, ffn(norm(h3, 'post_attention_layernorm.1'), 1)) as tf.Tensor2D;
  if (!moe) moe = (started as PendingMoe).finish();
  if (c.layerType === 'scmoe') y = tf.add(y, moe.out) as tf.Tensor2D;
  return { out: y, moe, caches: [a0.cache, a1.cache] };
}

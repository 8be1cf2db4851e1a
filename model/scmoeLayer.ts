/**
 * The LongCat-Flash layer on tfjs tensors: model/layer.ts's dataflow with the layer's RMSNorms,
 * dense SwiGLU FFNs and residual adds bound to tensors. `tensorLayer` takes the attention and
 * MoE hooks (training attention with an optional KV cache, the serving engine's per-row decode
 * attention, A2ATS host attention; local or expert-parallel MoE); `scmoeLayer` is the training
 * and full-sequence forward (model/attention.ts, local MoE unless overridden).
 */
import * as tf from '@tensorflow/tfjs';
import { ModelConfig } from './config';
import { attention, AttnCache, AttnContext, ParamGetter } from './attention';
import { rmsNorm, swiglu } from './ops';
import { moeLayer, MoeOutput } from './moe/layer';
import { LayerResult, PendingMoe as PendingMoeOf, runLayer } from './layer';

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

/** A tensor MoE whose expert-parallel communication is still in flight (model/layer.ts). */
export type PendingMoe = PendingMoeOf<MoeOutput>;

/** How a layer obtains its MoE output; expert parallelism substitutes a distributed version. */
export type MoeFn = (u: tf.Tensor2D, call: MoeCall) => MoeOutput | PendingMoe;

/** Attention block `block` of the layer (parameter prefix `prefix`) on its normalised input. */
export type AttentionHook = (x: tf.Tensor2D, block: 0 | 1, prefix: string) => tf.Tensor2D;

/** MoE hook of `tensorLayer`: `prefix` is the MoE block's parameter prefix. */
export type TensorMoeHook = (u: tf.Tensor2D, prefix: string) => MoeOutput | PendingMoe;

/** Layer l on x [rows, d] with the path's attention and MoE. */
export function tensorLayer(
  c: ModelConfig,
  P: ParamGetter,
  l: number,
  x: tf.Tensor2D,
  hooks: { attention: AttentionHook; moe: TensorMoeHook },
): LayerResult<tf.Tensor2D, MoeOutput> {
  const p = `model.layers.${l}`;
  return runLayer<tf.Tensor2D, MoeOutput>(c.layerType, x, {
    norm: (t, name) => rmsNorm(t, P(`${p}.${name}.weight`), c.rmsEps) as tf.Tensor2D,
    attention: (t, j) => hooks.attention(t, j, `${p}.self_attn.${j}`),
    ffn: (t, j) => swiglu(t, P(`${p}.mlps.${j}.gate_proj.weight`), P(`${p}.mlps.${j}.up_proj.weight`), P(`${p}.mlps.${j}.down_proj.weight`)),
    moe: (u) => hooks.moe(u, `${p}.mlp`),
    add: (a, b) => tf.add(a, b) as tf.Tensor2D,
  });
}

/** Layer l over full sequences (training, prefill, KV-cached generation). */
export function scmoeLayer(
  c: ModelConfig,
  P: ParamGetter,
  l: number,
  x: tf.Tensor2D,
  ctx: AttnContext,
  bias: Float32Array,
  opts: { caches?: [AttnCache, AttnCache]; balance?: boolean; moe?: MoeFn } = {},
): LayerOutput {
  const caches: AttnCache[] = [];
  const r = tensorLayer(c, P, l, x, {
    attention: (t, j, prefix) => {
      const a = attention(c, P, prefix, t, ctx, opts.caches?.[j]);
      caches[j] = a.cache;
      return a.out;
    },
    moe: (u, prefix) =>
      opts.moe ? opts.moe(u, { c, P, prefix, bias, shape: ctx, balance: opts.balance }) : moeLayer(c, P, prefix, u, bias, ctx, { balance: opts.balance }),
  });
  return { out: r.out, moe: r.moe, caches: [caches[0], caches[1]] };
}

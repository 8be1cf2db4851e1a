/**
 * Attention blocks: MHA/GQA and MLA as in LongCat-Flash (DESIGN.md section 2). Inputs are
 * 2-D [B·S, d]; an optional cache of past keys/values (already RoPE'd, per head) supports
 * incremental decoding. MLA caches expanded per-head keys/values here, not the latent: simpler
 * and exact; the latent cache is an inference-memory optimisation.
 */
import * as tf from '@tensorflow/tfjs';
import { latentNormEps, ModelConfig } from './config';
import { applyRope, concatShared, fusedAttention, hasFusedAttention, rmsNorm, ropeTail, softmaxLast } from './ops';

export type ParamGetter = (name: string) => tf.Tensor;

export interface AttnCache {
  k: tf.Tensor4D; // [B, H, Sp, dk]
  v: tf.Tensor4D; // [B, H, Sp, dv]
}

export interface AttnContext {
  B: number;
  S: number;
  /** RoPE tables for the S new positions: [S, dr/2] or per row [B, S, dr/2]. */
  cos: tf.Tensor;
  sin: tf.Tensor;
  /** Additive mask broadcastable to [B, H, S, Sp+S] (0 allowed, −1e9 masked), or null. */
  mask: tf.Tensor | null;
}

const NEG = -1e9;

/** Additive causal mask [S, Sp+S]: query i (at position Sp+i) sees keys j ≤ Sp+i. */
export function causalMask(S: number, past = 0): tf.Tensor2D {
  const Sk = past + S;
  const m = new Float32Array(S * Sk);
  for (let i = 0; i < S; i++) for (let j = 0; j < Sk; j++) m[i * Sk + j] = j <= past + i ? 0 : NEG;
  return tf.tensor2d(m, [S, Sk]);
}

/** Causal mask that also blocks attention across documents: [B, 1, S, S] from segment ids. */
export function segmentCausalMask(segmentIds: Int32Array, B: number, S: number): tf.Tensor4D {
  const m = new Float32Array(B * S * S);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < S; i++) {
      for (let j = 0; j < S; j++) {
        const ok = j <= i && segmentIds[b * S + i] === segmentIds[b * S + j];
        m[(b * S + i) * S + j] = ok ? 0 : NEG;
      }
    }
  }
  return tf.tensor4d(m, [B, 1, S, S]);
}

function sdpa(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, scale: number, mask: tf.Tensor | null): tf.Tensor4D {
  let scores = tf.mul(tf.matMul(q, k, false, true), scale);
  if (mask) scores = tf.add(scores, mask);
  return tf.matMul(softmaxLast(scores), v) as tf.Tensor4D;
}

function withCache(k: tf.Tensor4D, v: tf.Tensor4D, cache?: AttnCache): AttnCache {
  if (!cache) return { k, v };
  return { k: tf.concat([cache.k, k], 2) as tf.Tensor4D, v: tf.concat([cache.v, v], 2) as tf.Tensor4D };
}

function repeatKv(x: tf.Tensor4D, groups: number): tf.Tensor4D {
  if (groups === 1) return x;
  const [B, Hk, S, D] = x.shape;
  // Tile in rank 4: tfjs has no Tile gradient for rank-5 tensors.
  return tf.reshape(tf.tile(tf.reshape(x, [B, Hk, 1, S * D]), [1, 1, groups, 1]), [B, Hk * groups, S, D]) as tf.Tensor4D;
}

/** Per-token queries, keys and values of one attention block, token-major [B, S, heads, dim]. */
export interface QkvProjections {
  /** [B, S, nHeads, dq]; MLA: [q_nope, q_rope]. */
  q: tf.Tensor4D;
  /** [B, S, nKvHeads, dk]; MLA: per-head [k_nope, shared k_rope] (one KV head per query head). */
  k: tf.Tensor4D;
  /** [B, S, nKvHeads, dv]. */
  v: tf.Tensor4D;
}

/**
 * The projections of one attention block, shared by every path that attends (training and
 * generation here, the engine's per-row decode, A2ATS host attention): GQA q/k/v, or MLA's query
 * latent (q = Wqb·RMS(Wqa·h)·sqrt(d_model/q_lora)) and KV latent
 * (c = RMS(Wkva·h)[:kv_lora]·sqrt(d_model/kv_lora), expanded per head by Wkvb, plus one shared
 * rope key). `rope`: RoPE tables ([S, dr/2], or per row [B, S, dr/2]) applied to q and k; null
 * returns them before RoPE.
 */
export function projectQkv(c: ModelConfig, P: ParamGetter, p: string, x: tf.Tensor2D, B: number, S: number, rope: { cos: tf.Tensor; sin: tf.Tensor } | null): QkvProjections {
  const a = c.attention;
  const r = (t: tf.Tensor4D) => (rope ? applyRope(t, rope.cos, rope.sin) : t);
  if (a.type === 'gqa') {
    const proj = (w: string, H: number) => tf.reshape(tf.matMul(x, P(`${p}.${w}.weight`) as tf.Tensor2D), [B, S, H, a.headDim]) as tf.Tensor4D;
    const q = r(proj('q_proj', a.nHeads));
    const k = r(proj('k_proj', a.nKvHeads));
    return { q, k, v: proj('v_proj', a.nKvHeads) };
  }
  const H = a.nHeads;
  const dn = a.nopeHeadDim;
  const dr = a.ropeHeadDim;
  const qa = rmsNorm(tf.matMul(x, P(`${p}.q_a_proj.weight`) as tf.Tensor2D), P(`${p}.q_a_layernorm.weight`), latentNormEps(c)) as tf.Tensor2D;
  const q = tf.reshape(tf.mul(tf.matMul(qa, P(`${p}.q_b_proj.weight`) as tf.Tensor2D), Math.sqrt(c.dModel / a.qLoraRank)), [B, S, H, dn + dr]) as tf.Tensor4D;
  // The rope part of each query head (a split, whose gradient is one concat, where no fused kernel).
  const qAll = rope ? ropeTail(q, dn, rope.cos, rope.sin) : q;
  const kva = tf.matMul(x, P(`${p}.kv_a_proj_with_mqa.weight`) as tf.Tensor2D);
  const [kvLat, kPe] = tf.split(kva, [a.kvLoraRank, dr], 1);
  const latent = tf.mul(rmsNorm(kvLat, P(`${p}.kv_a_layernorm.weight`), latentNormEps(c)), Math.sqrt(c.dModel / a.kvLoraRank)) as tf.Tensor2D;
  const kRope = r(tf.reshape(kPe, [B, S, 1, dr]) as tf.Tensor4D);
  const kvb = tf.reshape(tf.matMul(latent, P(`${p}.kv_b_proj.weight`) as tf.Tensor2D), [B, S, H, dn + a.vHeadDim]);
  const [kNope, v] = tf.split(kvb, [dn, a.vHeadDim], 3);
  const k = concatShared(kNope as tf.Tensor4D, kRope);
  return { q: qAll, k, v: v as tf.Tensor4D };
}

/** Softmax scale 1/sqrt(dq) and query heads per KV head of the block. */
export function attentionShape(c: ModelConfig): { scale: number; groups: number; nHeads: number; dv: number } {
  const a = c.attention;
  return a.type === 'gqa'
    ? { scale: 1 / Math.sqrt(a.headDim), groups: a.nHeads / a.nKvHeads, nHeads: a.nHeads, dv: a.headDim }
    : { scale: 1 / Math.sqrt(a.nopeHeadDim + a.ropeHeadDim), groups: 1, nHeads: a.nHeads, dv: a.vHeadDim };
}

const toHeadMajor = (t: tf.Tensor4D) => tf.transpose(t, [0, 2, 1, 3]) as tf.Tensor4D;

/** One attention block (without residual or pre-norm). */
export function attention(c: ModelConfig, P: ParamGetter, prefix: string, x: tf.Tensor2D, ctx: AttnContext, cache?: AttnCache): { out: tf.Tensor2D; cache: AttnCache } {
  const { B, S } = ctx;
  const { q, k, v } = projectQkv(c, P, prefix, x, B, S, ctx);
  const { scale, groups, nHeads, dv } = attentionShape(c);
  if (!cache && hasFusedAttention()) {
    // One kernel each way on token-major q, k, v (webgpu); the head-major k, v are only the cache.
    const o = fusedAttention(q, k, v, scale, ctx.mask);
    const flatO = tf.reshape(o, [B * S, nHeads * dv]) as tf.Tensor2D;
    return { out: tf.matMul(flatO, P(`${prefix}.o_proj.weight`) as tf.Tensor2D) as tf.Tensor2D, cache: { k: toHeadMajor(k), v: toHeadMajor(v) } };
  }
  // (The transposes keep the op order the tape has always had: MLA's query first, GQA's last.)
  const qMla = c.attention.type === 'mla' ? toHeadMajor(q) : null;
  const kv = withCache(toHeadMajor(k), toHeadMajor(v), cache);
  const o = sdpa(qMla ?? toHeadMajor(q), repeatKv(kv.k, groups), repeatKv(kv.v, groups), scale, ctx.mask);
  const flat = tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [B * S, nHeads * dv]) as tf.Tensor2D;
  return { out: tf.matMul(flat, P(`${prefix}.o_proj.weight`) as tf.Tensor2D) as tf.Tensor2D, cache: kv };
}

/** Head dimension that RoPE rotates. */
export function ropeDim(c: ModelConfig): number {
  return c.attention.type === 'mla' ? c.attention.ropeHeadDim : c.attention.headDim;
}

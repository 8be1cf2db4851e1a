/**
 * Decode-time attention for a batch of sequences with different cache lengths (S = 1 per row).
 * The projections, norms and RoPE run once on the [B, d] batch; only the cached part
 * (append to the row's cache, QK^T, softmax, PV) runs per row, against that row's own cache.
 *
 * The math mirrors model/attention.ts op for op (MLA: q/kv latents, scales, shared rope key;
 * GQA: repeated KV heads), so each row is bitwise equal to decoding it alone: matMul rows,
 * element-wise ops and last-axis reductions do not depend on the other rows. A padded batch
 * attention was measured and rejected: tfjs sums the key axis of a batched matMul in blocks,
 * so moving the new key behind the padding changes the rounding (max |Δlogit| 6e-7 over a
 * batch of 12 on wasm), and on wasm it was also 2.6x slower (scalar batched matMul over the
 * padded length, plus pad/copy). spec/inference checks the equality against generate().
 */
import * as tf from '@tensorflow/tfjs';
import { latentNormEps, ModelConfig } from '../model/config';
import { AttnCache, ParamGetter } from '../model/attention';
import { applyRope, rmsNorm, softmaxLast } from '../model/ops';

function sdpa(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, scale: number): tf.Tensor4D {
  const scores = tf.mul(tf.matMul(q, k, false, true), scale);
  return tf.matMul(softmaxLast(scores), v) as tf.Tensor4D;
}

function repeatKv(x: tf.Tensor4D, groups: number): tf.Tensor4D {
  if (groups === 1) return x;
  const [B, Hk, S, D] = x.shape;
  return tf.reshape(tf.tile(tf.reshape(x, [B, Hk, 1, S * D]), [1, 1, groups, 1]), [B, Hk * groups, S, D]) as tf.Tensor4D;
}

function row(t: tf.Tensor4D, b: number, B: number): tf.Tensor4D {
  if (B === 1) return t;
  const [, H, S, D] = t.shape;
  return tf.slice(t, [b, 0, 0, 0], [1, H, S, D]);
}

/**
 * Per-row cached attention over head-major q [B, H, 1, dq], k [B, Hk, 1, dk], v [B, Hk, 1, dv].
 * Returns o [B, H, 1, dv] and each row's grown cache.
 */
function cachedRows(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, caches: AttnCache[], scale: number, groups: number): { o: tf.Tensor4D; caches: AttnCache[] } {
  const B = q.shape[0];
  const grown: AttnCache[] = [];
  const outs: tf.Tensor4D[] = [];
  for (let b = 0; b < B; b++) {
    const kv: AttnCache = { k: tf.concat([caches[b].k, row(k, b, B)], 2) as tf.Tensor4D, v: tf.concat([caches[b].v, row(v, b, B)], 2) as tf.Tensor4D };
    grown.push(kv);
    outs.push(sdpa(row(q, b, B), repeatKv(kv.k, groups), repeatKv(kv.v, groups), scale));
  }
  return { o: B === 1 ? outs[0] : (tf.concat(outs, 0) as tf.Tensor4D), caches: grown };
}

/** One attention block for B decode rows; cos/sin are per-row RoPE tables [B, 1, dr/2]. */
export function decodeAttention(
  c: ModelConfig,
  P: ParamGetter,
  p: string,
  x: tf.Tensor2D,
  cos: tf.Tensor,
  sin: tf.Tensor,
  caches: AttnCache[],
): { out: tf.Tensor2D; caches: AttnCache[] } {
  const a = c.attention;
  const B = x.shape[0];
  const heads = (t: tf.Tensor) => tf.transpose(t, [0, 2, 1, 3]) as tf.Tensor4D;
  if (a.type === 'gqa') {
    const q = applyRope(tf.reshape(tf.matMul(x, P(`${p}.q_proj.weight`) as tf.Tensor2D), [B, 1, a.nHeads, a.headDim]) as tf.Tensor4D, cos, sin);
    const k = applyRope(tf.reshape(tf.matMul(x, P(`${p}.k_proj.weight`) as tf.Tensor2D), [B, 1, a.nKvHeads, a.headDim]) as tf.Tensor4D, cos, sin);
    const v = tf.reshape(tf.matMul(x, P(`${p}.v_proj.weight`) as tf.Tensor2D), [B, 1, a.nKvHeads, a.headDim]);
    const r = cachedRows(heads(q), heads(k), heads(v), caches, 1 / Math.sqrt(a.headDim), a.nHeads / a.nKvHeads);
    const flat = tf.reshape(tf.transpose(r.o, [0, 2, 1, 3]), [B, a.nHeads * a.headDim]) as tf.Tensor2D;
    return { out: tf.matMul(flat, P(`${p}.o_proj.weight`) as tf.Tensor2D) as tf.Tensor2D, caches: r.caches };
  }
  const H = a.nHeads;
  const dn = a.nopeHeadDim;
  const dr = a.ropeHeadDim;
  const qa = rmsNorm(tf.matMul(x, P(`${p}.q_a_proj.weight`) as tf.Tensor2D), P(`${p}.q_a_layernorm.weight`), latentNormEps(c)) as tf.Tensor2D;
  const q = tf.reshape(tf.mul(tf.matMul(qa, P(`${p}.q_b_proj.weight`) as tf.Tensor2D), Math.sqrt(c.dModel / a.qLoraRank)), [B, 1, H, dn + dr]) as tf.Tensor4D;
  const qNope = tf.slice(q, [0, 0, 0, 0], [B, 1, H, dn]);
  const qRope = applyRope(tf.slice(q, [0, 0, 0, dn], [B, 1, H, dr]) as tf.Tensor4D, cos, sin);
  const kva = tf.matMul(x, P(`${p}.kv_a_proj_with_mqa.weight`) as tf.Tensor2D);
  const latent = tf.mul(rmsNorm(tf.slice(kva, [0, 0], [B, a.kvLoraRank]), P(`${p}.kv_a_layernorm.weight`), latentNormEps(c)), Math.sqrt(c.dModel / a.kvLoraRank)) as tf.Tensor2D;
  const kRope = applyRope(tf.reshape(tf.slice(kva, [0, a.kvLoraRank], [B, dr]), [B, 1, 1, dr]) as tf.Tensor4D, cos, sin);
  const kvb = tf.reshape(tf.matMul(latent, P(`${p}.kv_b_proj.weight`) as tf.Tensor2D), [B, 1, H, dn + a.vHeadDim]);
  const kNope = tf.slice(kvb, [0, 0, 0, 0], [B, 1, H, dn]);
  const v = tf.slice(kvb, [0, 0, 0, dn], [B, 1, H, a.vHeadDim]);
  const k = tf.concat([kNope, tf.tile(kRope, [1, 1, H, 1])], 3);
  const r = cachedRows(heads(tf.concat([qNope, qRope], 3)), heads(k), heads(v), caches, 1 / Math.sqrt(dn + dr), 1);
  const flat = tf.reshape(tf.transpose(r.o, [0, 2, 1, 3]), [B, H * a.vHeadDim]) as tf.Tensor2D;
  return { out: tf.matMul(flat, P(`${p}.o_proj.weight`) as tf.Tensor2D) as tf.Tensor2D, caches: r.caches };
}

/**
 * Decode-time attention for a batch of sequences with different cache lengths (S = 1 per row).
 * The projections, norms and RoPE (model/attention.projectQkv, shared with training) run once
 * on the [B, d] batch; only the cached part (append to the row's cache, QK^T, softmax, PV) runs
 * per row, against that row's own cache, so each row is bitwise equal to decoding it alone:
 * matMul rows, element-wise ops and last-axis reductions do not depend on the other rows. A padded batch
 * attention was measured and rejected: tfjs sums the key axis of a batched matMul in blocks,
 * so moving the new key behind the padding changes the rounding (max |Δlogit| 6e-7 over a
 * batch of 12 on wasm), and on wasm it was also 2.6x slower (scalar batched matMul over the
 * padded length, plus pad/copy). spec/inference checks the equality against generate().
 */
import * as tf from '@tensorflow/tfjs';
import { ModelConfig } from '../model/config';
import { attentionShape, AttnCache, ParamGetter, projectQkv } from '../model/attention';
import { softmaxLast } from '../model/ops';

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
  const B = x.shape[0];
  const heads = (t: tf.Tensor) => tf.transpose(t, [0, 2, 1, 3]) as tf.Tensor4D;
  const { q, k, v } = projectQkv(c, P, p, x, B, 1, { cos, sin });
  const { scale, groups, nHeads, dv } = attentionShape(c);
  const r = cachedRows(heads(q), heads(k), heads(v), caches, scale, groups);
  const flat = tf.reshape(tf.transpose(r.o, [0, 2, 1, 3]), [B, nHeads * dv]) as tf.Tensor2D;
  return { out: tf.matMul(flat, P(`${p}.o_proj.weight`) as tf.Tensor2D) as tf.Tensor2D, caches: r.caches };
}

/**
 * Differentiable building blocks that work on every portable backend (TFJS-NOTES "Kernels and
 * gradients that are missing"): wasm has no UnsortedSegmentSum, so row gathers carry a custom
 * gradient through scatterND (which sums duplicate indices); cross-entropy is fused with its
 * closed-form gradient; RMSNorm is computed in float32 with eps inside the root.
 */
import * as tf from '@tensorflow/tfjs';
import { attrMap, customGradVariadic } from '../core/tfjsInternals';
import { CE_GRAD_KERNEL, CE_KERNEL, RMS_GRAD_KERNEL, RMS_KERNEL, SILU_MUL_GRAD_KERNEL, SILU_MUL_KERNEL, SOFTMAX_GRAD_KERNEL, SOFTMAX_KERNEL } from '../core/native';
import { COMBINE_GRAD_KERNEL, COMBINE_KERNEL, EXPERTS_GRAD_KERNEL, EXPERTS_KERNEL } from './moe/nativeKernels';
import { ATTENTION_GRAD_KERNEL, ATTENTION_KERNEL, CONCAT_SHARED_GRAD_KERNEL, CONCAT_SHARED_KERNEL, ROPE_GRAD_KERNEL, ROPE_KERNEL } from '../core/kernelNames';

type GradFn = (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[];

/** tf.customGrad with the inputs (any number) handed to `fn` as one array and `save` typed. */
function customGradN(fn: (xs: tf.Tensor[], save: tf.GradSaveFunc) => { value: tf.Tensor; gradFunc: GradFn }): (...xs: tf.Tensor[]) => tf.Tensor {
  const g = customGradVariadic((...args) => fn(args.slice(0, -1) as tf.Tensor[], args[args.length - 1] as tf.GradSaveFunc));
  return (...xs: tf.Tensor[]) => g(...xs);
}

/** out[i] = x[idx[i]] for a 2-D x; the gradient scatter-adds rows back (duplicates summed). */
export function gatherRows(x: tf.Tensor2D, idx: Int32Array): tf.Tensor2D {
  const n = x.shape[0];
  // Tensors made inside the forward are rebuilt in gradFunc instead of saved: on wasm a saved
  // intermediate's memory can be reused before the backward pass reads it.
  const f = customGradN(([xi]) => ({
    value: tf.gather(xi, tf.tensor1d(idx, 'int32')),
    gradFunc: (dy: tf.Tensor) => [tf.scatterND(tf.tensor2d(idx, [idx.length, 1], 'int32'), dy, [n, xi.shape[1]!])],
  }));
  return f(x) as tf.Tensor2D;
}

/**
 * Sum over tokens of w_t · (logsumexp(z_t) − z_t[y_t]). Gradient: w_t · (softmax(z_t) − onehot(y_t)).
 * `weights` carries the loss mask divided by the global token count (DESIGN.md section 4).
 */
export function weightedCrossEntropy(logits: tf.Tensor2D, targets: Int32Array, weights: Float32Array): tf.Scalar {
  const [T, V] = logits.shape;
  if (hasKernels(CE_KERNEL, CE_GRAD_KERNEL)) return fusedCrossEntropy(logits, targets, weights);
  // wasm's OneHot kernel returns zeros when asked for float32 output: build int32, then cast.
  const onehot = () => tf.cast(tf.oneHot(tf.tensor1d(targets, 'int32'), V), 'float32');
  const w = () => tf.tensor2d(weights, [T, 1]);
  const f = customGradN(([z], save) => {
    save([z]);
    const lse = tf.logSumExp(z, 1, true);
    const picked = tf.sum(tf.mul(z, onehot()), 1, true);
    return {
      value: tf.sum(tf.mul(w(), tf.sub(lse, picked))),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const zs = saved[0];
        const p = tf.softmax(zs);
        return [tf.mul(tf.mul(tf.sub(p, onehot()), w()), dy)];
      },
    };
  });
  return f(logits) as tf.Scalar;
}

/**
 * The same loss through the fused kernels of the native cpu path (core/native/fused.ts): two
 * passes over the logits forward, one backward, no one-hot. Its bits differ from the composite
 * (log-sum-exp in double); it is used whenever the backend has the kernels, so a run's bits
 * depend only on its backend, as everywhere else.
 */
function fusedCrossEntropy(logits: tf.Tensor2D, targets: Int32Array, weights: Float32Array): tf.Scalar {
  const y = () => tf.tensor1d(targets, 'int32');
  const w = () => tf.tensor1d(weights, 'float32');
  const f = customGradN(([z], save) => {
    const [loss, lse] = tf.engine().runKernel(CE_KERNEL, { logits: z, targets: y(), weights: w() }, {}) as tf.Tensor[];
    save([z, lse]);
    return {
      value: loss,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [tf.engine().runKernel(CE_GRAD_KERNEL, { logits: saved[0], targets: y(), weights: w(), lse: saved[1], dy }, {}) as tf.Tensor],
    };
  });
  return f(logits) as tf.Scalar;
}

/** True when the current backend registers both kernels (the fused native cpu path). */
const hasKernels = (a: string, b: string) => !!tf.getKernel(a, tf.getBackend()) && !!tf.getKernel(b, tf.getBackend());

/**
 * RMSNorm over the last axis: x · rsqrt(mean(x²) + eps) · w. On the native cpu path one fused
 * kernel each way (sums in double; bits differ from the composite, like every backend's).
 */
export function rmsNorm(x: tf.Tensor, w: tf.Tensor, eps: number): tf.Tensor {
  if (hasKernels(RMS_KERNEL, RMS_GRAD_KERNEL)) {
    const f = customGradN(([xi, wi], save) => {
      const [y, rinv] = tf.engine().runKernel(RMS_KERNEL, { x: xi, w: wi }, attrMap({ eps })) as tf.Tensor[];
      save([xi, wi, rinv]);
      return { value: y, gradFunc: (dy, s) => tf.engine().runKernel(RMS_GRAD_KERNEL, { x: s[0], w: s[1], rinv: s[2], dy }, {}) as tf.Tensor[] };
    });
    return f(x, w);
  }
  const ms = tf.mean(tf.square(x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), w);
}

/** SwiGLU FFN on a 2-D input: down(silu(x·Wg) ⊙ (x·Wu)). */
export function swiglu(x: tf.Tensor2D, wg: tf.Tensor, wu: tf.Tensor, wd: tf.Tensor): tf.Tensor2D {
  const g = tf.matMul(x, wg as tf.Tensor2D);
  const u = tf.matMul(x, wu as tf.Tensor2D);
  const act = siluMul(g, u) as tf.Tensor2D;
  return tf.matMul(act, wd as tf.Tensor2D);
}

/**
 * All FFN experts of a MoE layer on their row blocks of xs (rows sorted by expert; expert e owns
 * rows offsets[e]..offsets[e+1]); `weights` holds gate, up, down of expert 0, then expert 1, ...
 * On the native cpu path one fused kernel each way with the composite's exact arithmetic
 * (model/moe/nativeKernels.ts); elsewhere one split and a SwiGLU per expert with rows.
 */
export function expertsFfn(xs: tf.Tensor2D, weights: tf.Tensor[], offsets: Int32Array, composite = false): tf.Tensor2D {
  const N = offsets.length - 1;
  if (weights.length !== 3 * N) throw new Error(`expertsFfn: ${weights.length} weights for ${N} experts`);
  if (!composite && hasKernels(EXPERTS_KERNEL, EXPERTS_GRAD_KERNEL)) {
    const attrs = attrMap({ offsets: Array.from(offsets) });
    const named = (x: tf.Tensor, ws: tf.Tensor[]) => Object.fromEntries([['x', x], ...ws.map((w, i) => [`w${i}`, w])]);
    const f = customGradN(([x, ...ws], save) => {
      const [y, g, u, sig, a] = tf.engine().runKernel(EXPERTS_KERNEL, named(x, ws), attrs) as tf.Tensor[];
      save([x, ...ws, g, u, sig, a]);
      return {
        value: y,
        gradFunc: (dy, s) => {
          const [g2, u2, sig2, a2] = s.slice(1 + 3 * N);
          return tf.engine().runKernel(EXPERTS_GRAD_KERNEL, { ...named(s[0], s.slice(1, 1 + 3 * N)), g: g2, u: u2, sig: sig2, a: a2, dy }, attrs) as tf.Tensor[];
        },
      };
    });
    return f(xs, ...weights) as tf.Tensor2D;
  }
  // One split into the experts' row blocks (its gradient is one concat; per-expert slices would
  // each pad their gradient back to all rows and add them up).
  const experts: number[] = [];
  const sizes: number[] = [];
  for (let e = 0; e < N; e++) {
    const n = offsets[e + 1] - offsets[e];
    if (n > 0) experts.push(e), sizes.push(n);
  }
  if (experts.length === 0) return xs;
  const blocks = experts.length === 1 ? [xs] : tf.split(xs, sizes, 0);
  const outs = experts.map((e, i) => swiglu(blocks[i] as tf.Tensor2D, weights[3 * e], weights[3 * e + 1], weights[3 * e + 2]));
  return outs.length === 1 ? outs[0] : (tf.concat(outs, 0) as tf.Tensor2D);
}

/**
 * MoE weighted combine: out[t] = Σ_k gates[t·K+k] · source[slotSource[t·K+k]], [T, d]. One
 * fused kernel each way on the native cpu path (the composite's arithmetic, without its [T,K,d]
 * intermediates); elsewhere gather -> mul -> sum over k.
 */
export function moeCombine(source: tf.Tensor2D, slotSource: Int32Array, gates: tf.Tensor, T: number, K: number, composite = false): tf.Tensor2D {
  const d = source.shape[1];
  if (!composite && hasKernels(COMBINE_KERNEL, COMBINE_GRAD_KERNEL)) {
    const slot = () => tf.tensor1d(slotSource, 'int32');
    const attrs = attrMap({ K });
    const f = customGradN(([src, g], save) => {
      save([src, g]);
      return {
        value: tf.engine().runKernel(COMBINE_KERNEL, { src, slot: slot(), gates: g }, attrs) as tf.Tensor,
        gradFunc: (dy, s) => tf.engine().runKernel(COMBINE_GRAD_KERNEL, { src: s[0], slot: slot(), gates: s[1], dy }, attrs) as tf.Tensor[],
      };
    });
    return f(source, gates) as tf.Tensor2D;
  }
  const slotOut = gatherRows(source, slotSource);
  return tf.sum(tf.reshape(tf.mul(slotOut, gates), [T, K, d]), 1) as tf.Tensor2D;
}

/**
 * Softmax over the last axis (attention scores). On the native cpu path one fused kernel each
 * way (fast exp; the gradient y·(dy − Σ dy·y) in one pass instead of four kernels).
 */
export function softmaxLast(x: tf.Tensor): tf.Tensor {
  if (!hasKernels(SOFTMAX_KERNEL, SOFTMAX_GRAD_KERNEL)) return tf.softmax(x);
  const f = customGradN(([xi], save) => {
    const y = tf.engine().runKernel(SOFTMAX_KERNEL, { x: xi }, {}) as tf.Tensor;
    save([y]);
    return { value: y, gradFunc: (dy: tf.Tensor, s: tf.Tensor[]) => [tf.engine().runKernel(SOFTMAX_GRAD_KERNEL, { y: s[0], dy }, {}) as tf.Tensor] };
  });
  return f(x);
}

/** silu(g) · u; one fused kernel each way on the native cpu path. */
export function siluMul(g: tf.Tensor, u: tf.Tensor): tf.Tensor {
  if (!hasKernels(SILU_MUL_KERNEL, SILU_MUL_GRAD_KERNEL)) return tf.mul(tf.mul(g, tf.sigmoid(g)), u);
  const f = customGradN(([gi, ui], save) => {
    const [a, sig] = tf.engine().runKernel(SILU_MUL_KERNEL, { g: gi, u: ui }, {}) as tf.Tensor[];
    save([gi, ui, sig]);
    return { value: a, gradFunc: (dy, s) => tf.engine().runKernel(SILU_MUL_GRAD_KERNEL, { g: s[0], u: s[1], sig: s[2], dy }, {}) as tf.Tensor[] };
  });
  return f(g, u);
}

/** cos/sin tables [S, dim/2] for positions offset..offset+S−1 (float64 math, then float32). */
export function ropeTables(S: number, dim: number, base: number, offset = 0): { cos: Float32Array; sin: Float32Array } {
  const half = dim / 2;
  const cos = new Float32Array(S * half);
  const sin = new Float32Array(S * half);
  for (let s = 0; s < S; s++) {
    for (let i = 0; i < half; i++) {
      const ang = (offset + s) * Math.pow(base, (-2 * i) / dim);
      cos[s * half + i] = Math.cos(ang);
      sin[s * half + i] = Math.sin(ang);
    }
  }
  return { cos, sin };
}

/**
 * Rotate-half RoPE on x [B, S, H, dim] with tables [S, dim/2]. Per-position tables may also
 * be given per batch row as [B, S, dim/2] (continuous batching in inference).
 */
export function applyRope(x: tf.Tensor4D, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor4D {
  if (hasKernels(ROPE_KERNEL, ROPE_GRAD_KERNEL)) return fusedRope(x, 0, cos, sin);
  const [B, S, , D] = x.shape;
  const half = D / 2;
  const c = cos.rank === 2 ? tf.reshape(cos, [1, S, 1, half]) : tf.reshape(cos, [B, S, 1, half]);
  const s = sin.rank === 2 ? tf.reshape(sin, [1, S, 1, half]) : tf.reshape(sin, [B, S, 1, half]);
  const [x1, x2] = tf.split(x, 2, 3);
  return tf.concat([tf.sub(tf.mul(x1, c), tf.mul(x2, s)), tf.add(tf.mul(x2, c), tf.mul(x1, s))], 3) as tf.Tensor4D;
}

/** RoPE on the last dim − keep entries of each head in one kernel each way (webgpu); the tables get no gradient. */
function fusedRope(x: tf.Tensor4D, keep: number, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor4D {
  const attrs = attrMap({ keep });
  const f = customGradN(([xi], save) => {
    save([cos, sin]);
    return {
      value: tf.engine().runKernel(ROPE_KERNEL, { x: xi, cos, sin }, attrs) as tf.Tensor,
      gradFunc: (dy, saved) => [tf.engine().runKernel(ROPE_GRAD_KERNEL, { dy, cos: saved[0], sin: saved[1] }, attrs) as tf.Tensor],
    };
  });
  return f(x) as tf.Tensor4D;
}

/**
 * [x[..., :keep], RoPE(x[..., keep:])] on the last axis (MLA's query: nope part, then rope
 * part). One kernel each way on webgpu; elsewhere split, applyRope, concat.
 */
export function ropeTail(x: tf.Tensor4D, keep: number, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor4D {
  if (hasKernels(ROPE_KERNEL, ROPE_GRAD_KERNEL)) return fusedRope(x, keep, cos, sin);
  const [head, tail] = tf.split(x, [keep, x.shape[3] - keep], 3);
  return tf.concat([head, applyRope(tail as tf.Tensor4D, cos, sin)], 3) as tf.Tensor4D;
}

/**
 * concat([a [B, S, H, da], r [B, S, 1, dr] broadcast over the H heads], 3): MLA's key (per-head
 * nope part, one shared rope part). One kernel each way on webgpu (the gradient sums the heads
 * in one pass; tfjs' Tile gradient takes a slice and an add per head); elsewhere broadcastTo
 * and concat.
 */
export function concatShared(a: tf.Tensor4D, r: tf.Tensor4D): tf.Tensor4D {
  if (hasKernels(CONCAT_SHARED_KERNEL, CONCAT_SHARED_GRAD_KERNEL)) {
    const f = customGradN(([ai, ri], save) => {
      save([ai, ri]);
      return {
        value: tf.engine().runKernel(CONCAT_SHARED_KERNEL, { a: ai, r: ri }, {}) as tf.Tensor,
        gradFunc: (dy, saved) => tf.engine().runKernel(CONCAT_SHARED_GRAD_KERNEL, { a: saved[0], r: saved[1], dy }, {}) as tf.Tensor[],
      };
    });
    return f(a, r) as tf.Tensor4D;
  }
  const [B, S, H] = a.shape;
  return tf.concat([a, tf.broadcastTo(r, [B, S, H, r.shape[3]])], 3) as tf.Tensor4D;
}

/** True where the backend runs scaled dot-product attention as one kernel each way (webgpu). */
export const hasFusedAttention = (): boolean => hasKernels(ATTENTION_KERNEL, ATTENTION_GRAD_KERNEL);

/**
 * softmax(q·kᵀ·scale + mask)·v on token-major q [B, S, H, dq], k [B, Sk, Hk, dq], v [B, Sk, Hk, dv]
 * (query head h reads KV head h / (H / Hk)); returns token-major [B, S, H, dv]. Only where
 * hasFusedAttention(); the mask is a constant (no gradient).
 */
export function fusedAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, scale: number, mask: tf.Tensor | null): tf.Tensor4D {
  const attrs = attrMap({ scale });
  const f = customGradN(([qi, ki, vi], save) => {
    const [o, p] = tf.engine().runKernel(ATTENTION_KERNEL, mask ? { q: qi, k: ki, v: vi, mask } : { q: qi, k: ki, v: vi }, attrs) as tf.Tensor[];
    save([qi, ki, vi, p]);
    return {
      value: o,
      gradFunc: (dy, sv) => tf.engine().runKernel(ATTENTION_GRAD_KERNEL, { q: sv[0], k: sv[1], v: sv[2], p: sv[3], dy }, attrs) as tf.Tensor[],
    };
  });
  return f(q, k, v) as tf.Tensor4D;
}

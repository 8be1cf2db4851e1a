/**
 * Fused MoE kernels of the native cpu path, called by model/ops.ts expertsFfn and moeCombine
 * when the backend has them. They register themselves with core/native at import, so the
 * native loader needs no knowledge of the MoE.
 *
 * - MoecatExperts / MoecatExpertsGrad: every FFN expert of a layer in one kernel each way. The
 *   composite ran, per expert, a row slice, three matMuls and the SwiGLU activation forward and
 *   six matMuls, the activation gradient and an add backward: about 25 tfjs kernel calls
 *   (with the engine's saved-tensor clones) per expert and layer. Here the same GEMM calls, with
 *   the same shapes and transposes, and the same activation code run from one kernel, so the
 *   bits equal the composite's (spec/native/moeKernels.spec.ts). native/experts.c runs the
 *   experts of a layer in parallel, one pool task per expert (their products are too small to
 *   thread one by one); that moves whole experts between threads and changes no bit.
 * - MoecatCombine / MoecatCombineGrad: out[t] = Σ_k g[t,k]·src[slot[t,k]] and its gradient,
 *   replacing gather -> mul -> reshape -> sum (whose gradient built a [T,K,d] array of ones).
 *   Same arithmetic as the composite, so again the same bits.
 */
import * as tf from '@tensorflow/tfjs';
import { kernelAttrs } from '../../core/tfjsInternals';
import { alloc, allocZeroed, give } from '../../core/native/buffers';
import { NativeAddon, registerFusedKernel } from '../../core/native';
import { be, f32, i32, TensorInfo } from '../../core/native/tensors';

import { COMBINE_GRAD_KERNEL, COMBINE_KERNEL, EXPERTS_GRAD_KERNEL, EXPERTS_KERNEL } from '../../core/kernelNames';

export { COMBINE_GRAD_KERNEL, COMBINE_KERNEL, EXPERTS_GRAD_KERNEL, EXPERTS_KERNEL };

type BackendLike = ReturnType<typeof be>;
const h = { alloc, allocZeroed, f32, i32 };

/** Attributes of the experts kernels: row offsets per expert [N+1] into x. */
export interface ExpertsAttrs {
  offsets: number[];
}

/** Inputs x [R, d] and w0..w(3N−1) = gate, up, down of expert 0, then expert 1, ... */
function expertInputs(b: BackendLike, inputs: Record<string, TensorInfo>, offsets: number[], name: string) {
  const N = offsets.length - 1;
  const x = inputs.x;
  const xv = h.f32(b, x);
  if (!xv || x.shape.length !== 2) throw new Error(`${name}: expects a float32 x [R, d]`);
  const [R, d] = x.shape;
  if (offsets[0] !== 0 || offsets[N] !== R) throw new Error(`${name}: expert offsets must run from 0 to the ${R} rows of x`);
  const w: Float32Array[] = [];
  let hid = -1;
  for (let i = 0; i < 3 * N; i++) {
    const t = inputs[`w${i}`];
    const v = h.f32(b, t);
    if (!v || t.shape.length !== 2) throw new Error(`${name}: weight w${i} must be a float32 matrix`);
    const hh = i % 3 === 2 ? t.shape[0] : t.shape[1];
    const dd = i % 3 === 2 ? t.shape[1] : t.shape[0];
    if (dd !== d || (hid >= 0 && hh !== hid)) throw new Error(`${name}: weight w${i} has shape [${t.shape}], expected d=${d} and one hidden size`);
    hid = hh;
    w.push(v);
  }
  return { xv, R, d, hid: Math.max(hid, 0), w, N };
}

/**
 * Forward: for each expert e with rows [o_e, o_{e+1}): G = X·Wg, U = X·Wu, A = silu(G)·U,
 * Y = A·Wd. Outputs Y [R, d] and, for the gradient, G, U, sigmoid(G), A [R, h].
 */
export const expertsKernel = (m: NativeAddon): tf.KernelFunc =>
  (args) => {
    const b = be(args);
    const { offsets } = kernelAttrs<ExpertsAttrs>(args.attrs);
    const { xv, R, d, hid, w } = expertInputs(b, args.inputs as Record<string, TensorInfo>, offsets, EXPERTS_KERNEL);
    const y = h.alloc(R * d);
    const G = h.alloc(R * hid);
    const U = h.alloc(R * hid);
    const S = h.alloc(R * hid);
    const A = h.alloc(R * hid);
    // Every expert at once, spread over the pool (native/experts.c): the same GEMM calls and
    // activation code as one expert after another, so the same bits.
    if (R > 0 && d > 0 && hid > 0) m.expertsForward(xv, w, Int32Array.from(offsets), y, G, U, S, A, d, hid);
    else y.fill(0);
    const hs = [R, hid];
    return [b.makeTensorInfo([R, d], 'float32', y), ...[G, U, S, A].map((v) => b.makeTensorInfo(hs, 'float32', v))];
  };

/**
 * Backward, as tfjs differentiates the composite: dA = dY·Wdᵀ, dWd = Aᵀ·dY; (dG, dU) from the
 * activation gradient; dWg = Xᵀ·dG, dWu = Xᵀ·dU; dX = dG·Wgᵀ + dU·Wuᵀ (one float32 add).
 * Inputs x, w*, g, u, sig, a, dy; outputs dx and the 3N weight gradients (zeros for an expert
 * without rows, as autodiff gives for a weight the step did not use).
 */
export const expertsGradKernel = (m: NativeAddon): tf.KernelFunc =>
  (args) => {
    const b = be(args);
    const inputs = args.inputs as Record<string, TensorInfo>;
    const { offsets } = kernelAttrs<ExpertsAttrs>(args.attrs);
    const { xv, R, d, hid, w, N } = expertInputs(b, inputs, offsets, EXPERTS_GRAD_KERNEL);
    const [G, U, S, A, dY] = ['g', 'u', 'sig', 'a', 'dy'].map((k) => h.f32(b, inputs[k]));
    if (!G || !U || !S || !A || !dY || G.length !== R * hid || dY.length !== R * d) throw new Error(`${EXPERTS_GRAD_KERNEL}: saved activations or dy do not match x`);
    const dx = h.alloc(R * d);
    // Scratch rows per expert (experts run in parallel in native/experts.c).
    const dA = h.alloc(R * hid);
    const dG = h.alloc(R * hid);
    const dU = h.alloc(R * hid);
    const dXu = h.alloc(R * d);
    const dW: Float32Array[] = [];
    for (let e = 0; e < N; e++) {
      const empty = offsets[e + 1] === offsets[e];
      for (let k = 0; k < 3; k++) dW.push(empty ? h.allocZeroed(d * hid) : h.alloc(d * hid));
    }
    if (R > 0 && d > 0 && hid > 0) m.expertsBackward(xv, w, Int32Array.from(offsets), G, U, S, A, dY, dx, dW, dA, dG, dU, dXu, d, hid);
    else dx.fill(0);
    // The scratch buffers never become tensors: back to the pool.
    for (const t of [dA, dG, dU, dXu]) give(t);
    return [
      b.makeTensorInfo([R, d], 'float32', dx),
      ...dW.map((v, i) => b.makeTensorInfo(i % 3 === 2 ? [hid, d] : [d, hid], 'float32', v)),
    ];
  };

/** Attributes of the combine kernels: K slots per token. */
export interface CombineAttrs {
  K: number;
}

function combineInputs(b: BackendLike, inputs: Record<string, TensorInfo>, K: number, name: string) {
  const { src, slot, gates } = inputs;
  const sv = h.f32(b, src);
  const iv = h.i32(b, slot);
  const gv = h.f32(b, gates);
  if (!sv || !iv || !gv || src.shape.length !== 2) throw new Error(`${name}: expects float32 src [R, d], int32 slot [T·K], float32 gates [T·K]`);
  if (!(K >= 1) || iv.length % K !== 0 || gv.length !== iv.length) throw new Error(`${name}: slot and gates must hold T·K entries (K=${K})`);
  return { sv, iv, gv, T: iv.length / K, d: src.shape[1] };
}

export const combineKernel = (m: NativeAddon): tf.KernelFunc =>
  (args) => {
    const b = be(args);
    const { K } = kernelAttrs<CombineAttrs>(args.attrs);
    const { sv, iv, gv, T, d } = combineInputs(b, args.inputs as Record<string, TensorInfo>, K, COMBINE_KERNEL);
    const out = h.alloc(T * d);
    m.moeCombine(sv, iv, gv, out, T, K, d);
    return b.makeTensorInfo([T, d], 'float32', out);
  };

/** Inputs src, slot, gates, dy [T, d]; outputs dsrc [R, d] and dgates (gates' shape). */
export const combineGradKernel = (m: NativeAddon): tf.KernelFunc =>
  (args) => {
    const b = be(args);
    const inputs = args.inputs as Record<string, TensorInfo>;
    const { K } = kernelAttrs<CombineAttrs>(args.attrs);
    const { sv, iv, gv, T, d } = combineInputs(b, inputs, K, COMBINE_GRAD_KERNEL);
    const dy = h.f32(b, inputs.dy);
    if (!dy || dy.length !== T * d) throw new Error(`${COMBINE_GRAD_KERNEL}: dy must be float32 [${T}, ${d}]`);
    const dsrc = h.allocZeroed(sv.length);
    const dg = h.alloc(gv.length);
    m.moeCombineGrad(sv, iv, gv, dy, dsrc, dg, T, K, d);
    return [b.makeTensorInfo(inputs.src.shape.slice(), 'float32', dsrc), b.makeTensorInfo(inputs.gates.shape.slice(), 'float32', dg)];
  };

registerFusedKernel(EXPERTS_KERNEL, expertsKernel);
registerFusedKernel(EXPERTS_GRAD_KERNEL, expertsGradKernel);
registerFusedKernel(COMBINE_KERNEL, combineKernel);
registerFusedKernel(COMBINE_GRAD_KERNEL, combineGradKernel);

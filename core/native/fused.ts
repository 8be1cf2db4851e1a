/**
 * Fused kernels model/ops.ts calls by name when the backend has them: weighted cross-entropy,
 * softmax with the fast exp, RMSNorm and the SwiGLU activation, each with its gradient. They are
 * registered under new names (no tfjs kernel is replaced). The MoE kernels live with the MoE
 * (model/moe/nativeKernels.ts).
 */
import type { NativeAddon } from './addon';
import { kernelAttrs } from '../tfjsInternals';
import { alloc } from './buffers';
import { be, f32, i32, KernelFunc, lastDim, TensorInfo } from './tensors';

/** Kernel names of the fused ops model/ops.ts calls when the current backend has them. */
export const CE_KERNEL = 'MoecatCrossEntropy';
export const CE_GRAD_KERNEL = 'MoecatCrossEntropyGrad';

/**
 * Fused weighted cross-entropy (model/ops.ts weightedCrossEntropy): inputs logits [T, V],
 * targets int32 [T], weights [T]; outputs the scalar loss and the row log-sum-exp [T] that the
 * gradient kernel reuses. Replaces oneHot + logSumExp + mul + sum + softmax + sub + 2 mul
 * (two [T, V] one-hot fills among them) with two passes over the logits.
 */
export const crossEntropyKernel = (m: NativeAddon): KernelFunc =>
  (args) => {
    const b = be(args);
    const { logits, targets, weights } = args.inputs as { logits: TensorInfo; targets: TensorInfo; weights: TensorInfo };
    const z = f32(b, logits);
    const y = i32(b, targets);
    const w = f32(b, weights);
    if (!z || !y || !w) throw new Error(`${CE_KERNEL}: expects float32 logits, int32 targets, float32 weights`);
    const [T, V] = logits.shape;
    const lse = alloc(T);
    const total = m.crossEntropy(z, y, w, lse, T, V);
    return [b.makeTensorInfo([], 'float32', Float32Array.of(total)), b.makeTensorInfo([T], 'float32', lse)];
  };

export const crossEntropyGradKernel = (m: NativeAddon): KernelFunc =>
  (args) => {
    const b = be(args);
    const { logits, targets, weights, lse, dy } = args.inputs as Record<string, TensorInfo>;
    const z = f32(b, logits);
    const y = i32(b, targets);
    const w = f32(b, weights);
    const l = f32(b, lse);
    const d = f32(b, dy);
    if (!z || !y || !w || !l || !d) throw new Error(`${CE_GRAD_KERNEL}: bad input dtypes`);
    const [T, V] = logits.shape;
    const out = alloc(T * V);
    m.crossEntropyGrad(z, y, w, l, d[0], out, T, V);
    return b.makeTensorInfo([T, V], 'float32', out);
  };

export const SOFTMAX_KERNEL = 'MoecatSoftmax';
export const SOFTMAX_GRAD_KERNEL = 'MoecatSoftmaxGrad';

/** Softmax over the last axis with the fast exp (attention); the gradient kernel takes y and dy. */
export const softmaxFusedKernel = (m: NativeAddon): KernelFunc =>
  (args) => {
    const b = be(args);
    const { x } = args.inputs as { x: TensorInfo };
    const xv = f32(b, x);
    if (!xv) throw new Error(`${SOFTMAX_KERNEL}: expects float32`);
    const d = lastDim(x);
    const y = alloc(xv.length);
    if (xv.length > 0) m.softmaxFused(xv, y, xv.length / d, d);
    return b.makeTensorInfo(x.shape.slice(), 'float32', y);
  };

export const softmaxFusedGradKernel = (m: NativeAddon): KernelFunc =>
  (args) => {
    const b = be(args);
    const { y, dy } = args.inputs as { y: TensorInfo; dy: TensorInfo };
    const [yv, gv] = [f32(b, y), f32(b, dy)];
    if (!yv || !gv) throw new Error(`${SOFTMAX_GRAD_KERNEL}: expects float32`);
    const d = lastDim(y);
    const dx = alloc(yv.length);
    if (yv.length > 0) m.softmaxFusedGrad(yv, gv, dx, yv.length / d, d);
    return b.makeTensorInfo(y.shape.slice(), 'float32', dx);
  };

export const RMS_KERNEL = 'MoecatRmsNorm';
export const RMS_GRAD_KERNEL = 'MoecatRmsNormGrad';
export const SILU_MUL_KERNEL = 'MoecatSiluMul';
export const SILU_MUL_GRAD_KERNEL = 'MoecatSiluMulGrad';


/** RMSNorm over the last axis: inputs x, w [d]; attr eps; outputs y and 1/rms per row. */
export const rmsNormKernel = (m: NativeAddon): KernelFunc =>
  (args) => {
    const b = be(args);
    const { x, w } = args.inputs as { x: TensorInfo; w: TensorInfo };
    const xv = f32(b, x);
    const wv = f32(b, w);
    const d = lastDim(x);
    if (!xv || !wv || wv.length !== d) throw new Error(`${RMS_KERNEL}: expects float32 x [..., d] and w [d]`);
    const rows = xv.length / d;
    const y = alloc(xv.length);
    const rinv = alloc(rows);
    m.rmsNorm(xv, wv, y, rinv, rows, d, kernelAttrs<{ eps: number }>(args.attrs).eps);
    return [b.makeTensorInfo(x.shape.slice(), 'float32', y), b.makeTensorInfo([rows], 'float32', rinv)];
  };

export const rmsNormGradKernel = (m: NativeAddon): KernelFunc =>
  (args) => {
    const b = be(args);
    const { x, w, rinv, dy } = args.inputs as Record<string, TensorInfo>;
    const [xv, wv, rv, gv] = [f32(b, x), f32(b, w), f32(b, rinv), f32(b, dy)];
    if (!xv || !wv || !rv || !gv) throw new Error(`${RMS_GRAD_KERNEL}: bad input dtypes`);
    const d = lastDim(x);
    const dx = alloc(xv.length);
    const dw = alloc(d);
    m.rmsNormGrad(xv, wv, rv, gv, dx, dw, xv.length / d, d);
    return [b.makeTensorInfo(x.shape.slice(), 'float32', dx), b.makeTensorInfo([d], 'float32', dw)];
  };

/** silu(g) * u, the SwiGLU activation: inputs g, u of one shape; outputs it and sigmoid(g). */
export const siluMulKernel = (m: NativeAddon): KernelFunc =>
  (args) => {
    const b = be(args);
    const { g, u } = args.inputs as { g: TensorInfo; u: TensorInfo };
    const [gv, uv] = [f32(b, g), f32(b, u)];
    if (!gv || !uv || gv.length !== uv.length) throw new Error(`${SILU_MUL_KERNEL}: expects two float32 tensors of one shape`);
    const out = alloc(gv.length);
    const sig = alloc(gv.length);
    m.siluMul(gv, uv, out, sig, gv.length);
    return [b.makeTensorInfo(g.shape.slice(), 'float32', out), b.makeTensorInfo(g.shape.slice(), 'float32', sig)];
  };

export const siluMulGradKernel = (m: NativeAddon): KernelFunc =>
  (args) => {
    const b = be(args);
    const { g, u, sig, dy } = args.inputs as Record<string, TensorInfo>;
    const [gv, uv, sv, av] = [f32(b, g), f32(b, u), f32(b, sig), f32(b, dy)];
    if (!gv || !uv || !sv || !av) throw new Error(`${SILU_MUL_GRAD_KERNEL}: bad input dtypes`);
    const dg = alloc(gv.length);
    const du = alloc(gv.length);
    m.siluMulGrad(gv, uv, sv, av, dg, du, gv.length);
    return [b.makeTensorInfo(g.shape.slice(), 'float32', dg), b.makeTensorInfo(g.shape.slice(), 'float32', du)];
  };

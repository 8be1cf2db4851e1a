/**
 * Fused WGSL kernels for the webgpu backend, registered under the kernel names model/ops.ts
 * already uses for the native CPU path (cross-entropy, RMSNorm, attention softmax), so a step
 * dispatches a few programs where the composite ran a dozen. Each thread owns whole rows or
 * whole columns and sums in ascending index order: deterministic, no atomics, no shared-memory
 * trees. spec/webgpu/fused.spec.ts checks each against the composite ops.
 */
import * as tf from '@tensorflow/tfjs';
import { CE_GRAD_KERNEL, CE_KERNEL, RMS_GRAD_KERNEL, RMS_KERNEL, SILU_MUL_GRAD_KERNEL, SILU_MUL_KERNEL, SOFTMAX_GRAD_KERNEL, SOFTMAX_KERNEL } from '../native';
import { COMBINE_GRAD_KERNEL, COMBINE_KERNEL } from '../kernelNames';
import { buildRowLists } from './segmentKernels';
import { kernelAttrs } from '../tfjsInternals';
import { webgpuUtil } from './webgpuUtil';

export interface Backend {
  readSync(dataId: object): unknown;
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues): tf.TensorInfo;
  runWebGPUProgram(program: object, inputs: tf.TensorInfo[], dtype: tf.DataType, uniforms?: { type: string; data: number[] }[]): tf.TensorInfo;
  disposeData(dataId: object): void;
}
/** One thread per item of `threads` (rows or columns); `body` sees `index` and the inputs by name. */
export class ThreadProgram {
  workgroupSize: [number, number, number] = [64, 1, 1];
  size = false;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  uniforms: string;
  constructor(
    public outputShape: number[],
    public variableNames: string[],
    threads: number,
    public shaderKey: string,
    private body: string,
    uniforms = '',
  ) {
    const u = webgpuUtil();
    this.dispatchLayout = u.flatDispatchLayout([threads]);
    this.dispatch = u.computeDispatch(this.dispatchLayout, [threads], this.workgroupSize);
    this.uniforms = `threads : i32, ${uniforms}`;
  }
  getUserCode(): string {
    return `
      fn main(index : i32) {
        if (index < uniforms.threads) {
          ${this.body}
        }
      }
    `;
  }
}

export type Args = { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap };
const lastDim = (t: tf.TensorInfo) => t.shape[t.shape.length - 1];
export const count = (t: tf.TensorInfo) => t.shape.reduce((a, b) => a * b, 1);
export const int = (v: number) => ({ type: 'int32', data: [v] });

function run(b: Backend, p: ThreadProgram, inputs: tf.TensorInfo[], threads: number, extra: { type: string; data: number[] }[] = []): tf.TensorInfo {
  return b.runWebGPUProgram(p, inputs, 'float32', [int(threads), ...extra]);
}

/** RMSNorm forward: rinv[r] = 1/sqrt(mean(x²) + eps), then y = x·rinv·w. */
function rmsNorm({ inputs, backend, attrs }: Args): tf.TensorInfo[] {
  const b = backend as Backend;
  const { x, w } = inputs as { x: tf.TensorInfo; w: tf.TensorInfo };
  const d = lastDim(x);
  const rows = count(x) / d;
  const eps = kernelAttrs<{ eps: number }>(attrs).eps;
  const rinv = run(b, new ThreadProgram([rows], ['xIn'], rows, 'moecatRmsRinv', `
          var s = 0.0;
          for (var j = 0; j < uniforms.d; j = j + 1) { let v = xIn[index * uniforms.d + j]; s = s + v * v; }
          setOutputAtIndex(index, 1.0 / sqrt(s / f32(uniforms.d) + uniforms.eps));`, 'd : i32, eps : f32,'), [x], rows, [int(d), { type: 'float32', data: [eps] }]);
  const y = run(b, new ThreadProgram(x.shape.slice(), ['xIn', 'rinvIn', 'wIn'], rows * d, 'moecatRmsY', `
          let r = index / uniforms.d;
          setOutputAtIndex(index, xIn[index] * rinvIn[r] * wIn[index - r * uniforms.d]);`, 'd : i32,'), [x, rinv, w], rows * d, [int(d)]);
  return [y, rinv];
}

/** dx = rinv·w·dy − x·rinv³·(Σ dy·w·x)/d per row; dw[j] = Σ_rows dy·x·rinv. */
function rmsNormGrad({ inputs, backend }: Args): tf.TensorInfo[] {
  const b = backend as Backend;
  const { x, w, rinv, dy } = inputs as Record<string, tf.TensorInfo>;
  const d = lastDim(x);
  const rows = count(x) / d;
  const dot = run(b, new ThreadProgram([rows], ['xIn', 'wIn', 'dyIn'], rows, 'moecatRmsGradDot', `
          var s = 0.0;
          for (var j = 0; j < uniforms.d; j = j + 1) { let i = index * uniforms.d + j; s = s + dyIn[i] * wIn[j] * xIn[i]; }
          setOutputAtIndex(index, s);`, 'd : i32,'), [x, w, dy], rows, [int(d)]);
  const dx = run(b, new ThreadProgram(x.shape.slice(), ['xIn', 'wIn', 'rinvIn', 'dyIn', 'rowDot'], rows * d, 'moecatRmsGradDx', `
          let r = index / uniforms.d;
          let ri = rinvIn[r];
          setOutputAtIndex(index, ri * wIn[index - r * uniforms.d] * dyIn[index] - xIn[index] * ri * ri * ri * rowDot[r] / f32(uniforms.d));`, 'd : i32,'), [x, w, rinv, dy, dot], rows * d, [int(d)]);
  const dw = run(b, new ThreadProgram([d], ['xIn', 'rinvIn', 'dyIn'], d, 'moecatRmsGradDw', `
          var s = 0.0;
          for (var r = 0; r < uniforms.rows; r = r + 1) { let i = r * uniforms.threads + index; s = s + dyIn[i] * xIn[i] * rinvIn[r]; }
          setOutputAtIndex(index, s);`, 'rows : i32,'), [x, rinv, dy], d, [int(rows)]);
  b.disposeData(dot.dataId);
  return [dx, dw];
}

/** Softmax over the last axis, one thread per row: max, Σ exp, then each output. */
function softmax({ inputs, backend }: Args): tf.TensorInfo {
  const b = backend as Backend;
  const { x } = inputs as { x: tf.TensorInfo };
  const d = lastDim(x);
  const rows = count(x) / d;
  return run(b, new ThreadProgram(x.shape.slice(), ['xIn'], rows, 'moecatSoftmax', `
          let o = index * uniforms.d;
          var m = xIn[o];
          for (var j = 1; j < uniforms.d; j = j + 1) { m = max(m, xIn[o + j]); }
          var s = 0.0;
          for (var j = 0; j < uniforms.d; j = j + 1) { s = s + exp(xIn[o + j] - m); }
          for (var j = 0; j < uniforms.d; j = j + 1) { setOutputAtIndex(o + j, exp(xIn[o + j] - m) / s); }`, 'd : i32,'), [x], rows, [int(d)]);
}

/** dx = y·(dy − Σ dy·y), one thread per row. */
function softmaxGrad({ inputs, backend }: Args): tf.TensorInfo {
  const b = backend as Backend;
  const { y, dy } = inputs as { y: tf.TensorInfo; dy: tf.TensorInfo };
  const d = lastDim(y);
  const rows = count(y) / d;
  return run(b, new ThreadProgram(y.shape.slice(), ['yIn', 'dyIn'], rows, 'moecatSoftmaxGrad', `
          let o = index * uniforms.d;
          var s = 0.0;
          for (var j = 0; j < uniforms.d; j = j + 1) { s = s + dyIn[o + j] * yIn[o + j]; }
          for (var j = 0; j < uniforms.d; j = j + 1) { setOutputAtIndex(o + j, yIn[o + j] * (dyIn[o + j] - s)); }`, 'd : i32,'), [y, dy], rows, [int(d)]);
}

/** Σ_t w_t·(lse_t − z_t[y_t]): lse per row, then one thread sums the rows in order. */
function crossEntropy({ inputs, backend }: Args): tf.TensorInfo[] {
  const b = backend as Backend;
  const { logits, targets, weights } = inputs as Record<string, tf.TensorInfo>;
  const [T, V] = logits.shape;
  const lse = run(b, new ThreadProgram([T], ['zIn'], T, 'moecatCeLse', `
          let o = index * uniforms.v;
          var m = zIn[o];
          for (var j = 1; j < uniforms.v; j = j + 1) { m = max(m, zIn[o + j]); }
          var s = 0.0;
          for (var j = 0; j < uniforms.v; j = j + 1) { s = s + exp(zIn[o + j] - m); }
          setOutputAtIndex(index, m + log(s));`, 'v : i32,'), [logits], T, [int(V)]);
  const loss = run(b, new ThreadProgram([], ['zIn', 'yIn', 'wIn', 'lseIn'], 1, 'moecatCeLoss', `
          var s = 0.0;
          for (var t = 0; t < uniforms.rows; t = t + 1) { s = s + wIn[t] * (lseIn[t] - zIn[t * uniforms.v + yIn[t]]); }
          setOutputAtIndex(0, s);`, 'rows : i32, v : i32,'), [logits, targets, weights, lse], 1, [int(T), int(V)]);
  return [loss, lse];
}

/** d logits = dy·w_t·(softmax(z_t) − onehot(y_t)), from the saved lse. */
function crossEntropyGrad({ inputs, backend }: Args): tf.TensorInfo {
  const b = backend as Backend;
  const { logits, targets, weights, lse, dy } = inputs as Record<string, tf.TensorInfo>;
  const [T, V] = logits.shape;
  return run(b, new ThreadProgram([T, V], ['zIn', 'yIn', 'wIn', 'lseIn', 'dyIn'], T * V, 'moecatCeGrad', `
          let t = index / uniforms.v;
          let j = index - t * uniforms.v;
          let p = exp(zIn[index] - lseIn[t]) - select(0.0, 1.0, j == yIn[t]);
          setOutputAtIndex(index, dyIn[0] * wIn[t] * p);`, 'v : i32,'), [logits, targets, weights, lse, dy], T * V, [int(V)]);
}

/** SwiGLU activation: a = g·sigmoid(g)·u, and sigmoid(g) kept for the gradient. */
export function siluMul({ inputs, backend }: Args): tf.TensorInfo[] {
  const b = backend as Backend;
  const { g, u } = inputs as { g: tf.TensorInfo; u: tf.TensorInfo };
  const n = count(g);
  const sig = run(b, new ThreadProgram(g.shape.slice(), ['gIn'], n, 'moecatSigmoid', `
          setOutputAtIndex(index, 1.0 / (1.0 + exp(-gIn[index])));`), [g], n);
  const a = run(b, new ThreadProgram(g.shape.slice(), ['gIn', 'uIn', 'sigIn'], n, 'moecatSiluMul', `
          setOutputAtIndex(index, gIn[index] * sigIn[index] * uIn[index]);`), [g, u, sig], n);
  return [a, sig];
}

/** du = dy·g·s; dg = dy·u·s·(1 + g·(1 − s)). */
function siluMulGrad({ inputs, backend }: Args): tf.TensorInfo[] {
  const b = backend as Backend;
  const { g, u, sig, dy } = inputs as Record<string, tf.TensorInfo>;
  const n = count(g);
  const dg = run(b, new ThreadProgram(g.shape.slice(), ['gIn', 'uIn', 'sigIn', 'dyIn'], n, 'moecatSiluMulDg', `
          let s = sigIn[index];
          setOutputAtIndex(index, dyIn[index] * uIn[index] * s * (1.0 + gIn[index] * (1.0 - s)));`), [g, u, sig, dy], n);
  const du = run(b, new ThreadProgram(g.shape.slice(), ['gIn', 'sigIn', 'dyIn'], n, 'moecatSiluMulDu', `
          setOutputAtIndex(index, dyIn[index] * gIn[index] * sigIn[index]);`), [g, sig, dy], n);
  return [dg, du];
}

/** MoE combine: out[t, j] = Σ_k gates[t·K+k]·src[slot[t·K+k], j], k ascending. */
function combine({ inputs, backend, attrs }: Args): tf.TensorInfo {
  const b = backend as Backend;
  const { src, slot, gates } = inputs as Record<string, tf.TensorInfo>;
  const K = kernelAttrs<{ K: number }>(attrs).K;
  const T = count(slot) / K;
  const d = src.shape[1];
  return run(b, new ThreadProgram([T, d], ['srcIn', 'slotIn', 'gatesIn'], T * d, 'moecatCombine', `
          let t = index / uniforms.d;
          let j = index - t * uniforms.d;
          var s = 0.0;
          for (var k = 0; k < uniforms.k; k = k + 1) { let p = t * uniforms.k + k; s = s + gatesIn[p] * srcIn[slotIn[p] * uniforms.d + j]; }
          setOutputAtIndex(index, s);`, 'd : i32, k : i32,'), [src, slot, gates], T * d, [int(d), int(K)]);
}

/**
 * dsrc[r, j] = Σ over slots p with slot[p] = r (ascending p) of gates[p]·dy[p / K, j], from row
 * lists built on the host (slot ids come from the host); dgates[p] = Σ_j dy[t, j]·src[slot[p], j].
 */
function combineGrad({ inputs, backend, attrs }: Args): tf.TensorInfo[] {
  const b = backend as Backend;
  const { src, slot, gates, dy } = inputs as Record<string, tf.TensorInfo>;
  const K = kernelAttrs<{ K: number }>(attrs).K;
  const [R, d] = src.shape;
  const slots = b.readSync(slot.dataId) as Int32Array;
  for (let p = 0; p < slots.length; p++) {
    if (slots[p] < 0 || slots[p] >= R) throw new Error(`${COMBINE_GRAD_KERNEL}: slot ${p} names row ${slots[p]}, outside [0, ${R})`);
  }
  const lists = buildRowLists(slots, null, R);
  const rows = b.makeTensorInfo([lists.rows.length], 'int32', lists.rows);
  const offsets = b.makeTensorInfo([lists.offsets.length], 'int32', lists.offsets);
  try {
    const dsrc = run(b, new ThreadProgram([R, d], ['gatesIn', 'dyIn', 'listIn', 'offsetsIn'], R * d, 'moecatCombineGradSrc', `
          let r = index / uniforms.d;
          let j = index - r * uniforms.d;
          var s = 0.0;
          for (var q = offsetsIn[r]; q < offsetsIn[r + 1]; q = q + 1) { let p = listIn[q]; s = s + gatesIn[p] * dyIn[(p / uniforms.k) * uniforms.d + j]; }
          setOutputAtIndex(index, s);`, 'd : i32, k : i32,'), [gates, dy, rows, offsets], R * d, [int(d), int(K)]);
    const dg = run(b, new ThreadProgram(gates.shape.slice(), ['srcIn', 'slotIn', 'dyIn'], count(slot), 'moecatCombineGradGates', `
          let t = index / uniforms.k;
          let o = slotIn[index] * uniforms.d;
          var s = 0.0;
          for (var j = 0; j < uniforms.d; j = j + 1) { s = s + dyIn[t * uniforms.d + j] * srcIn[o + j]; }
          setOutputAtIndex(index, s);`, 'd : i32, k : i32,'), [src, slot, dy], count(slot), [int(d), int(K)]);
    return [dsrc, dg];
  } finally {
    b.disposeData(rows.dataId);
    b.disposeData(offsets.dataId);
  }
}

export const FUSED_KERNELS: Record<string, (a: Args) => tf.TensorInfo | tf.TensorInfo[]> = {
  [RMS_KERNEL]: rmsNorm,
  [RMS_GRAD_KERNEL]: rmsNormGrad,
  [SOFTMAX_KERNEL]: softmax,
  [SOFTMAX_GRAD_KERNEL]: softmaxGrad,
  [CE_KERNEL]: crossEntropy,
  [CE_GRAD_KERNEL]: crossEntropyGrad,
  [SILU_MUL_KERNEL]: siluMul,
  [SILU_MUL_GRAD_KERNEL]: siluMulGrad,
  [COMBINE_KERNEL]: combine,
  [COMBINE_GRAD_KERNEL]: combineGrad,
};

let registered = false;

/** Registers the fused kernels for webgpu (model/ops.ts then takes its fused paths there). */
export function registerFusedKernels(): void {
  if (registered) return;
  registered = true;
  for (const [kernelName, fn] of Object.entries(FUSED_KERNELS)) {
    if (tf.getKernel(kernelName, 'webgpu')) tf.unregisterKernel(kernelName, 'webgpu');
    tf.registerKernel({ kernelName, backendName: 'webgpu', kernelFunc: fn });
  }
}

/** Removes them again (tests compare against the composite path). */
export function unregisterFusedKernels(): void {
  if (!registered) return;
  registered = false;
  for (const kernelName of Object.keys(FUSED_KERNELS)) tf.unregisterKernel(kernelName, 'webgpu');
}

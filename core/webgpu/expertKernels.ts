/**
 * Every FFN expert of a MoE layer, forward and backward with SwiGLU, as a handful of WGSL
 * programs on the webgpu backend, registered under the kernel names model/ops.ts expertsFfn
 * uses for the native CPU path (core/kernelNames.ts). The composite ran, per expert with rows,
 * a split block, three matMuls and the activation forward, six matMuls, the activation gradient,
 * an add and a slice backward: about 15 dispatches per expert and layer. Here:
 *
 * - forward: pack the 3N weights into one buffer (one program per group of storage bindings),
 *   G = X·Wg and U = X·Wu (one program each, every row reading its own expert's block), the
 *   SwiGLU activation (the fused kernel's two programs), Y = A·Wd: pack + 5 dispatches;
 * - backward: pack again, dA = dY·Wdᵀ with (dG, dU) from the activation gradient in one program,
 *   dX = dG·Wgᵀ + dU·Wuᵀ in one, and one program per weight gradient (each output tensor needs
 *   its own program): pack + 2 + 3N dispatches.
 *
 * Deterministic without atomics: every output element is summed by one invocation over its
 * inner index in ascending order; a weight gradient sums over its expert's rows (its tokens,
 * sorted by the dispatch plan) in ascending row order. spec/webgpu/experts.spec.ts checks values
 * and gradients against the composite ops and reruns bit for bit.
 */
import * as tf from '@tensorflow/tfjs';
import { EXPERTS_GRAD_KERNEL, EXPERTS_KERNEL } from '../kernelNames';
import { kernelAttrs } from '../tfjsInternals';
import { Args, Backend, int, siluMul, ThreadProgram } from './fusedKernels';

type Uniform = { type: string; data: number[] };
interface ExpertBackend extends Backend {
  runWebGPUProgram(program: object, inputs: tf.TensorInfo[], dtype: tf.DataType, uniforms?: Uniform[], output?: tf.TensorInfo): tf.TensorInfo;
  device: { limits: { maxStorageBuffersPerShaderStage: number } };
}

interface ExpertInputs {
  x: tf.TensorInfo;
  ws: tf.TensorInfo[];
  offsets: number[];
  R: number;
  d: number;
  h: number;
  N: number;
}

/** x [R, d] and w0..w(3N−1) = gate [d, h], up [d, h], down [h, d] of expert 0, then 1, ... */
function expertInputs(inputs: tf.NamedTensorInfoMap, offsets: number[], name: string): ExpertInputs {
  const N = offsets.length - 1;
  const x = inputs.x;
  if (!x || x.dtype !== 'float32' || x.shape.length !== 2) throw new Error(`${name}: expects a float32 x [R, d]`);
  const [R, d] = x.shape;
  if (!(N >= 1) || offsets[0] !== 0 || offsets[N] !== R) throw new Error(`${name}: expert offsets must run from 0 to the ${R} rows of x`);
  for (let e = 0; e < N; e++) if (!(offsets[e + 1] >= offsets[e])) throw new Error(`${name}: expert offsets must not decrease (expert ${e})`);
  const ws: tf.TensorInfo[] = [];
  let h = -1;
  for (let i = 0; i < 3 * N; i++) {
    const t = inputs[`w${i}`];
    if (!t || t.dtype !== 'float32' || t.shape.length !== 2) throw new Error(`${name}: weight w${i} must be a float32 matrix`);
    const hh = i % 3 === 2 ? t.shape[0] : t.shape[1];
    const dd = i % 3 === 2 ? t.shape[1] : t.shape[0];
    if (dd !== d || (h >= 0 && hh !== h)) throw new Error(`${name}: weight w${i} has shape [${t.shape}], expected d=${d} and one hidden size`);
    h = hh;
    ws.push(t);
  }
  return { x, ws, offsets, R, d, h, N };
}

/**
 * The 3N weights (each d·h floats) copied into one [3N·d·h] buffer, weight i at i·d·h, so one
 * program can read any expert's block. A program binds at most the device's storage buffers
 * less one (its output): one program per group, all writing into the same output.
 */
function packWeights(b: ExpertBackend, ws: tf.TensorInfo[], dh: number): tf.TensorInfo {
  const perProgram = Math.max(1, b.device.limits.maxStorageBuffersPerShaderStage - 1);
  let out: tf.TensorInfo | undefined;
  for (let base = 0; base < ws.length; base += perProgram) {
    const group = ws.slice(base, base + perProgram);
    const names = group.map((_, i) => `w${i}`);
    const pick = names.map((n, i) => `if (which == ${i}) { v = ${n}[off]; }`).join(' else ');
    const threads = group.length * dh;
    const p = new ThreadProgram([ws.length * dh], names, threads, `moecatExpertsPack${group.length}`, `
          let which = index / uniforms.dh;
          let off = index - which * uniforms.dh;
          var v = 0.0;
          ${pick}
          setOutputAtIndex(uniforms.base + index, v);`, 'dh : i32, base : i32,');
    out = b.runWebGPUProgram(p, group, 'float32', [int(threads), int(dh), int(base * dh)], out);
  }
  return out!;
}

/** The expert of each row, from the offsets (an upload, no dispatch). */
function rowExperts(b: ExpertBackend, offsets: number[], R: number): tf.TensorInfo {
  const ids = new Int32Array(R);
  for (let e = 0; e + 1 < offsets.length; e++) ids.fill(e, offsets[e], offsets[e + 1]);
  return b.makeTensorInfo([R], 'int32', ids);
}

/**
 * out[r, k] = Σ_i x[r, i]·W_e[i, k] (i ascending) with W_e the gate (kind 0) or up (kind 1)
 * weight of row r's expert.
 */
function projectIn(b: ExpertBackend, x: tf.TensorInfo, wp: tf.TensorInfo, ids: tf.TensorInfo, kind: number, s: ExpertInputs): tf.TensorInfo {
  const n = s.R * s.h;
  const p = new ThreadProgram([s.R, s.h], ['xIn', 'wIn', 'idIn'], n, 'moecatExpertsIn', `
          let r = index / uniforms.h;
          let k = index - r * uniforms.h;
          let wo = (3 * idIn[r] + uniforms.kind) * uniforms.d * uniforms.h + k;
          let xo = r * uniforms.d;
          var acc = 0.0;
          for (var i = 0; i < uniforms.d; i = i + 1) { acc = acc + xIn[xo + i] * wIn[wo + i * uniforms.h]; }
          setOutputAtIndex(index, acc);`, 'd : i32, h : i32, kind : i32,');
  return b.runWebGPUProgram(p, [x, wp, ids], 'float32', [int(n), int(s.d), int(s.h), int(kind)]);
}

/** y[r, j] = Σ_k a[r, k]·Wd_e[k, j] (k ascending), Wd_e the down weight of row r's expert. */
function projectOut(b: ExpertBackend, a: tf.TensorInfo, wp: tf.TensorInfo, ids: tf.TensorInfo, s: ExpertInputs): tf.TensorInfo {
  const n = s.R * s.d;
  const p = new ThreadProgram([s.R, s.d], ['aIn', 'wIn', 'idIn'], n, 'moecatExpertsOut', `
          let r = index / uniforms.d;
          let j = index - r * uniforms.d;
          let wo = (3 * idIn[r] + 2) * uniforms.d * uniforms.h + j;
          let ao = r * uniforms.h;
          var acc = 0.0;
          for (var k = 0; k < uniforms.h; k = k + 1) { acc = acc + aIn[ao + k] * wIn[wo + k * uniforms.d]; }
          setOutputAtIndex(index, acc);`, 'd : i32, h : i32,');
  return b.runWebGPUProgram(p, [a, wp, ids], 'float32', [int(n), int(s.d), int(s.h)]);
}

/** Forward: outputs y [R, d] and, for the gradient, g, u, sigmoid(g), a [R, h]. */
function experts({ inputs, backend, attrs }: Args): tf.TensorInfo[] {
  const b = backend as ExpertBackend;
  const s = expertInputs(inputs, kernelAttrs<{ offsets: number[] }>(attrs).offsets, EXPERTS_KERNEL);
  const wp = packWeights(b, s.ws, s.d * s.h);
  const ids = rowExperts(b, s.offsets, s.R);
  try {
    const g = projectIn(b, s.x, wp, ids, 0, s);
    const u = projectIn(b, s.x, wp, ids, 1, s);
    const [a, sig] = siluMul({ inputs: { g, u }, backend });
    const y = projectOut(b, a, wp, ids, s);
    return [y, g, u, sig, a];
  } finally {
    b.disposeData(wp.dataId);
    b.disposeData(ids.dataId);
  }
}

/**
 * Backward, in the composite's formulas: dA = dY·Wdᵀ, dWd = Aᵀ·dY; dG = dA·u·s·(1 + g·(1 − s)),
 * dU = dA·g·s; dWg = Xᵀ·dG, dWu = Xᵀ·dU; dX = dG·Wgᵀ + dU·Wuᵀ (two sums, then one add).
 * Outputs dx and the 3N weight gradients (zeros for an expert without rows).
 */
function expertsGrad({ inputs, backend, attrs }: Args): tf.TensorInfo[] {
  const b = backend as ExpertBackend;
  const s = expertInputs(inputs, kernelAttrs<{ offsets: number[] }>(attrs).offsets, EXPERTS_GRAD_KERNEL);
  const [g, u, sig, a, dy] = (['g', 'u', 'sig', 'a', 'dy'] as const).map((k) => {
    const t = inputs[k] as tf.TensorInfo | undefined;
    const n = k === 'dy' ? s.R * s.d : s.R * s.h;
    if (!t || t.dtype !== 'float32' || t.shape.reduce((p, q) => p * q, 1) !== n) throw new Error(`${EXPERTS_GRAD_KERNEL}: ${k} does not match x (expected ${n} float32 values)`);
    return t;
  });
  const { R, d, h, N } = s;
  const dh = d * h;
  const wp = packWeights(b, s.ws, dh);
  const ids = rowExperts(b, s.offsets, R);
  // dGU [2, R, h]: dG then dU; each invocation computes dA[r, k] once (j ascending).
  const gu = b.runWebGPUProgram(new ThreadProgram([2, R, h], ['dyIn', 'wIn', 'idIn', 'gIn', 'uIn', 'sigIn'], R * h, 'moecatExpertsDgu', `
          let r = index / uniforms.h;
          let k = index - r * uniforms.h;
          let wo = (3 * idIn[r] + 2) * uniforms.d * uniforms.h + k * uniforms.d;
          let yo = r * uniforms.d;
          var da = 0.0;
          for (var j = 0; j < uniforms.d; j = j + 1) { da = da + dyIn[yo + j] * wIn[wo + j]; }
          let sg = sigIn[index];
          setOutputAtIndex(index, da * uIn[index] * sg * (1.0 + gIn[index] * (1.0 - sg)));
          setOutputAtIndex(uniforms.threads + index, da * gIn[index] * sg);`, 'd : i32, h : i32,'), [dy, wp, ids, g, u, sig], 'float32', [int(R * h), int(d), int(h)]);
  try {
    const dx = b.runWebGPUProgram(new ThreadProgram([R, d], ['guIn', 'wIn', 'idIn'], R * d, 'moecatExpertsDx', `
          let r = index / uniforms.d;
          let i = index - r * uniforms.d;
          let wo = 3 * idIn[r] * uniforms.d * uniforms.h + i * uniforms.h;
          let go = r * uniforms.h;
          let uo = uniforms.rows * uniforms.h + go;
          var sg = 0.0;
          for (var k = 0; k < uniforms.h; k = k + 1) { sg = sg + guIn[go + k] * wIn[wo + k]; }
          var su = 0.0;
          for (var k = 0; k < uniforms.h; k = k + 1) { su = su + guIn[uo + k] * wIn[wo + uniforms.d * uniforms.h + k]; }
          setOutputAtIndex(index, sg + su);`, 'd : i32, h : i32, rows : i32,'), [gu, wp, ids], 'float32', [int(R * d), int(d), int(h), int(R)]);
    const dW: tf.TensorInfo[] = [];
    for (let e = 0; e < N; e++) {
      const lo = s.offsets[e];
      const hi = s.offsets[e + 1];
      // dWg, dWu [d, h]: Σ over the expert's rows r (ascending) of x[r, i]·dG|dU[r, k].
      for (const kind of [0, 1]) {
        dW.push(b.runWebGPUProgram(new ThreadProgram([d, h], ['xIn', 'guIn'], dh, 'moecatExpertsDwIn', `
          let i = index / uniforms.h;
          let k = index - i * uniforms.h;
          let go = uniforms.kind * uniforms.rows * uniforms.h + k;
          var acc = 0.0;
          for (var r = uniforms.lo; r < uniforms.hi; r = r + 1) { acc = acc + xIn[r * uniforms.d + i] * guIn[go + r * uniforms.h]; }
          setOutputAtIndex(index, acc);`, 'd : i32, h : i32, rows : i32, kind : i32, lo : i32, hi : i32,'), [s.x, gu], 'float32', [int(dh), int(d), int(h), int(R), int(kind), int(lo), int(hi)]));
      }
      // dWd [h, d]: Σ over the expert's rows r (ascending) of a[r, k]·dy[r, j].
      dW.push(b.runWebGPUProgram(new ThreadProgram([h, d], ['aIn', 'dyIn'], dh, 'moecatExpertsDwOut', `
          let k = index / uniforms.d;
          let j = index - k * uniforms.d;
          var acc = 0.0;
          for (var r = uniforms.lo; r < uniforms.hi; r = r + 1) { acc = acc + aIn[r * uniforms.h + k] * dyIn[r * uniforms.d + j]; }
          setOutputAtIndex(index, acc);`, 'd : i32, h : i32, lo : i32, hi : i32,'), [a, dy], 'float32', [int(dh), int(d), int(h), int(lo), int(hi)]));
    }
    return [dx, ...dW];
  } finally {
    for (const t of [wp, ids, gu]) b.disposeData(t.dataId);
  }
}

export const EXPERT_KERNELS: Record<string, (a: Args) => tf.TensorInfo[]> = {
  [EXPERTS_KERNEL]: experts,
  [EXPERTS_GRAD_KERNEL]: expertsGrad,
};

let registered = false;

/** Registers the experts kernels for webgpu (model/ops.ts expertsFfn then takes its fused path). */
export function registerExpertKernels(): void {
  if (registered) return;
  registered = true;
  for (const [kernelName, fn] of Object.entries(EXPERT_KERNELS)) {
    if (tf.getKernel(kernelName, 'webgpu')) tf.unregisterKernel(kernelName, 'webgpu');
    tf.registerKernel({ kernelName, backendName: 'webgpu', kernelFunc: fn as tf.KernelFunc });
  }
}

/** Removes them again (specs and the benchmark compare against the composite path). */
export function unregisterExpertKernels(): void {
  if (!registered) return;
  registered = false;
  for (const kernelName of Object.keys(EXPERT_KERNELS)) tf.unregisterKernel(kernelName, 'webgpu');
}

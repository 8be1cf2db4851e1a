/**
 * Every FFN expert of a MoE layer, forward and backward with SwiGLU, as a handful of WGSL
 * programs on the webgpu backend, registered under the kernel names model/ops.ts expertsFfn
 * uses for the native CPU path (core/kernelNames.ts). The composite ran, per expert with rows,
 * a split block, three matMuls and the activation forward, six matMuls, the activation gradient,
 * an add and a slice backward: about 15 dispatches per expert and layer. Here:
 *
 * - forward: pack the 3N weights into one buffer (one program per group of storage bindings),
 *   G = X·Wg and U = X·Wu (one program each, every block of rows reading its own expert's
 *   weights), the SwiGLU activation (the fused kernel's two programs), Y = A·Wd: pack + 5
 *   dispatches;
 * - backward: pack again (transposed), dA = dY·Wdᵀ with (dG, dU) from the activation gradient
 *   in one program, dX = dG·Wgᵀ + dU·Wuᵀ in one, and one program per weight gradient (each
 *   output tensor needs its own program): pack + 2 + 3N dispatches.
 *
 * Each invocation computes a block of 4 rows x 4 columns (row blocks never straddle two
 * experts), which reads a quarter of the operands a one-element invocation would.
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
  device: { limits: { maxStorageBuffersPerShaderStage: number; maxStorageBufferBindingSize: number } };
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
 * program can read any expert's block; `transpose` stores each transposed (the backward reads
 * Wdᵀ and Wgᵀ, Wuᵀ along their rows). A program binds at most the device's storage buffers
 * less one (its output): one program per group, all writing into the same output.
 */
function packWeights(b: ExpertBackend, ws: tf.TensorInfo[], d: number, h: number, transpose: boolean): tf.TensorInfo {
  const dh = d * h;
  const bytes = ws.length * dh * 4;
  const limit = b.device.limits.maxStorageBufferBindingSize;
  if (bytes > limit) {
    const mib = (n: number) => (n / 2 ** 20).toFixed(0);
    throw new Error(`${EXPERTS_KERNEL}: the ${ws.length / 3} experts' packed weights (${mib(bytes)} MiB) exceed this device's storage binding size (${mib(limit)} MiB); use fewer or smaller experts per layer on this adapter`);
  }
  const perProgram = Math.max(1, b.device.limits.maxStorageBuffersPerShaderStage - 1);
  let out: tf.TensorInfo | undefined;
  for (let base = 0; base < ws.length; base += perProgram) {
    const group = ws.slice(base, base + perProgram);
    const names = group.map((_, i) => `w${i}`);
    const pick = names.map((n, i) => `if (which == ${i}) { v = ${n}[src]; }`).join(' else ');
    const threads = group.length * dh;
    const p = new ThreadProgram([ws.length * dh], names, threads, `moecatExpertsPack${group.length}`, `
          let which = index / uniforms.dh;
          let off = index - which * uniforms.dh;
          var src = off;
          if (uniforms.transpose == 1) {
            // Entry (r, c) of a [rows, cols] weight goes to c·rows + r: gate and up are [d, h], down [h, d].
            let down = (uniforms.first + which) % 3 == 2;
            let rows = select(uniforms.d, uniforms.h, down);
            let c = off / rows;
            src = (off - c * rows) * (uniforms.dh / rows) + c;
          }
          var v = 0.0;
          ${pick}
          setOutputAtIndex(uniforms.first * uniforms.dh + index, v);`, 'dh : i32, first : i32, d : i32, h : i32, transpose : i32,');
    out = b.runWebGPUProgram(p, group, 'float32', [int(threads), int(dh), int(base), int(d), int(h), int(transpose ? 1 : 0)], out);
  }
  return out!;
}

/**
 * Row blocks of at most 4 rows that never straddle two experts, as [first row, end row, expert]
 * triples (an upload, no dispatch): one invocation computes a block of 4 rows x 4 columns.
 */
function rowTiles(b: ExpertBackend, offsets: number[]): { tiles: tf.TensorInfo; count: number } {
  const t: number[] = [];
  for (let e = 0; e + 1 < offsets.length; e++) {
    for (let r = offsets[e]; r < offsets[e + 1]; r += 4) t.push(r, Math.min(r + 4, offsets[e + 1]), e);
  }
  return { tiles: b.makeTensorInfo([t.length / 3, 3], 'int32', Int32Array.from(t)), count: t.length / 3 };
}

/** The 16 entries of a 4 x 4 block: `write(row, col, value)` where both are in range. */
function blockWrites(rows: string, write: (row: string, col: string, v: string) => string): string {
  const out: string[] = [];
  for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) out.push(`if (${i} < ${rows} && c0 + ${j} < uniforms.n) { ${write(`r0 + ${i}`, `c0 + ${j}`, `acc${i}[${j}]`)} }`);
  return out.join('\n          ');
}

/**
 * A GEMM over row blocks whose weight is the block's expert's: acc[r, c] = Σ_k A[r·lda + aOff + k]·
 * W[(3e + kind)·d·h + k·sk + c·sn] (k ascending), for `n` columns; `second` adds a second such
 * sum (its own A offset and weight kind) into a second accumulator. `epilogue` writes the block.
 */
function rowGemmBody(second: boolean, epilogue: string): string {
  const loads = (acc: string, aOff: string, kind: string) => `
            let wv${acc} = vec4<f32>(wIn[(3 * e + ${kind}) * uniforms.dh + k * uniforms.sk + cc.x * uniforms.sn], wIn[(3 * e + ${kind}) * uniforms.dh + k * uniforms.sk + cc.y * uniforms.sn],
                                     wIn[(3 * e + ${kind}) * uniforms.dh + k * uniforms.sk + cc.z * uniforms.sn], wIn[(3 * e + ${kind}) * uniforms.dh + k * uniforms.sk + cc.w * uniforms.sn]);
            ${acc}0 = ${acc}0 + aIn[rr.x * uniforms.lda + ${aOff} + k] * wv${acc};
            ${acc}1 = ${acc}1 + aIn[rr.y * uniforms.lda + ${aOff} + k] * wv${acc};
            ${acc}2 = ${acc}2 + aIn[rr.z * uniforms.lda + ${aOff} + k] * wv${acc};
            ${acc}3 = ${acc}3 + aIn[rr.w * uniforms.lda + ${aOff} + k] * wv${acc};`;
  const body = `
          let tile = index / uniforms.nb;
          let c0 = (index - tile * uniforms.nb) * 4;
          let r0 = tilesIn[tile * 3];
          let rn = tilesIn[tile * 3 + 1] - r0;
          let e = tilesIn[tile * 3 + 2];
          // Rows and columns past the block's end read in-range entries and are never written.
          let rr = vec4<i32>(r0, r0 + min(1, rn - 1), r0 + min(2, rn - 1), r0 + min(3, rn - 1));
          let cc = vec4<i32>(c0, min(c0 + 1, uniforms.n - 1), min(c0 + 2, uniforms.n - 1), min(c0 + 3, uniforms.n - 1));
          var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0); var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
          ${second ? 'var bcc0 = vec4<f32>(0.0); var bcc1 = vec4<f32>(0.0); var bcc2 = vec4<f32>(0.0); var bcc3 = vec4<f32>(0.0);' : ''}
          for (var k = 0; k < uniforms.kdim; k = k + 1) {${loads('acc', 'uniforms.aOff', 'uniforms.kind')}${second ? loads('bcc', 'uniforms.aOff2', 'uniforms.kind2') : ''}
          }
          ${second ? 'acc0 = acc0 + bcc0; acc1 = acc1 + bcc1; acc2 = acc2 + bcc2; acc3 = acc3 + bcc3;' : ''}
          ${epilogue}`;
  return body;
}

interface GemmRun {
  a: tf.TensorInfo;
  extra?: tf.TensorInfo[];
  extraNames?: string[];
  out: number[];
  n: number;
  kdim: number;
  lda: number;
  aOff?: number;
  aOff2?: number;
  sk: number;
  sn: number;
  kind: number;
  kind2?: number;
  half?: number;
}

function runRowGemm(b: ExpertBackend, key: string, body: string, wp: tf.TensorInfo, tiles: { tiles: tf.TensorInfo; count: number }, s: ExpertInputs, g: GemmRun): tf.TensorInfo {
  const nb = Math.ceil(g.n / 4);
  const threads = tiles.count * nb;
  const extra = g.extra ?? [];
  const names = ['aIn', 'wIn', 'tilesIn', ...(g.extraNames ?? [])];
  const p = new ThreadProgram(g.out, names, threads, key, body, 'nb : i32, n : i32, kdim : i32, lda : i32, aOff : i32, aOff2 : i32, dh : i32, sk : i32, sn : i32, kind : i32, kind2 : i32, half : i32,');
  return b.runWebGPUProgram(p, [g.a, wp, tiles.tiles, ...extra], 'float32', [
    int(threads), int(nb), int(g.n), int(g.kdim), int(g.lda), int(g.aOff ?? 0), int(g.aOff2 ?? 0), int(s.d * s.h), int(g.sk), int(g.sn), int(g.kind), int(g.kind2 ?? 0), int(g.half ?? 0),
  ]);
}

const plainWrite = blockWrites('rn', (r, c, v) => `setOutputAtIndex((${r}) * uniforms.n + ${c}, ${v});`);
const PROJECT_BODY = rowGemmBody(false, plainWrite);
const DX_BODY = rowGemmBody(true, plainWrite);
// dA then (dG, dU) into [2, R, h] with the activation gradient's formulas.
const DGU_BODY = rowGemmBody(false, blockWrites('rn', (r, c, v) => `{ let p = (${r}) * uniforms.n + ${c}; let da = ${v}; let sg = sigIn[p]; setOutputAtIndex(p, da * uIn[p] * sg * (1.0 + gIn[p] * (1.0 - sg))); setOutputAtIndex(uniforms.half + p, da * gIn[p] * sg); }`));

/**
 * A weight gradient of one expert, 4 x 4 entries per invocation: out[m, c] = Σ over the
 * expert's rows r (ascending) of P[r·lp + m]·Q[r·lq + qOff + c], for an [mdim, n] output.
 */
const WEIGHT_GRAD_BODY = `
          let mb = index / uniforms.nb;
          let c0 = (index - mb * uniforms.nb) * 4;
          let m0 = mb * 4;
          let mm = vec4<i32>(m0, min(m0 + 1, uniforms.mdim - 1), min(m0 + 2, uniforms.mdim - 1), min(m0 + 3, uniforms.mdim - 1));
          let cc = vec4<i32>(c0, min(c0 + 1, uniforms.n - 1), min(c0 + 2, uniforms.n - 1), min(c0 + 3, uniforms.n - 1));
          var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0); var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
          for (var r = uniforms.lo; r < uniforms.hi; r = r + 1) {
            let qo = r * uniforms.lq + uniforms.qOff;
            let qv = vec4<f32>(qIn[qo + cc.x], qIn[qo + cc.y], qIn[qo + cc.z], qIn[qo + cc.w]);
            let po = r * uniforms.lp;
            acc0 = acc0 + pIn[po + mm.x] * qv;
            acc1 = acc1 + pIn[po + mm.y] * qv;
            acc2 = acc2 + pIn[po + mm.z] * qv;
            acc3 = acc3 + pIn[po + mm.w] * qv;
          }
          let r0 = m0;
          let rows = uniforms.mdim - m0;
          ${blockWrites('rows', (r, c, v) => `setOutputAtIndex((${r}) * uniforms.n + ${c}, ${v});`)}`;

function weightGrad(b: ExpertBackend, key: string, P: tf.TensorInfo, Q: tf.TensorInfo, mdim: number, n: number, lp: number, lq: number, qOff: number, lo: number, hi: number): tf.TensorInfo {
  const nb = Math.ceil(n / 4);
  const threads = Math.ceil(mdim / 4) * nb;
  return b.runWebGPUProgram(new ThreadProgram([mdim, n], ['pIn', 'qIn'], threads, key, WEIGHT_GRAD_BODY, 'nb : i32, n : i32, mdim : i32, lp : i32, lq : i32, qOff : i32, lo : i32, hi : i32,'), [P, Q], 'float32', [
    int(threads), int(nb), int(n), int(mdim), int(lp), int(lq), int(qOff), int(lo), int(hi),
  ]);
}

/** Forward: outputs y [R, d] and, for the gradient, g, u, sigmoid(g), a [R, h]. */
function experts({ inputs, backend, attrs }: Args): tf.TensorInfo[] {
  const b = backend as ExpertBackend;
  const s = expertInputs(inputs, kernelAttrs<{ offsets: number[] }>(attrs).offsets, EXPERTS_KERNEL);
  const { R, d, h } = s;
  const wp = packWeights(b, s.ws, d, h, false);
  const tiles = rowTiles(b, s.offsets);
  try {
    // G = X·Wg, U = X·Wu: weight entry (i, c) at i·h + c.
    const g = runRowGemm(b, 'moecatExpertsIn', PROJECT_BODY, wp, tiles, s, { a: s.x, out: [R, h], n: h, kdim: d, lda: d, sk: h, sn: 1, kind: 0 });
    const u = runRowGemm(b, 'moecatExpertsIn', PROJECT_BODY, wp, tiles, s, { a: s.x, out: [R, h], n: h, kdim: d, lda: d, sk: h, sn: 1, kind: 1 });
    const [a, sig] = siluMul({ inputs: { g, u }, backend });
    // Y = A·Wd: Wd entry (k, j) at k·d + j.
    const y = runRowGemm(b, 'moecatExpertsOut', PROJECT_BODY, wp, tiles, s, { a, out: [R, d], n: d, kdim: h, lda: h, sk: d, sn: 1, kind: 2 });
    return [y, g, u, sig, a];
  } finally {
    b.disposeData(wp.dataId);
    b.disposeData(tiles.tiles.dataId);
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
  const wp = packWeights(b, s.ws, d, h, true);
  const tiles = rowTiles(b, s.offsets);
  // dGU [2, R, h]: dG then dU from dA = dY·Wdᵀ (Wdᵀ entry (j, c) at j·h + c).
  const gu = runRowGemm(b, 'moecatExpertsDgu', DGU_BODY, wp, tiles, s, { a: dy, extra: [g, u, sig], extraNames: ['gIn', 'uIn', 'sigIn'], out: [2, R, h], n: h, kdim: d, lda: d, sk: h, sn: 1, kind: 2, half: R * h });
  try {
    // dX = dG·Wgᵀ + dU·Wuᵀ (Wgᵀ, Wuᵀ entry (k, i) at k·d + i).
    const dx = runRowGemm(b, 'moecatExpertsDx', DX_BODY, wp, tiles, s, { a: gu, out: [R, d], n: d, kdim: h, lda: h, aOff: 0, aOff2: R * h, sk: d, sn: 1, kind: 0, kind2: 1 });
    const dW: tf.TensorInfo[] = [];
    for (let e = 0; e < N; e++) {
      const [lo, hi] = [s.offsets[e], s.offsets[e + 1]];
      // dWg, dWu [d, h] = Xᵀ·dG|dU and dWd [h, d] = Aᵀ·dY over the expert's rows, ascending.
      dW.push(weightGrad(b, 'moecatExpertsDwIn', s.x, gu, d, h, d, h, 0, lo, hi));
      dW.push(weightGrad(b, 'moecatExpertsDwIn', s.x, gu, d, h, d, h, R * h, lo, hi));
      dW.push(weightGrad(b, 'moecatExpertsDwOut', a, dy, h, d, h, d, 0, lo, hi));
    }
    return [dx, ...dW];
  } finally {
    for (const t of [wp, tiles.tiles, gu]) b.disposeData(t.dataId);
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

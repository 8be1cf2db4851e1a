/**
 * Scaled dot-product attention as two WGSL programs forward and four backward on the webgpu
 * backend, registered under the kernel names model/attention.ts takes when the backend has them
 * (core/kernelNames.ts). The composite transposed q, k, v to head-major, ran a matMul, a scale,
 * the mask add, the softmax and a matMul, transposed back, and about as many programs backward
 * (matMul gradients, transposes, the scale's gradient): ~19 dispatches per block against 6.
 *
 * Token-major q [B, S, H, dq], k [B, Sk, Hk, dq], v [B, Sk, Hk, dv] (query head h reads KV head
 * h / (H / Hk)); additive mask [S, Sk] or [B, 1, S, Sk], or none.
 * Forward: p[b, h, i, :] = softmax(q·kᵀ·scale + mask) (one invocation per row, as the fused
 * softmax), o[b, i, h, :] = Σ_j p[b, h, i, j]·v[b, j, :] (j ascending).
 * Backward: dS = p·(dP − Σ_j dP·p)·scale with dP = dO·vᵀ (one invocation per row);
 * dq = dS·k; dk = dSᵀ·q and dv = pᵀ·dO, each summed over the heads of the KV head, then the
 * queries, ascending. o, dq, dk and dv compute a 4 x 4 block per invocation; p and dS one row.
 * No workgroup-shared-memory tiling: they remove dispatches, they are not tuned for a large GPU.
 * spec/webgpu/sdpa.spec.ts checks both against the composite ops.
 */
import * as tf from '@tensorflow/tfjs';
import { ATTENTION_GRAD_KERNEL, ATTENTION_KERNEL } from '../kernelNames';
import { kernelAttrs } from '../tfjsInternals';
import { Args, Backend, count, int, ThreadProgram } from './fusedKernels';

interface Dims {
  B: number;
  S: number;
  Sk: number;
  H: number;
  Hk: number;
  dq: number;
  dv: number;
  maskMode: number;
}

function dims(name: string, q?: tf.TensorInfo, k?: tf.TensorInfo, v?: tf.TensorInfo, mask?: tf.TensorInfo): Dims {
  const ok = (t?: tf.TensorInfo) => !!t && t.dtype === 'float32' && t.shape.length === 4;
  if (!ok(q) || !ok(k) || !ok(v)) throw new Error(`${name}: expects float32 token-major q [B, S, H, dq], k [B, Sk, Hk, dq], v [B, Sk, Hk, dv]`);
  const [B, S, H, dq] = q!.shape;
  const [Bk, Sk, Hk, dk] = k!.shape;
  const [Bv, Sv, Hv, dv] = v!.shape;
  if (Bk !== B || Bv !== B || Sv !== Sk || Hv !== Hk || dk !== dq || !(Hk >= 1) || H % Hk !== 0) {
    throw new Error(`${name}: shapes q [${q!.shape}], k [${k!.shape}], v [${v!.shape}] do not fit (same B, Sk, KV heads dividing H, k's dim = q's)`);
  }
  let maskMode = 0;
  if (mask) {
    const n = count(mask);
    maskMode = n === S * Sk ? 1 : n === B * S * Sk ? 2 : -1;
    if (maskMode < 0 || mask.dtype !== 'float32') throw new Error(`${name}: mask must be float32 [${S}, ${Sk}] or [${B}, 1, ${S}, ${Sk}], got [${mask.shape}]`);
  }
  return { B, S, Sk, H, Hk, dq, dv, maskMode };
}

const dimUniforms = 'S : i32, Sk : i32, H : i32, Hk : i32, dq : i32, dv : i32, groups : i32,';
const dimValues = (d: Dims) => [int(d.S), int(d.Sk), int(d.H), int(d.Hk), int(d.dq), int(d.dv), int(d.H / d.Hk)];
/** (b, h, i) of a row index of [B, H, S, ·], and its KV head. */
const rowCoords = `
          let i = index % uniforms.S;
          let bh = index / uniforms.S;
          let h = bh % uniforms.H;
          let b = bh / uniforms.H;
          let hk = h / uniforms.groups;
          let po = index * uniforms.Sk;`;

/** The 16 writes of a 4 x 4 block (rows r0.., columns c0..) that fall inside `rows` x `dim`. */
function blockWrites(rows: string, index: (i: string, c: string) => string): string {
  const out: string[] = [];
  for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) out.push(`if (r0 + ${i} < ${rows} && c0 + ${j} < uniforms.dim) { setOutputAtIndex(${index(`r0 + ${i}`, `c0 + ${j}`)}, acc${i}[${j}]); }`);
  return out.join('\n          ');
}

/** Block coordinates: (b, h, 4 rows from r0, 4 columns from c0) of `rows` rows per (b, h). */
const blockCoords = (rows: string, heads: string) => `
          let nb = (uniforms.dim + 3) / 4;
          let rb = (${rows} + 3) / 4;
          let cb = index % nb;
          let t = index / nb;
          let r0 = (t % rb) * 4;
          let bh = t / rb;
          let h = bh % ${heads};
          let b = bh / ${heads};
          let c0 = cb * 4;
          let cc = vec4<i32>(c0, min(c0 + 1, uniforms.dim - 1), min(c0 + 2, uniforms.dim - 1), min(c0 + 3, uniforms.dim - 1));
          var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0); var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);`;

/**
 * out[b, i, h, c] = Σ_j w[b, h, i, j]·x[b, j, h / groups, c] (j ascending): o = p·v and
 * dq = dS·k, token-major [B, S, H, dim]; 4 queries x 4 channels per invocation.
 */
function rowsTimesKv(b: Backend, key: string, w: tf.TensorInfo, x: tf.TensorInfo, d: Dims, dim: number): tf.TensorInfo {
  const threads = d.B * d.H * Math.ceil(d.S / 4) * Math.ceil(dim / 4);
  return b.runWebGPUProgram(new ThreadProgram([d.B, d.S, d.H, dim], ['wIn', 'xIn'], threads, key, `${blockCoords('uniforms.S', 'uniforms.H')}
          let hk = h / uniforms.groups;
          let wo = (b * uniforms.H + h) * uniforms.S;
          let ri = vec4<i32>(r0, min(r0 + 1, uniforms.S - 1), min(r0 + 2, uniforms.S - 1), min(r0 + 3, uniforms.S - 1));
          for (var j = 0; j < uniforms.Sk; j = j + 1) {
            let xo = ((b * uniforms.Sk + j) * uniforms.Hk + hk) * uniforms.dim;
            let xv = vec4<f32>(xIn[xo + cc.x], xIn[xo + cc.y], xIn[xo + cc.z], xIn[xo + cc.w]);
            acc0 = acc0 + wIn[(wo + ri.x) * uniforms.Sk + j] * xv;
            acc1 = acc1 + wIn[(wo + ri.y) * uniforms.Sk + j] * xv;
            acc2 = acc2 + wIn[(wo + ri.z) * uniforms.Sk + j] * xv;
            acc3 = acc3 + wIn[(wo + ri.w) * uniforms.Sk + j] * xv;
          }
          ${blockWrites('uniforms.S', (i, c) => `((b * uniforms.S + ${i}) * uniforms.H + h) * uniforms.dim + ${c}`)}`, `${dimUniforms} dim : i32,`), [w, x], 'float32', [int(threads), ...dimValues(d), int(dim)]);
}

/**
 * out[b, j, hk, c] = Σ over the query heads h of KV head hk, then the queries i (ascending) of
 * w[b, h, i, j]·x[b, i, h, c]: dk = dSᵀ·q and dv = pᵀ·dO, [B, Sk, Hk, dim]; 4 keys x 4 channels
 * per invocation.
 */
function colsTimesQ(b: Backend, key: string, w: tf.TensorInfo, x: tf.TensorInfo, d: Dims, dim: number): tf.TensorInfo {
  const threads = d.B * d.Hk * Math.ceil(d.Sk / 4) * Math.ceil(dim / 4);
  return b.runWebGPUProgram(new ThreadProgram([d.B, d.Sk, d.Hk, dim], ['wIn', 'xIn'], threads, key, `${blockCoords('uniforms.Sk', 'uniforms.Hk')}
          let jj = vec4<i32>(r0, min(r0 + 1, uniforms.Sk - 1), min(r0 + 2, uniforms.Sk - 1), min(r0 + 3, uniforms.Sk - 1));
          for (var g = 0; g < uniforms.groups; g = g + 1) {
            let hq = h * uniforms.groups + g;
            for (var i = 0; i < uniforms.S; i = i + 1) {
              let xo = ((b * uniforms.S + i) * uniforms.H + hq) * uniforms.dim;
              let xv = vec4<f32>(xIn[xo + cc.x], xIn[xo + cc.y], xIn[xo + cc.z], xIn[xo + cc.w]);
              let wo = ((b * uniforms.H + hq) * uniforms.S + i) * uniforms.Sk;
              acc0 = acc0 + wIn[wo + jj.x] * xv;
              acc1 = acc1 + wIn[wo + jj.y] * xv;
              acc2 = acc2 + wIn[wo + jj.z] * xv;
              acc3 = acc3 + wIn[wo + jj.w] * xv;
            }
          }
          ${blockWrites('uniforms.Sk', (j, c) => `((b * uniforms.Sk + ${j}) * uniforms.Hk + h) * uniforms.dim + ${c}`)}`, `${dimUniforms} dim : i32,`), [w, x], 'float32', [int(threads), ...dimValues(d), int(dim)]);
}

function attention({ inputs, backend, attrs }: Args): tf.TensorInfo[] {
  const b = backend as Backend;
  const { q, k, v, mask } = inputs;
  const d = dims(ATTENTION_KERNEL, q, k, v, mask);
  const scale = kernelAttrs<{ scale: number }>(attrs).scale;
  const rows = d.B * d.H * d.S;
  const p = b.runWebGPUProgram(new ThreadProgram([d.B, d.H, d.S, d.Sk], ['qIn', 'kIn', 'maskIn'], rows, 'moecatAttnProbs', `${rowCoords}
          let qo = ((b * uniforms.S + i) * uniforms.H + h) * uniforms.dq;
          let mo = select(0, b * uniforms.S * uniforms.Sk, uniforms.maskMode == 2) + i * uniforms.Sk;
          var m = 0.0;
          for (var j = 0; j < uniforms.Sk; j = j + 1) {
            let ko = ((b * uniforms.Sk + j) * uniforms.Hk + hk) * uniforms.dq;
            var dot = 0.0;
            for (var c = 0; c < uniforms.dq; c = c + 1) { dot = dot + qIn[qo + c] * kIn[ko + c]; }
            var sc = dot * uniforms.scale;
            if (uniforms.maskMode != 0) { sc = sc + maskIn[mo + j]; }
            result[po + j] = sc;
            if (j == 0) { m = sc; } else { m = max(m, sc); }
          }
          var s = 0.0;
          for (var j = 0; j < uniforms.Sk; j = j + 1) { s = s + exp(result[po + j] - m); }
          for (var j = 0; j < uniforms.Sk; j = j + 1) { result[po + j] = exp(result[po + j] - m) / s; }`, `${dimUniforms} maskMode : i32, scale : f32,`), [q!, k!, mask ?? q!], 'float32', [int(rows), ...dimValues(d), int(d.maskMode), { type: 'float32', data: [scale] }]);
  const o = rowsTimesKv(b, 'moecatAttnOut', p, v!, d, d.dv);
  return [o, p];
}

function attentionGrad({ inputs, backend, attrs }: Args): tf.TensorInfo[] {
  const b = backend as Backend;
  const { q, k, v, p, dy } = inputs;
  const d = dims(ATTENTION_GRAD_KERNEL, q, k, v);
  if (!p || count(p) !== d.B * d.H * d.S * d.Sk || !dy || count(dy) !== d.B * d.S * d.H * d.dv) throw new Error(`${ATTENTION_GRAD_KERNEL}: p or dy does not match q, k, v`);
  const scale = kernelAttrs<{ scale: number }>(attrs).scale;
  const rows = d.B * d.H * d.S;
  const ds = b.runWebGPUProgram(new ThreadProgram([d.B, d.H, d.S, d.Sk], ['pIn', 'vIn', 'dyIn'], rows, 'moecatAttnDs', `${rowCoords}
          let yo = ((b * uniforms.S + i) * uniforms.H + h) * uniforms.dv;
          var rs = 0.0;
          for (var j = 0; j < uniforms.Sk; j = j + 1) {
            let vo = ((b * uniforms.Sk + j) * uniforms.Hk + hk) * uniforms.dv;
            var dp = 0.0;
            for (var c = 0; c < uniforms.dv; c = c + 1) { dp = dp + dyIn[yo + c] * vIn[vo + c]; }
            result[po + j] = dp;
            rs = rs + dp * pIn[po + j];
          }
          for (var j = 0; j < uniforms.Sk; j = j + 1) { result[po + j] = pIn[po + j] * (result[po + j] - rs) * uniforms.scale; }`, `${dimUniforms} scale : f32,`), [p!, v!, dy!], 'float32', [int(rows), ...dimValues(d), { type: 'float32', data: [scale] }]);
  try {
    const dq = rowsTimesKv(b, 'moecatAttnDq', ds, k!, d, d.dq);
    // dk = dSᵀ·q and dv = pᵀ·dO: over the query heads of KV head hk, then the queries, ascending.
    return [dq, colsTimesQ(b, 'moecatAttnDk', ds, q!, d, d.dq), colsTimesQ(b, 'moecatAttnDv', p!, dy!, d, d.dv)];
  } finally {
    b.disposeData(ds.dataId);
  }
}

export const SDPA_KERNELS: Record<string, (a: Args) => tf.TensorInfo[]> = {
  [ATTENTION_KERNEL]: attention,
  [ATTENTION_GRAD_KERNEL]: attentionGrad,
};

let registered = false;

/** Registers the attention kernels for webgpu (model/attention.ts then takes its fused path). */
export function registerSdpaKernels(): void {
  if (registered) return;
  registered = true;
  for (const [kernelName, fn] of Object.entries(SDPA_KERNELS)) {
    if (tf.getKernel(kernelName, 'webgpu')) tf.unregisterKernel(kernelName, 'webgpu');
    tf.registerKernel({ kernelName, backendName: 'webgpu', kernelFunc: fn as tf.KernelFunc });
  }
}

/** Removes them again (specs and the benchmark compare against the composite path). */
export function unregisterSdpaKernels(): void {
  if (!registered) return;
  registered = false;
  for (const kernelName of Object.keys(SDPA_KERNELS)) tf.unregisterKernel(kernelName, 'webgpu');
}

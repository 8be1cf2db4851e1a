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
 * queries, ascending. Naive loops (one output element per invocation): they remove dispatches,
 * they are not tiled for a large GPU.
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
  const n = d.B * d.S * d.H * d.dv;
  const o = b.runWebGPUProgram(new ThreadProgram([d.B, d.S, d.H, d.dv], ['pIn', 'vIn'], n, 'moecatAttnOut', `
          let c = index % uniforms.dv;
          let t = index / uniforms.dv;
          let h = t % uniforms.H;
          let bs = t / uniforms.H;
          let i = bs % uniforms.S;
          let b = bs / uniforms.S;
          let hk = h / uniforms.groups;
          let po = ((b * uniforms.H + h) * uniforms.S + i) * uniforms.Sk;
          var acc = 0.0;
          for (var j = 0; j < uniforms.Sk; j = j + 1) { acc = acc + pIn[po + j] * vIn[((b * uniforms.Sk + j) * uniforms.Hk + hk) * uniforms.dv + c]; }
          setOutputAtIndex(index, acc);`, dimUniforms), [p, v!], 'float32', [int(n), ...dimValues(d)]);
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
    const nq = d.B * d.S * d.H * d.dq;
    const dq = b.runWebGPUProgram(new ThreadProgram([d.B, d.S, d.H, d.dq], ['dsIn', 'kIn'], nq, 'moecatAttnDq', `
          let c = index % uniforms.dq;
          let t = index / uniforms.dq;
          let h = t % uniforms.H;
          let bs = t / uniforms.H;
          let i = bs % uniforms.S;
          let b = bs / uniforms.S;
          let hk = h / uniforms.groups;
          let so = ((b * uniforms.H + h) * uniforms.S + i) * uniforms.Sk;
          var acc = 0.0;
          for (var j = 0; j < uniforms.Sk; j = j + 1) { acc = acc + dsIn[so + j] * kIn[((b * uniforms.Sk + j) * uniforms.Hk + hk) * uniforms.dq + c]; }
          setOutputAtIndex(index, acc);`, dimUniforms), [ds, k!], 'float32', [int(nq), ...dimValues(d)]);
    // dk = dSᵀ·q and dv = pᵀ·dO: over the query heads of KV head hk, then the queries, ascending.
    const kvGrad = (key: string, w: tf.TensorInfo, x: tf.TensorInfo, dim: number) => {
      const nk = d.B * d.Sk * d.Hk * dim;
      return b.runWebGPUProgram(new ThreadProgram([d.B, d.Sk, d.Hk, dim], ['wIn', 'xIn'], nk, key, `
          let c = index % uniforms.dim;
          let t = index / uniforms.dim;
          let hk = t % uniforms.Hk;
          let bj = t / uniforms.Hk;
          let j = bj % uniforms.Sk;
          let b = bj / uniforms.Sk;
          var acc = 0.0;
          for (var g = 0; g < uniforms.groups; g = g + 1) {
            let h = hk * uniforms.groups + g;
            for (var i = 0; i < uniforms.S; i = i + 1) {
              acc = acc + wIn[((b * uniforms.H + h) * uniforms.S + i) * uniforms.Sk + j] * xIn[((b * uniforms.S + i) * uniforms.H + h) * uniforms.dim + c];
            }
          }
          setOutputAtIndex(index, acc);`, `${dimUniforms} dim : i32,`), [w, x], 'float32', [int(nk), ...dimValues(d), int(dim)]);
    };
    return [dq, kvGrad('moecatAttnDk', ds, q!, d.dq), kvGrad('moecatAttnDv', p!, dy!, d.dv)];
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

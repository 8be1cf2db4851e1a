/**
 * Attention pieces as one WGSL program each way on the webgpu backend, registered under the
 * kernel names model/ops.ts takes when the backend has them (core/kernelNames.ts):
 *
 * - MoecatRope: rotate-half RoPE on the last `dim − keep` entries of each head (keep = 0: the
 *   whole head; keep = nope dim: MLA's query, whose first part passes through). The composite
 *   ran a split, four multiplies, a subtract, an add and a concat forward (plus a split and a
 *   concat around it for MLA's query), and about as many backward.
 * - MoecatConcatShared: MLA's key, concat([k_nope [B, S, H, dn], k_rope [B, S, 1, dr] broadcast
 *   over the heads]); the composite's Tile gradient was a slice and an add per head.
 *
 * RoPE is element-wise (nothing to order); the shared key's gradient sums its heads in
 * ascending order in one invocation. spec/webgpu/rope.spec.ts checks both against the
 * composite ops.
 *
 * x [B, S, H, dim] with roped halves x1, x2; tables cos, sin [S, half] (or per row [B, S, half]):
 *   y = [x1·c − x2·s, x2·c + x1·s];  dx = [dy1·c + dy2·s, dy2·c − dy1·s].
 */
import * as tf from '@tensorflow/tfjs';
import { CONCAT_SHARED_GRAD_KERNEL, CONCAT_SHARED_KERNEL, ROPE_GRAD_KERNEL, ROPE_KERNEL } from '../kernelNames';
import { kernelAttrs } from '../tfjsInternals';
import { Args, Backend, count, int, ThreadProgram } from './fusedKernels';

function ropeShapes(name: string, x: tf.TensorInfo | undefined, cos: tf.TensorInfo | undefined, sin: tf.TensorInfo | undefined, keep: number) {
  if (!x || x.dtype !== 'float32' || x.shape.length !== 4 || !(keep >= 0 && keep < x.shape[3]) || (x.shape[3] - keep) % 2 !== 0) {
    throw new Error(`${name}: expects a float32 [B, S, H, dim] with an even dim − keep (keep=${keep})`);
  }
  const [B, S, H, D] = x.shape;
  const half = (D - keep) / 2;
  const perRow = cos?.shape.length === 3;
  const want = perRow ? B * S * half : S * half;
  for (const [k, t] of [['cos', cos], ['sin', sin]] as const) {
    if (!t || t.dtype !== 'float32' || count(t) !== want || t.shape[t.shape.length - 1] !== half) throw new Error(`${name}: ${k} must be float32 [${S}, ${half}] or [${B}, ${S}, ${half}], got [${t?.shape}]`);
  }
  return { x, cos: cos!, sin: sin!, S, H, D, half, perRow };
}

/** One program for either direction: `sign` −1 forward (y1 = x1·c − x2·s), +1 backward. */
function rotate(name: string, key: string, sign: number, { inputs, backend, attrs }: Args, xName: 'x' | 'dy'): tf.TensorInfo {
  const b = backend as Backend;
  const keep = kernelAttrs<{ keep?: number }>(attrs)?.keep ?? 0;
  const s = ropeShapes(name, inputs[xName], inputs.cos, inputs.sin, keep);
  const { x, cos, sin } = s;
  const n = count(x);
  // Roped first half: v·c + sign·w·s with w the partner in the second half; second half:
  // v·c − sign·w·s. Entries before `keep` pass through.
  return b.runWebGPUProgram(new ThreadProgram(x.shape.slice(), ['xIn', 'cosIn', 'sinIn'], n, key, `
          let i = index % uniforms.dim - uniforms.keep;
          if (i < 0) {
            setOutputAtIndex(index, xIn[index]);
            return;
          }
          let bs = index / (uniforms.dim * uniforms.heads);
          let row = select(bs % uniforms.seq, bs, uniforms.perRow == 1);
          let lo = i < uniforms.half;
          let t = row * uniforms.half + select(i - uniforms.half, i, lo);
          let c = cosIn[t];
          let sn = sinIn[t];
          if (lo) {
            setOutputAtIndex(index, xIn[index] * c + uniforms.sign * (xIn[index + uniforms.half] * sn));
          } else {
            setOutputAtIndex(index, xIn[index] * c - uniforms.sign * (xIn[index - uniforms.half] * sn));
          }`, 'dim : i32, keep : i32, half : i32, heads : i32, seq : i32, perRow : i32, sign : f32,'), [x, cos, sin], 'float32', [
    int(n), int(s.D), int(keep), int(s.half), int(s.H), int(s.S), int(s.perRow ? 1 : 0), { type: 'float32', data: [sign] },
  ]);
}

function sharedShapes(name: string, a: tf.TensorInfo | undefined, r: tf.TensorInfo | undefined) {
  if (!a || !r || a.dtype !== 'float32' || r.dtype !== 'float32' || a.shape.length !== 4 || r.shape.length !== 4 || r.shape[2] !== 1 || a.shape[0] !== r.shape[0] || a.shape[1] !== r.shape[1]) {
    throw new Error(`${name}: expects float32 a [B, S, H, da] and r [B, S, 1, dr], got [${a?.shape}] and [${r?.shape}]`);
  }
  const [B, S, H, da] = a.shape;
  return { a, r, B, S, H, da, dr: r.shape[3] };
}

/** y[b, s, h, :] = [a[b, s, h, :], r[b, s, 0, :]]. */
function concatShared({ inputs, backend }: Args): tf.TensorInfo {
  const b = backend as Backend;
  const s = sharedShapes(CONCAT_SHARED_KERNEL, inputs.a, inputs.r);
  const { a, r } = s;
  const w = s.da + s.dr;
  const n = s.B * s.S * s.H * w;
  return b.runWebGPUProgram(new ThreadProgram([s.B, s.S, s.H, w], ['aIn', 'rIn'], n, 'moecatConcatShared', `
          let row = index / uniforms.w;
          let j = index - row * uniforms.w;
          if (j < uniforms.da) {
            setOutputAtIndex(index, aIn[row * uniforms.da + j]);
          } else {
            setOutputAtIndex(index, rIn[(row / uniforms.heads) * (uniforms.w - uniforms.da) + j - uniforms.da]);
          }`, 'w : i32, da : i32, heads : i32,'), [a, r], 'float32', [int(n), int(w), int(s.da), int(s.H)]);
}

/** da = dy[..., :da]; dr[b, s, 0, j] = Σ_h dy[b, s, h, da + j], h ascending. */
function concatSharedGrad({ inputs, backend }: Args): tf.TensorInfo[] {
  const b = backend as Backend;
  const s = sharedShapes(CONCAT_SHARED_GRAD_KERNEL, inputs.a, inputs.r);
  const { a, r } = s;
  const dy = inputs.dy;
  const w = s.da + s.dr;
  if (!dy || count(dy) !== s.B * s.S * s.H * w) throw new Error(`${CONCAT_SHARED_GRAD_KERNEL}: dy must be float32 [${s.B}, ${s.S}, ${s.H}, ${w}]`);
  const na = count(a);
  const da = b.runWebGPUProgram(new ThreadProgram(a.shape.slice(), ['dyIn'], na, 'moecatConcatSharedDa', `
          let row = index / uniforms.da;
          setOutputAtIndex(index, dyIn[row * uniforms.w + index - row * uniforms.da]);`, 'w : i32, da : i32,'), [dy], 'float32', [int(na), int(w), int(s.da)]);
  const nr = count(r);
  const dr = b.runWebGPUProgram(new ThreadProgram(r.shape.slice(), ['dyIn'], nr, 'moecatConcatSharedDr', `
          let bs = index / uniforms.dr;
          let o = bs * uniforms.heads * uniforms.w + uniforms.da + index - bs * uniforms.dr;
          var acc = 0.0;
          for (var h = 0; h < uniforms.heads; h = h + 1) { acc = acc + dyIn[o + h * uniforms.w]; }
          setOutputAtIndex(index, acc);`, 'w : i32, da : i32, dr : i32, heads : i32,'), [dy], 'float32', [int(nr), int(w), int(s.da), int(s.dr), int(s.H)]);
  return [da, dr];
}

export const ATTENTION_KERNELS: Record<string, (a: Args) => tf.TensorInfo | tf.TensorInfo[]> = {
  [ROPE_KERNEL]: (a) => rotate(ROPE_KERNEL, 'moecatRope', -1, a, 'x'),
  [ROPE_GRAD_KERNEL]: (a) => rotate(ROPE_GRAD_KERNEL, 'moecatRopeGrad', 1, a, 'dy'),
  [CONCAT_SHARED_KERNEL]: concatShared,
  [CONCAT_SHARED_GRAD_KERNEL]: concatSharedGrad,
};

let registered = false;

/** Registers the attention kernels for webgpu (model/ops.ts then takes its fused paths). */
export function registerRopeKernels(): void {
  if (registered) return;
  registered = true;
  for (const [kernelName, fn] of Object.entries(ATTENTION_KERNELS)) {
    if (tf.getKernel(kernelName, 'webgpu')) tf.unregisterKernel(kernelName, 'webgpu');
    tf.registerKernel({ kernelName, backendName: 'webgpu', kernelFunc: fn as tf.KernelFunc });
  }
}

/** Removes them again (specs and the benchmark compare against the composite path). */
export function unregisterRopeKernels(): void {
  if (!registered) return;
  registered = false;
  for (const kernelName of Object.keys(ATTENTION_KERNELS)) tf.unregisterKernel(kernelName, 'webgpu');
}

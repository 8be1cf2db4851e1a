/**
 * Rotate-half RoPE as one WGSL program each way on the webgpu backend, registered under the
 * kernel names model/ops.ts applyRope takes when the backend has them (core/kernelNames.ts).
 * The composite ran a split, four multiplies, a subtract, an add and a concat forward (9
 * dispatches) and about as many backward, for the queries and the keys of every attention
 * block; here one each way. Element-wise: no sums, so nothing to order.
 *
 * x [B, S, H, dim] with halves x1, x2; tables cos, sin [S, dim/2] (or per row [B, S, dim/2]):
 *   y = [x1·c − x2·s, x2·c + x1·s];  dx = [dy1·c + dy2·s, dy2·c − dy1·s].
 * spec/webgpu/experts.spec.ts checks both against the composite ops.
 */
import * as tf from '@tensorflow/tfjs';
import { ROPE_GRAD_KERNEL, ROPE_KERNEL } from '../kernelNames';
import { Args, Backend, count, int, ThreadProgram } from './fusedKernels';

function shapes(name: string, x: tf.TensorInfo | undefined, cos: tf.TensorInfo | undefined, sin: tf.TensorInfo | undefined) {
  if (!x || x.dtype !== 'float32' || x.shape.length !== 4 || x.shape[3] % 2 !== 0) throw new Error(`${name}: expects a float32 [B, S, H, dim] with an even dim`);
  const [B, S, H, D] = x.shape;
  const half = D / 2;
  const perRow = cos?.shape.length === 3;
  const want = perRow ? B * S * half : S * half;
  for (const [k, t] of [['cos', cos], ['sin', sin]] as const) {
    if (!t || t.dtype !== 'float32' || count(t) !== want || t.shape[t.shape.length - 1] !== half) throw new Error(`${name}: ${k} must be float32 [${S}, ${half}] or [${B}, ${S}, ${half}], got [${t?.shape}]`);
  }
  return { x, cos: cos!, sin: sin!, S, H, D, half, perRow };
}

/** One program for either direction: `sign` −1 forward (y1 = x1·c − x2·s), +1 backward. */
function rotate(name: string, key: string, sign: number, { inputs, backend }: Args, xName: 'x' | 'dy'): tf.TensorInfo {
  const b = backend as Backend;
  const s = shapes(name, inputs[xName], inputs.cos, inputs.sin);
  const { x, cos, sin } = s;
  const n = count(x);
  // First half: v·c + sign·w·s with w the partner in the second half; second half: v·c − sign·w·s.
  return b.runWebGPUProgram(new ThreadProgram(x.shape.slice(), ['xIn', 'cosIn', 'sinIn'], n, key, `
          let i = index % uniforms.dim;
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
          }`, 'dim : i32, half : i32, heads : i32, seq : i32, perRow : i32, sign : f32,'), [x, cos, sin], 'float32', [
    int(n), int(s.D), int(s.half), int(s.H), int(s.S), int(s.perRow ? 1 : 0), { type: 'float32', data: [sign] },
  ]);
}

export const ROPE_KERNELS: Record<string, (a: Args) => tf.TensorInfo> = {
  [ROPE_KERNEL]: (a) => rotate(ROPE_KERNEL, 'moecatRope', -1, a, 'x'),
  [ROPE_GRAD_KERNEL]: (a) => rotate(ROPE_GRAD_KERNEL, 'moecatRopeGrad', 1, a, 'dy'),
};

let registered = false;

/** Registers the RoPE kernels for webgpu (model/ops.ts applyRope then takes its fused path). */
export function registerRopeKernels(): void {
  if (registered) return;
  registered = true;
  for (const [kernelName, fn] of Object.entries(ROPE_KERNELS)) {
    if (tf.getKernel(kernelName, 'webgpu')) tf.unregisterKernel(kernelName, 'webgpu');
    tf.registerKernel({ kernelName, backendName: 'webgpu', kernelFunc: fn as tf.KernelFunc });
  }
}

/** Removes them again (specs and the benchmark compare against the composite path). */
export function unregisterRopeKernels(): void {
  if (!registered) return;
  registered = false;
  for (const kernelName of Object.keys(ROPE_KERNELS)) tf.unregisterKernel(kernelName, 'webgpu');
}

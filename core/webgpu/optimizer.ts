/**
 * Optimizer kernels for GPU-resident training on webgpu (issue 21 items 4 and 6): AdamW over
 * the flat moments and per-parameter weights, block sums of squares for the gradient norm and
 * the per-group gradient RMS, and the router's pairwise expert similarity. Each is a WGSL
 * program run through tfjs-backend-webgpu (registered as a tfjs kernel for `webgpu` only, so
 * the engine tracks its outputs), one thread per element or per fixed block, every sum in
 * ascending index order: no atomics, no shared-memory trees, the same bits on every rerun.
 * The formulas and their operand order are those of trainer/adamw.ts and trainer/stability.ts
 * (in float32 on the device; the host combines the block partials in float64).
 */
import * as tf from '@tensorflow/tfjs';
import { attrMap, kernelAttrs } from '../tfjsInternals';
import { ThreadProgram } from './fusedKernels';

export const ADAMW_MOMENTS_KERNEL = 'MoecatAdamwMoments';
export const ADAMW_PARAM_KERNEL = 'MoecatAdamwParam';
export const SQUARE_SUMS_KERNEL = 'MoecatBlockSquareSums';
export const ROUTER_SIMILARITY_KERNEL = 'MoecatRouterSimilarity';

/** Elements per block of the norm partials: blocks never cross a parameter's boundary. */
export const NORM_BLOCK = 256;

interface Backend {
  runWebGPUProgram(program: object, inputs: tf.TensorInfo[], dtype: tf.DataType, uniforms?: { type: string; data: number[] }[]): tf.TensorInfo;
}

type Args = { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap };
const count = (t: tf.TensorInfo) => t.shape.reduce((a, b) => a * b, 1);
const int = (v: number) => ({ type: 'int32', data: [v] });
const f32 = (v: number) => ({ type: 'float32', data: [v] });

interface MomentAttrs {
  beta1: number;
  beta2: number;
  /** Clip factor applied to the gradient as it is read (trainer/adamw.ts gradScale). */
  scale: number;
}

/** m' = β1·m + (1−β1)·g and v' = β2·v + (1−β2)·g·g with g = grad·scale, over the flat state. */
function adamwMoments({ inputs, backend, attrs }: Args): tf.TensorInfo[] {
  const b = backend as Backend;
  const { g, m, v } = inputs as Record<string, tf.TensorInfo>;
  const a = kernelAttrs<MomentAttrs>(attrs);
  const n = count(g);
  const m2 = b.runWebGPUProgram(new ThreadProgram([n], ['gIn', 'mIn'], n, 'moecatAdamwM', `
          let gi = gIn[index] * uniforms.scale;
          setOutputAtIndex(index, uniforms.b1 * mIn[index] + uniforms.omb1 * gi);`, 'scale : f32, b1 : f32, omb1 : f32,'), [g, m], 'float32', [int(n), f32(a.scale), f32(a.beta1), f32(1 - a.beta1)]);
  const v2 = b.runWebGPUProgram(new ThreadProgram([n], ['gIn', 'vIn'], n, 'moecatAdamwV', `
          let gi = gIn[index] * uniforms.scale;
          setOutputAtIndex(index, uniforms.b2 * vIn[index] + uniforms.omb2 * gi * gi);`, 'scale : f32, b2 : f32, omb2 : f32,'), [g, v], 'float32', [int(n), f32(a.scale), f32(a.beta2), f32(1 - a.beta2)]);
  return [m2, v2];
}

interface ParamAttrs {
  /** Where this parameter starts in the flat moments. */
  offset: number;
  lr: number;
  wd: number;
  c1: number;
  c2: number;
  eps: number;
}

/** p' = p − lr·((m'/c1)/(sqrt(v'/c2) + eps) + wd·p) for one parameter, reading its slice of the new moments. */
function adamwParam({ inputs, backend, attrs }: Args): tf.TensorInfo {
  const b = backend as Backend;
  const { p, m, v } = inputs as Record<string, tf.TensorInfo>;
  const a = kernelAttrs<ParamAttrs>(attrs);
  const n = count(p);
  return b.runWebGPUProgram(new ThreadProgram(p.shape.slice(), ['pIn', 'mIn', 'vIn'], n, 'moecatAdamwP', `
          let pi = pIn[index];
          let k = uniforms.offset + index;
          setOutputAtIndex(index, pi - uniforms.lr * ((mIn[k] / uniforms.c1) / (sqrt(vIn[k] / uniforms.c2) + uniforms.eps) + uniforms.wd * pi));`,
  'offset : i32, lr : f32, wd : f32, c1 : f32, c2 : f32, eps : f32,'), [p, m, v], 'float32', [int(n), int(a.offset), f32(a.lr), f32(a.wd), f32(a.c1), f32(a.c2), f32(a.eps)]);
}

/** out[b] = Σ x[start[b] + j]² for j ascending below len[b] (float32), one thread per block. */
function blockSquareSums({ inputs, backend }: Args): tf.TensorInfo {
  const b = backend as Backend;
  const { x, start, len } = inputs as Record<string, tf.TensorInfo>;
  const blocks = count(start);
  return b.runWebGPUProgram(new ThreadProgram([blocks], ['xIn', 'startIn', 'lenIn'], blocks, 'moecatBlockSquares', `
          let o = startIn[index];
          var s = 0.0;
          for (var j = 0; j < lenIn[index]; j = j + 1) { let g = xIn[o + j]; s = s + g * g; }
          setOutputAtIndex(index, s);`), [x, start, len], 'float32', [int(blocks)]);
}

/**
 * Router W ([d, E] as [in, out]): out[a] = Σ_{b > a} cos(col a, col b), b ascending, with each
 * column norm a float32 sum in row order (|w| = 0 counts as 1, as in routerSimilarity).
 */
function routerSimilarityPartials({ inputs, backend }: Args): tf.TensorInfo {
  const b = backend as Backend;
  const { w } = inputs as { w: tf.TensorInfo };
  const [d, E] = w.shape;
  return b.runWebGPUProgram(new ThreadProgram([E], ['wIn'], E, 'moecatRouterSim', `
          var na = 0.0;
          for (var i = 0; i < uniforms.d; i = i + 1) { let x = wIn[i * uniforms.e + index]; na = na + x * x; }
          na = sqrt(na);
          if (na == 0.0) { na = 1.0; }
          var total = 0.0;
          for (var c = index + 1; c < uniforms.e; c = c + 1) {
            var nb = 0.0;
            var dot = 0.0;
            for (var i = 0; i < uniforms.d; i = i + 1) {
              let y = wIn[i * uniforms.e + c];
              nb = nb + y * y;
              dot = dot + wIn[i * uniforms.e + index] * y;
            }
            nb = sqrt(nb);
            if (nb == 0.0) { nb = 1.0; }
            total = total + dot / (na * nb);
          }
          setOutputAtIndex(index, total);`, 'd : i32, e : i32,'), [w], 'float32', [int(E), int(d), int(E)]);
}

const KERNELS: Record<string, (a: Args) => tf.TensorInfo | tf.TensorInfo[]> = {
  [ADAMW_MOMENTS_KERNEL]: adamwMoments,
  [ADAMW_PARAM_KERNEL]: adamwParam,
  [SQUARE_SUMS_KERNEL]: blockSquareSums,
  [ROUTER_SIMILARITY_KERNEL]: routerSimilarityPartials,
};

let registered = false;

/** Registers the optimizer kernels for the webgpu backend (idempotent). */
export function registerOptimizerKernels(): void {
  if (registered) return;
  registered = true;
  for (const [kernelName, fn] of Object.entries(KERNELS)) {
    if (!tf.getKernel(kernelName, 'webgpu')) tf.registerKernel({ kernelName, backendName: 'webgpu', kernelFunc: fn });
  }
}

/** New Adam moments on the device (the caller owns both tensors). */
export function adamwMomentsOnDevice(g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, a: MomentAttrs): [tf.Tensor, tf.Tensor] {
  registerOptimizerKernels();
  const out = tf.engine().runKernel(ADAMW_MOMENTS_KERNEL, { g, m, v }, attrMap(a)) as tf.Tensor[];
  return [out[0], out[1]];
}

/** The updated weights of one parameter (a new tensor of p's shape). */
export function adamwParamOnDevice(p: tf.Tensor, m: tf.Tensor, v: tf.Tensor, a: ParamAttrs): tf.Tensor {
  registerOptimizerKernels();
  return tf.engine().runKernel(ADAMW_PARAM_KERNEL, { p, m, v }, attrMap(a)) as tf.Tensor;
}

/** Per-block float32 sums of squares of x over the given blocks. */
export function blockSquareSumsOnDevice(x: tf.Tensor, start: tf.Tensor, len: tf.Tensor): tf.Tensor {
  registerOptimizerKernels();
  return tf.engine().runKernel(SQUARE_SUMS_KERNEL, { x, start, len }) as tf.Tensor;
}

/** Per-expert partial sums of the router's pairwise cosine similarities. */
export function routerSimilarityOnDevice(w: tf.Tensor): tf.Tensor {
  registerOptimizerKernels();
  return tf.engine().runKernel(ROUTER_SIMILARITY_KERNEL, { w }) as tf.Tensor;
}

/**
 * Blocks of at most NORM_BLOCK elements tiling each slice in order, so a block belongs to one
 * parameter (and hence one group): starts, lengths, and the slice index of each block.
 */
export function normBlocks(slices: { offset: number; size: number }[]): { start: Int32Array; len: Int32Array; slice: Int32Array } {
  const start: number[] = [];
  const len: number[] = [];
  const slice: number[] = [];
  slices.forEach((s, k) => {
    for (let o = 0; o < s.size; o += NORM_BLOCK) {
      start.push(s.offset + o);
      len.push(Math.min(NORM_BLOCK, s.size - o));
      slice.push(k);
    }
  });
  return { start: Int32Array.from(start), len: Int32Array.from(len), slice: Int32Array.from(slice) };
}

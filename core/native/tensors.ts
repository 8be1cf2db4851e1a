/**
 * What every native kernel family shares: the cpu backend's view of a tensor's values, shape
 * arithmetic, dimension collapsing, and the wrapper that falls back to the JS kernel.
 */
import * as tf from '@tensorflow/tfjs';
import type { NativeAddon } from './addon';

export type TensorInfo = tf.TensorInfo;
export type KernelFunc = tf.KernelFunc;
export type KernelArgs = Parameters<KernelFunc>[0];
export type KernelOut = TensorInfo | TensorInfo[];

/** The parts of tfjs' cpu backend the kernels use. */
export interface CpuBackendLike {
  data: { get(dataId: object): { values?: unknown } | undefined };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.BackendValues): TensorInfo;
}

export function be(args: KernelArgs): CpuBackendLike {
  return args.backend as CpuBackendLike;
}

/** The float32 values of a tensor, or null when it is not a plain float32 tensor. */
export function f32(b: CpuBackendLike, t: TensorInfo | undefined): Float32Array | null {
  if (!t || t.dtype !== 'float32') return null;
  const v = b.data.get(t.dataId)?.values;
  return v instanceof Float32Array ? v : null;
}

export function i32(b: CpuBackendLike, t: TensorInfo | undefined): Int32Array | null {
  if (!t || t.dtype !== 'int32') return null;
  const v = b.data.get(t.dataId)?.values;
  return v instanceof Int32Array ? v : null;
}

export const size = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);

export const lastDim = (t: TensorInfo): number => t.shape[t.shape.length - 1];

export function stridesOf(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/**
 * Drops unit dims and merges dims that are contiguous in every operand, so the C loops see the
 * fewest, longest rows. `strides` holds one stride array per operand.
 */
export function collapse(shape: number[], strides: number[][]): { shape: number[]; strides: number[][] } {
  const sh: number[] = [];
  const st: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const k = sh.length - 1;
    if (k >= 0 && strides.every((s, o) => st[o][k] === s[d] * shape[d])) {
      sh[k] *= shape[d];
      strides.forEach((s, o) => (st[o][k] = s[d]));
    } else {
      sh.push(shape[d]);
      strides.forEach((s, o) => st[o].push(s[d]));
    }
  }
  if (sh.length === 0) return { shape: [1], strides: strides.map(() => [1]) };
  return { shape: sh, strides: st };
}

export const I = (xs: number[]): Int32Array => Int32Array.from(xs);

/** Makes a replacement kernel from the addon and the JS kernel it falls back to. */
export type Make = (m: NativeAddon, fallback: KernelFunc) => KernelFunc;

/** Wraps an implementation that returns null for inputs it leaves to the JS kernel. */
export function kernel(impl: (m: NativeAddon, args: KernelArgs) => KernelOut | null): Make {
  return (m, fallback) => (args) => impl(m, args) ?? fallback(args);
}

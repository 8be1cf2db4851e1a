/**
 * The one adapter over what tfjs' public types do not describe: kernel attributes of our own
 * kernels, custom gradients over any number of inputs, tidy() over results that hold caches,
 * the engine's active tape, the cpu backend's data map and the webgpu backend's internals.
 * Every double cast of the product (`as unknown as`) lives here; eslint.config.mjs forbids it
 * everywhere else outside spec/.
 * Each accessor is typed at its boundary, so callers never see `unknown`.
 */
import * as tf from '@tensorflow/tfjs';
// Types only (erased at load): tfjsInternals never loads the optional webgpu packages.
import type { GpuBuffer, GpuDevice } from './webgpu/gpuTypes';

/**
 * A kernel's attributes, as the op that called runKernel passed them. tfjs types every kernel's
 * attributes as one NamedAttrMap; each kernel knows its own fields (T), which the op that runs
 * it sets.
 */
export function kernelAttrs<T extends object>(attrs: tf.NamedAttrMap | undefined): T {
  return attrs as unknown as T;
}

/** Attributes for engine().runKernel: an object of plain fields (numbers, arrays, booleans). */
export function attrMap(attrs: object): tf.NamedAttrMap {
  return attrs as unknown as tf.NamedAttrMap;
}

/** What a custom-gradient forward returns: its value, and the gradient of each input. */
export interface VariadicGrad {
  value: tf.Tensor;
  gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[];
}

/**
 * tf.customGrad over any number of tensor inputs: tfjs calls `f(...inputs, save)`; its typings
 * allow only a fixed list of tensor parameters.
 */
export function customGradVariadic(f: (...args: (tf.Tensor | tf.GradSaveFunc)[]) => VariadicGrad): (...xs: tf.Tensor[]) => tf.Tensor {
  return tf.customGrad(f as unknown as Parameters<typeof tf.customGrad>[0]);
}

/**
 * tf.tidy over a result that tfjs' TensorContainer type cannot express (objects holding
 * attention caches): tidy keeps every tensor it finds in the returned value and frees the rest.
 */
export function tidyKeep<T>(fn: () => T): T {
  return tf.tidy(fn as unknown as () => tf.TensorContainer) as unknown as T;
}

/** The engine's state field that holds the tape gradients() is recording (null when none). */
export interface EngineTapeState {
  activeTape: unknown;
}

/** The engine's mutable state (engine().state), for saving and restoring its active tape. */
export function engineTapeState(): EngineTapeState {
  return (tf.engine() as unknown as { state: EngineTapeState }).state;
}

/** The cpu backend's map from a tensor's dataId to its stored values. */
export interface CpuDataMap {
  get(dataId: object): { values?: unknown } | undefined;
  has(dataId: object): boolean;
  set(dataId: object, value: { values?: unknown }): void;
  delete(dataId: object): boolean;
}

/** The parts of tfjs' cpu backend (MathBackendCPU) that moecat reads or wraps. */
export interface CpuBackendInternals {
  data: CpuDataMap;
  readSync(dataId: object): unknown;
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.BackendValues): tf.TensorInfo;
}

/** The registered cpu backend with its internals typed, or null when none is registered. */
export function findCpuBackend(): CpuBackendInternals | null {
  return (tf.findBackend('cpu') as unknown as CpuBackendInternals | undefined) ?? null;
}

/** The active backend, typed as the cpu backend: call only when tf.getBackend() === 'cpu'. */
export function activeCpuBackend(): CpuBackendInternals {
  return tf.backend() as unknown as CpuBackendInternals;
}

/**
 * The members of tfjs-backend-webgpu's WebGPUBackend (4.22) that moecat reads or replaces:
 * synchronous reads (webgpu/syncRead.ts) and the program tracer (webgpu/trace.ts). Declared
 * structurally here: the package is an optional dependency, and this file must load (and
 * compile) without it.
 */
export interface WebgpuBackendInternals {
  device: GpuDevice;
  tensorMap: { get(id: object): { values: unknown; dtype: string; shape: number[]; resource: unknown; complexTensorInfos?: unknown } | undefined; has(id: object): boolean };
  bufferManager: { acquireBuffer(size: number, usage: number): GpuBuffer; releaseBuffer(b: GpuBuffer): void };
  commandEncoder: { copyBufferToBuffer(src: GpuBuffer, so: number, dst: GpuBuffer, d: number, size: number): void } | null;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
  convertAndCacheOnCPU(dataId: object, vals: unknown): unknown;
  readSync(dataId: object): unknown;
  runWebGPUProgram(program: object, inputs: tf.TensorInfo[], outputDtype: tf.DataType, uniforms?: { type: string; data: number[] }[], output?: tf.TensorInfo): tf.TensorInfo;
}

/** A backend made by tfjs-backend-webgpu's WebGPUBackend constructor, with its internals typed. */
export function webgpuBackendInternals(backend: tf.KernelBackend): WebgpuBackendInternals {
  return backend as unknown as WebgpuBackendInternals;
}

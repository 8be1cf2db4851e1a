/**
 * Deterministic replacements for tfjs-backend-webgpu's float-atomic kernels (GPU-NOTES "Float
 * atomics make reruns differ"): ScatterNd (the gradient of moecat's row gather),
 * UnsortedSegmentSum (tf.gather's own gradient), SparseSegmentSum and Bincount.
 *
 * Each becomes a "row-list sum": the host reads the (small, integer) indices, lists for every
 * output row the input rows that land in it in ascending input order, and one GPU thread per
 * output element adds those rows in that order starting from zero. That is the order the CPU
 * backend's scatter uses, so the bits match it too, and no two threads ever write one element.
 */
import * as tf from '@tensorflow/tfjs';
import { BackendError } from '../errors';
import { kernelAttrs } from '../tfjsInternals';
import { webgpuUtil } from './webgpuUtil';

/** The WebGPUBackend members the kernels use. */
interface KernelBackend {
  readSync(dataId: object): unknown;
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues): tf.TensorInfo;
  disposeData(dataId: object): void;
  runWebGPUProgram(program: object, inputs: tf.TensorInfo[], dtype: tf.DataType, uniforms?: { type: string; data: number[] }[]): tf.TensorInfo;
}

/** out[r, c] = sum over k in [offsets[r], offsets[r+1]) of X[rows[k], c], in ascending k. */
class RowListSumProgram {
  variableNames = ['X', 'rows', 'offsets'];
  uniforms = 'cols : i32,';
  workgroupSize: [number, number, number] = [64, 1, 1];
  size = true;
  outputShape: number[];
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  shaderKey: string;
  constructor(outputShape: number[], private readonly dtype: 'float32' | 'int32') {
    this.outputShape = outputShape;
    const util = webgpuUtil();
    this.dispatchLayout = util.flatDispatchLayout(outputShape);
    this.dispatch = util.computeDispatch(this.dispatchLayout, outputShape, this.workgroupSize);
    this.shaderKey = `moecatRowListSum_${dtype}`;
  }
  getUserCode(): string {
    const t = this.dtype === 'float32' ? 'f32' : 'i32';
    return `
      fn main(index : i32) {
        if (index < uniforms.size) {
          let r = index / uniforms.cols;
          let c = index - r * uniforms.cols;
          var acc = ${t}(0);
          for (var k = offsets[r]; k < offsets[r + 1]; k = k + 1) {
            acc = acc + ${t}(X[rows[k] * uniforms.cols + c]);
          }
          ${this.dtype === 'float32' ? 'setOutputAtIndex' : 'setOutputAtIndexI32'}(index, acc);
        }
      }
    `;
  }
}

/** A grouping of input rows into output rows, built on the host. */
interface RowLists {
  rows: Int32Array;
  offsets: Int32Array;
}

/** Stable bucket sort of (target, source) pairs: rows of one target stay in ascending order. */
export function buildRowLists(targets: ArrayLike<number>, sources: ArrayLike<number> | null, numOut: number): RowLists {
  const offsets = new Int32Array(numOut + 1);
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i];
    if (t >= 0 && t < numOut) offsets[t + 1]++;
  }
  for (let r = 0; r < numOut; r++) offsets[r + 1] += offsets[r];
  const fill = offsets.slice(0, numOut);
  const rows = new Int32Array(Math.max(1, offsets[numOut]));
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i];
    if (t >= 0 && t < numOut) rows[fill[t]++] = sources ? sources[i] : i;
  }
  return { rows, offsets };
}

function rowListSum(backend: KernelBackend, x: tf.TensorInfo, lists: RowLists, outShape: number[], cols: number): tf.TensorInfo {
  const dtype = x.dtype === 'int32' ? 'int32' : 'float32';
  if (x.dtype !== 'float32' && x.dtype !== 'int32') {
    throw new BackendError(`webgpu: summing ${x.dtype} rows is not supported`, { hint: 'cast to float32 first' });
  }
  const rows = backend.makeTensorInfo([lists.rows.length], 'int32', lists.rows);
  const offsets = backend.makeTensorInfo([lists.offsets.length], 'int32', lists.offsets);
  try {
    const program = new RowListSumProgram(outShape, dtype);
    return backend.runWebGPUProgram(program, [x, rows, offsets], dtype, [{ type: 'int32', data: [Math.max(1, cols)] }]);
  } finally {
    backend.disposeData(rows.dataId);
    backend.disposeData(offsets.dataId);
  }
}

function ints(backend: KernelBackend, t: tf.TensorInfo): ArrayLike<number> {
  return backend.readSync(t.dataId) as ArrayLike<number>;
}

function scatterNd({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const b = backend as KernelBackend;
  const { indices, updates } = inputs as { indices: tf.TensorInfo; updates: tf.TensorInfo };
  const shape = kernelAttrs<{ shape: number[] }>(attrs).shape;
  const { sliceRank, numUpdates, sliceSize, strides } = tf.backend_util.calculateShapes(updates as tf.Tensor, indices as tf.Tensor, shape);
  const idx = ints(b, indices);
  const numOut = shape.slice(0, sliceRank).reduce((a, c) => a * c, 1);
  const targets = new Int32Array(numUpdates);
  for (let i = 0; i < numUpdates; i++) {
    let flat = 0;
    for (let j = 0; j < sliceRank; j++) {
      const d = idx[i * sliceRank + j];
      if (d < 0 || d >= shape[j]) throw new BackendError(`webgpu ScatterNd: index ${d} out of range for dimension ${j} of [${shape}]`);
      flat += d * strides[j];
    }
    targets[i] = flat;
  }
  return rowListSum(b, updates, buildRowLists(targets, null, numOut), shape, sliceSize);
}

function unsortedSegmentSum({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const b = backend as KernelBackend;
  const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const numSegments = kernelAttrs<{ numSegments: number }>(attrs).numSegments;
  if (segmentIds.shape.length !== 1 || segmentIds.shape[0] !== x.shape[0]) {
    throw new BackendError(`webgpu UnsortedSegmentSum: segment ids of shape [${segmentIds.shape}] must be 1-D with x's first dimension ${x.shape[0]}`);
  }
  const cols = x.shape.slice(1).reduce((a, c) => a * c, 1);
  return rowListSum(b, x, buildRowLists(ints(b, segmentIds), null, numSegments), [numSegments, ...x.shape.slice(1)], cols);
}

function sparseSegmentSum({ inputs, backend }: { inputs: tf.NamedTensorInfoMap; backend: unknown }): tf.TensorInfo {
  const b = backend as KernelBackend;
  const { data, indices, segmentIds } = inputs as { data: tf.TensorInfo; indices: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const seg = ints(b, segmentIds);
  const idx = ints(b, indices);
  for (let i = 0; i < idx.length; i++) {
    if (idx[i] < 0 || idx[i] >= data.shape[0]) throw new BackendError(`webgpu SparseSegmentSum: index ${idx[i]} out of range [0, ${data.shape[0]})`);
  }
  const numOut = seg.length ? seg[seg.length - 1] + 1 : 0;
  const cols = data.shape.slice(1).reduce((a, c) => a * c, 1);
  return rowListSum(b, data, buildRowLists(seg, idx, numOut), [numOut, ...data.shape.slice(1)], cols);
}

/** Bincount (1-D): counts or summed weights per value, computed on the host in input order. */
function bincount({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const b = backend as KernelBackend;
  const { x, weights } = inputs as { x: tf.TensorInfo; weights: tf.TensorInfo };
  const size = kernelAttrs<{ size: number }>(attrs).size;
  const xs = ints(b, x);
  const weighted = weights.shape.reduce((a, c) => a * c, 1) > 0;
  const ws = weighted ? (b.readSync(weights.dataId) as ArrayLike<number>) : null;
  const out = weights.dtype === 'int32' ? new Int32Array(size) : new Float32Array(size);
  for (let i = 0; i < xs.length; i++) {
    const v = xs[i];
    if (v < 0) throw new BackendError(`webgpu Bincount: negative value ${v}`);
    if (v < size) out[v] += ws ? ws[i] : 1;
  }
  return b.makeTensorInfo([size], weights.dtype, out);
}

type KernelFunc = (args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }) => tf.TensorInfo;

/** The replaced kernel names; the tracer (trace.ts) reports any atomic program that still runs. */
export const DETERMINISTIC_KERNELS: Record<string, KernelFunc> = {
  ScatterNd: scatterNd,
  UnsortedSegmentSum: unsortedSegmentSum,
  SparseSegmentSum: sparseSegmentSum,
  Bincount: bincount,
};

/** tfjs' own (atomic) kernels, kept so a spec can show the tracer catches them. */
const originals = new Map<string, tf.KernelConfig>();

export function registerDeterministicKernels(): void {
  for (const [kernelName, kernelFunc] of Object.entries(DETERMINISTIC_KERNELS)) {
    const prev = tf.getKernel(kernelName, 'webgpu');
    if (prev) {
      if (!originals.has(kernelName)) originals.set(kernelName, prev);
      tf.unregisterKernel(kernelName, 'webgpu');
    }
    tf.registerKernel({ kernelName, backendName: 'webgpu', kernelFunc });
  }
}

/** Runs `fn` with tfjs' original kernel for `kernelName` (tests only). */
export function withOriginalKernel<T>(kernelName: string, fn: () => T): T {
  const original = originals.get(kernelName);
  if (!original) throw new Error(`no original webgpu kernel ${kernelName} was replaced`);
  tf.unregisterKernel(kernelName, 'webgpu');
  tf.registerKernel(original);
  try {
    return fn();
  } finally {
    tf.unregisterKernel(kernelName, 'webgpu');
    tf.registerKernel({ kernelName, backendName: 'webgpu', kernelFunc: DETERMINISTIC_KERNELS[kernelName] });
  }
}

/** Data movement: Transpose, Slice, Concat, SplitV, PadV2, Tile (strided copies), GatherV2 and ScatterNd. */
import * as tf from '@tensorflow/tfjs';
import { kernelAttrs } from '../tfjsInternals';
import { alloc, allocZeroed } from './buffers';
import { copyStrided, transposeValues } from './copy';
import { be, collapse, f32, i32, kernel, size, stridesOf, TensorInfo } from './tensors';

export const transpose = kernel((m, args) => {
  const b = be(args);
  const { x } = args.inputs as { x: TensorInfo };
  const xv = f32(b, x);
  if (!xv) return null;
  const { perm } = kernelAttrs<{ perm: number[] }>(args.attrs);
  const t = transposeValues(m, xv, x.shape, perm);
  return b.makeTensorInfo(t.shape, 'float32', t.values);
});

export const slice = kernel((m, args) => {
  const b = be(args);
  const { x } = args.inputs as { x: TensorInfo };
  const xv = f32(b, x);
  if (!xv) return null;
  const { begin, size: sz } = kernelAttrs<{ begin: number | number[]; size: number | number[] }>(args.attrs);
  const [bg, s] = tf.slice_util.parseSliceParams(x, begin, sz);
  tf.slice_util.assertParamsValid(x, bg, s);
  const out = alloc(size(s));
  const xs = stridesOf(x.shape);
  copyStrided(m, xv, bg.reduce((acc, v, i) => acc + v * xs[i], 0), xs, out, 0, stridesOf(s), s);
  return b.makeTensorInfo(s, 'float32', out);
});

export const concat = kernel((m, args) => {
  const b = be(args);
  const inputs = Object.values(args.inputs) as TensorInfo[];
  if (inputs.length === 0) return null;
  const vals = inputs.map((t) => f32(b, t));
  if (vals.some((v) => v === null)) return null;
  const { axis } = kernelAttrs<{ axis: number }>(args.attrs);
  const ax = tf.util.parseAxisParam(axis, inputs[0].shape)[0];
  const shapes = inputs.map((t) => t.shape);
  tf.backend_util.assertParamsConsistent(shapes, ax);
  const outShape = tf.backend_util.computeOutShape(shapes, ax);
  const out = alloc(size(outShape));
  const os = stridesOf(outShape);
  let at = 0;
  inputs.forEach((t, i) => {
    copyStrided(m, vals[i]!, 0, stridesOf(t.shape), out, at * os[ax], os, t.shape);
    at += t.shape[ax];
  });
  return b.makeTensorInfo(outShape, 'float32', out);
});

export const splitV = kernel((m, args) => {
  const b = be(args);
  const { x } = args.inputs as { x: TensorInfo };
  const xv = f32(b, x);
  if (!xv) return null;
  const { numOrSizeSplits, axis } = kernelAttrs<{ numOrSizeSplits: number | number[]; axis: number }>(args.attrs);
  const ax = tf.util.parseAxisParam(axis, x.shape)[0];
  const sizes = tf.backend_util.prepareSplitSize(x, numOrSizeSplits, ax);
  const xs = stridesOf(x.shape);
  let at = 0;
  return sizes.map((s) => {
    const shape = x.shape.slice();
    shape[ax] = s;
    const out = alloc(size(shape));
    copyStrided(m, xv, at * xs[ax], xs, out, 0, stridesOf(shape), shape);
    at += s;
    return b.makeTensorInfo(shape, 'float32', out);
  });
});

export const padV2 = kernel((m, args) => {
  const b = be(args);
  const { x } = args.inputs as { x: TensorInfo };
  const xv = f32(b, x);
  if (!xv) return null;
  const { paddings, constantValue } = kernelAttrs<{ paddings: [number, number][]; constantValue: number }>(args.attrs);
  const outShape = x.shape.map((d, i) => paddings[i][0] + d + paddings[i][1]);
  const out = alloc(size(outShape));
  out.fill(constantValue);
  const os = stridesOf(outShape);
  copyStrided(m, xv, 0, stridesOf(x.shape), out, paddings.reduce((acc, p, i) => acc + p[0] * os[i], 0), os, x.shape);
  return b.makeTensorInfo(outShape, 'float32', out);
});

export const tile = kernel((m, args) => {
  const b = be(args);
  const { x } = args.inputs as { x: TensorInfo };
  const xv = f32(b, x);
  if (!xv) return null;
  const { reps } = kernelAttrs<{ reps: number[] }>(args.attrs);
  const outShape = x.shape.map((d, i) => d * reps[i]);
  const out = alloc(size(outShape));
  if (out.length === 0) return b.makeTensorInfo(outShape, 'float32', out);
  // One strided copy over [reps..., shape...] dims: rep dim i steps by shape[i] output rows.
  const os = stridesOf(outShape);
  const xs = stridesOf(x.shape);
  const dims = [...reps, ...x.shape];
  const srcStrides = [...reps.map(() => 0), ...xs];
  const dstStrides = [...os.map((s, i) => s * x.shape[i]), ...os];
  if (collapse(dims, [srcStrides, dstStrides]).shape.length > 8) return null;
  copyStrided(m, xv, 0, srcStrides, out, 0, dstStrides, dims);
  return b.makeTensorInfo(outShape, 'float32', out);
});

export const gatherV2 = kernel((m, args) => {
  const b = be(args);
  const { x, indices } = args.inputs as { x: TensorInfo; indices: TensorInfo };
  const xv = f32(b, x);
  const iv = i32(b, indices);
  const { axis, batchDims } = kernelAttrs<{ axis: number; batchDims?: number }>(args.attrs);
  if (!xv || !iv || (batchDims ?? 0) !== 0) return null;
  const ax = tf.util.parseAxisParam(axis, x.shape)[0];
  const dim = x.shape[ax];
  for (let i = 0; i < iv.length; i++) {
    if (!(iv[i] >= 0 && iv[i] <= dim - 1)) throw new Error(`GatherV2: the index value ${iv[i]} is not in [0, ${dim - 1}]`);
  }
  const outer = size(x.shape.slice(0, ax));
  const sliceSize = size(x.shape.slice(ax + 1));
  const outShape = [...x.shape.slice(0, ax), ...indices.shape, ...x.shape.slice(ax + 1)];
  const out = alloc(size(outShape));
  if (out.length > 0) m.gatherRows(xv, iv, out, sliceSize, dim, outer);
  return b.makeTensorInfo(outShape, 'float32', out);
});

export const scatterNd = kernel((m, args) => {
  const b = be(args);
  const { indices, updates } = args.inputs as { indices: TensorInfo; updates: TensorInfo };
  const uv = f32(b, updates);
  const iv = i32(b, indices);
  if (!uv || !iv) return null;
  const { shape } = kernelAttrs<{ shape: number[] }>(args.attrs);
  const { sliceRank, numUpdates, sliceSize, strides, outputSize } = tf.backend_util.calculateShapes(updates, indices, shape);
  const out = allocZeroed(outputSize);
  if (outputSize === 0 || numUpdates === 0 || sliceSize === 0) return b.makeTensorInfo(shape, 'float32', out);
  const rows = new Int32Array(numUpdates);
  const nRows = outputSize / sliceSize;
  for (let i = 0; i < numUpdates; i++) {
    let flat = 0;
    for (let j = 0; j < sliceRank; j++) flat += iv[i * sliceRank + j] * strides[j];
    if (flat < 0 || flat >= nRows) {
      const index = Array.from(iv.subarray(i * sliceRank, (i + 1) * sliceRank));
      throw new Error(`Invalid indices: ${index} does not index into ${shape}`);
    }
    rows[i] = flat;
  }
  m.scatterAddRows(uv, rows, out, sliceSize, nRows);
  return b.makeTensorInfo(shape, 'float32', out);
});

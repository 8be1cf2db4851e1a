/** Softmax (tfjs' arithmetic) and Sum/Mean/Max/Min over any axes. */
import * as tf from '@tensorflow/tfjs';
import { kernelAttrs } from '../tfjsInternals';
import { alloc, give } from './buffers';
import { transposeValues } from './copy';
import { BIN } from './elementwise';
import { be, f32, I, kernel, Make, size, TensorInfo } from './tensors';

export const softmax = kernel((m, args) => {
  const b = be(args);
  const { logits } = args.inputs as { logits: TensorInfo };
  const xv = f32(b, logits);
  const r = logits.shape.length;
  const { dim } = kernelAttrs<{ dim: number }>(args.attrs);
  if (!xv || r === 0 || !(dim === -1 || dim === r - 1)) return null;
  const cols = logits.shape[r - 1];
  const out = alloc(xv.length);
  if (cols > 0) m.softmax(xv, out, xv.length / cols, cols);
  return b.makeTensorInfo(logits.shape.slice(), 'float32', out);
});

const RED = { Sum: 0, Max: 1, Min: 2, Mean: 3 } as const;

/** Sum/Mean/Max/Min over any axes: transpose the axes innermost (as the JS kernels do), reduce rows. */
export function reduceKernel(kind: keyof typeof RED): Make {
  return kernel((m, args) => {
    const b = be(args);
    const { x } = args.inputs as { x: TensorInfo };
    let xv = f32(b, x);
    if (!xv) return null;
    let scratch: Float32Array | null = null;
    const attrs = kernelAttrs<{ axis?: number | number[] | null; reductionIndices?: number | number[] | null; keepDims: boolean }>(args.attrs);
    const axisAttr = kind === 'Max' ? attrs.reductionIndices : attrs.axis;
    const r = x.shape.length;
    // null/undefined means every axis (tfjs' parseAxisParam).
    const axes = tf.util.parseAxisParam(axisAttr as number | number[], x.shape);
    let shape = x.shape.slice();
    const perm = tf.backend_util.getAxesPermutation(axes, r);
    if (perm != null) {
      const t = transposeValues(m, xv, shape, perm);
      xv = scratch = t.values;
      shape = t.shape;
    }
    const inner = size(axes.map((a) => x.shape[a]));
    const [outShape] = tf.backend_util.computeOutAndReduceShapes(shape, tf.backend_util.getInnerMostAxes(axes.length, r));
    const outer = size(outShape);
    if (inner === 0 || (kind !== 'Sum' && kind !== 'Mean' && outer === 0)) {
      if (scratch) give(scratch);
      return null;
    }
    const out = alloc(outer);
    if (kind === 'Mean') {
      // JS Mean divides every element by the count in float32, then sums in double.
      const scaled = alloc(xv.length);
      m.binary(BIN.RealDiv, xv, I([1]), Float32Array.of(inner), I([0]), scaled, I([xv.length]));
      m.reduce(RED.Sum, scaled, out, outer, inner);
      give(scaled);
    } else {
      m.reduce(RED[kind], xv, out, outer, inner);
    }
    if (scratch) give(scratch);
    const finalShape = attrs.keepDims ? tf.backend_util.expandShapeToKeepDim(outShape, axes) : outShape;
    return b.makeTensorInfo(finalShape, 'float32', out);
  });
}

/** Element-wise kernels: binary ops with any broadcasting, and unary ops (native/moecat_native.c `binary`, `unary`). */
import * as tf from '@tensorflow/tfjs';
import { alloc } from './buffers';
import { be, collapse, f32, I, kernel, Make, size, stridesOf, TensorInfo } from './tensors';

export const BIN = { Add: 0, Sub: 1, Multiply: 2, RealDiv: 3, SquaredDifference: 6 } as const;

export function binaryKernel(op: number): Make {
  return kernel((m, args) => {
    const b = be(args);
    const { a: A, b: B } = args.inputs as { a: TensorInfo; b: TensorInfo };
    const av = f32(b, A);
    const bv = f32(b, B);
    if (!av || !bv) return null;
    const outShape = tf.broadcast_util.assertAndGetBroadcastShape(A.shape, B.shape);
    const n = size(outShape);
    const out = alloc(n);
    if (n === 0) return b.makeTensorInfo(outShape, 'float32', out);
    const R = outShape.length;
    const bstr = (shape: number[]) => {
      const s = stridesOf(shape);
      const off = R - shape.length;
      return outShape.map((_, d) => (d < off || shape[d - off] === 1 ? 0 : s[d - off]));
    };
    const c = collapse(outShape, [bstr(A.shape), bstr(B.shape)]);
    if (c.shape.length > 8) return null;
    m.binary(op, av, I(c.strides[0]), bv, I(c.strides[1]), out, I(c.shape));
    return b.makeTensorInfo(outShape, 'float32', out);
  });
}

export const UN = { Exp: 0, Sigmoid: 1, Rsqrt: 2, Sqrt: 3, Log: 4, Neg: 5, Square: 6, Abs: 8, Tanh: 9 } as const;

export function unaryKernel(op: number): Make {
  return kernel((m, args) => {
    const b = be(args);
    const { x } = args.inputs as { x: TensorInfo };
    const xv = f32(b, x);
    if (!xv) return null;
    const out = alloc(xv.length);
    m.unary(op, xv, out);
    return b.makeTensorInfo(x.shape.slice(), 'float32', out);
  });
}

/**
 * BatchMatMul on moecat's GEMM (native/gemm.h): transposes are free, batch dims loop with tfjs'
 * modulo broadcasting, and the pool's threads split output tiles, so neither the thread count
 * nor the CPU's vector width changes a bit.
 */
import * as tf from '@tensorflow/tfjs';
import { kernelAttrs } from '../tfjsInternals';
import { alloc } from './buffers';
import { be, f32, kernel, size, TensorInfo } from './tensors';

export const batchMatMul = kernel((m, args) => {
  const b = be(args);
  const { a: A, b: B } = args.inputs as { a: TensorInfo; b: TensorInfo };
  const av = f32(b, A);
  const bv = f32(b, B);
  if (!av || !bv) return null;
  const { transposeA, transposeB } = kernelAttrs<{ transposeA: boolean; transposeB: boolean }>(args.attrs);
  const ra = A.shape.length;
  const rb = B.shape.length;
  const M = transposeA ? A.shape[ra - 1] : A.shape[ra - 2];
  const K = transposeA ? A.shape[ra - 2] : A.shape[ra - 1];
  const Kb = transposeB ? B.shape[rb - 1] : B.shape[rb - 2];
  const N = transposeB ? B.shape[rb - 2] : B.shape[rb - 1];
  if (K !== Kb) return null; // let the JS kernel raise its error
  const outer = tf.broadcast_util.assertAndGetBroadcastShape(A.shape.slice(0, -2), B.shape.slice(0, -2));
  const batchA = size(A.shape.slice(0, -2));
  const batchB = size(B.shape.slice(0, -2));
  const batch = Math.max(batchA, batchB);
  const out = alloc(batch * M * N);
  if (batch > 0) m.sgemm(av, bv, out, batch, Math.max(1, batchA), Math.max(1, batchB), M, N, K, transposeA ? 1 : 0, transposeB ? 1 : 0, 0);
  return b.makeTensorInfo([...outer, M, N], 'float32', out);
});

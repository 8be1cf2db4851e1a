/**
 * tfjs-backend-webgpu picks a split-K matMul (partial sums added with float atomics) when the
 * output is small and K >= 2000 (BatchMatMul_impl.js, 4.22). We wrap BatchMatMul and
 * _FusedMatMul: for exactly those shapes the call runs with WEBGPU_MATMUL_PROGRAM_TYPE set to
 * the small-output-tile program, which gives every output element one thread and one k order.
 * Every other shape keeps tfjs' own choice.
 */
import * as tf from '@tensorflow/tfjs';
import { kernelAttrs } from '../tfjsInternals';

/** MatMulProgramType.MatMulSmallOutputSizeProgram in tfjs-backend-webgpu's webgpu_util. */
const SMALL_OUTPUT_PROGRAM = 2;
const SPLIT_K_MIN_K = 2000;

interface MatMulArgs {
  inputs: { a: tf.TensorInfo; b: tf.TensorInfo };
  backend: { thresholdToIncreaseWorkgroups: number };
  attrs: { transposeA?: boolean; transposeB?: boolean };
}

/** Whether tfjs 4.22 would choose its split-K program for this call (same test as tfjs). */
export function wouldSplitK({ inputs, backend, attrs }: MatMulArgs): boolean {
  if (tf.env().getNumber('WEBGPU_MATMUL_PROGRAM_TYPE') >= 0) return tf.env().getNumber('WEBGPU_MATMUL_PROGRAM_TYPE') === 1;
  const { a, b } = inputs;
  const ra = a.shape.length;
  const rb = b.shape.length;
  const k = attrs.transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
  const m = attrs.transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
  const n = attrs.transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  const batch = Math.max(
    a.shape.slice(0, -2).reduce((x, y) => x * y, 1),
    b.shape.slice(0, -2).reduce((x, y) => x * y, 1),
  );
  const flag = tf.env().getNumber('WEBGPU_THRESHOLD_TO_INCREASE_WORKGROUPS_FOR_MATMUL');
  const threshold = flag > 0 ? flag : backend.thresholdToIncreaseWorkgroups;
  const wg32 = batch * Math.ceil(m / 32) * Math.ceil(n / 32);
  const few = wg32 <= threshold || (m <= 8 && wg32 <= threshold * 2);
  return few && batch * m * n > 128 && batch === 1 && k >= SPLIT_K_MIN_K;
}

let installed = false;

export function installMatMulGuard(): void {
  if (installed) return;
  installed = true;
  for (const name of ['BatchMatMul', '_FusedMatMul']) {
    const cfg = tf.getKernel(name, 'webgpu');
    if (!cfg) continue;
    const original = cfg.kernelFunc;
    tf.unregisterKernel(name, 'webgpu');
    tf.registerKernel({
      ...cfg,
      kernelFunc: (args) => {
        const view: MatMulArgs = {
          inputs: args.inputs as MatMulArgs['inputs'],
          backend: args.backend as MatMulArgs['backend'],
          attrs: kernelAttrs<MatMulArgs['attrs']>(args.attrs),
        };
        if (!wouldSplitK(view)) return original(args);
        const env = tf.env();
        const prev = env.getNumber('WEBGPU_MATMUL_PROGRAM_TYPE');
        env.set('WEBGPU_MATMUL_PROGRAM_TYPE', SMALL_OUTPUT_PROGRAM);
        try {
          return original(args);
        } finally {
          env.set('WEBGPU_MATMUL_PROGRAM_TYPE', prev);
        }
      },
    });
  }
}

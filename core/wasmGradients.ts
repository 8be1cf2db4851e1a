/**
 * Gradient replacements for the wasm backend (TFJS-NOTES "Speed of the portable backends"):
 * wasm runs only plain, unbatched matMul through XNNPACK; a transposed matMul falls back to a
 * scalar loop ~10x slower. The default BatchMatMul gradient uses transposed matMuls, so we
 * register one that transposes explicitly and then multiplies plainly. Same math, different
 * summation kernels: results stay deterministic for a given backend.
 */
import * as tf from '@tensorflow/tfjs';
import { kernelAttrs } from './tfjsInternals';

let installed = false;

export function installWasmGradients(): void {
  if (installed) return;
  installed = true;
  tf.registerGradient({
    kernelName: 'BatchMatMul',
    inputsToSave: ['a', 'b'],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap) => {
      const [a, b] = saved;
      const g = dy as tf.Tensor;
      const { transposeA, transposeB } = kernelAttrs<{ transposeA: boolean; transposeB: boolean }>(attrs);
      const t = (x: tf.Tensor) => {
        const perm = x.shape.map((_, i) => i);
        const n = perm.length;
        [perm[n - 2], perm[n - 1]] = [perm[n - 1], perm[n - 2]];
        return tf.transpose(x, perm);
      };
      const mm = (x: tf.Tensor, y: tf.Tensor) => tf.matMul(x as tf.Tensor2D, y as tf.Tensor2D);
      if (!transposeA && !transposeB) return { a: () => mm(g, t(b)), b: () => mm(t(a), g) };
      if (!transposeA && transposeB) return { a: () => mm(g, b), b: () => mm(t(g), a) };
      if (transposeA && !transposeB) return { a: () => mm(b, t(g)), b: () => mm(a, g) };
      return { a: () => mm(t(b), t(g)), b: () => mm(t(g), t(a)) };
    },
  });
}

import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../core/backend';
import { weightedCrossEntropy } from '../../model/ops';
(async () => {
  await selectBackend((process.argv[2] as 'wasm') ?? 'wasm');
  const z = tf.tensor2d([[0.1, 0.5, -0.3], [1.0, 0.2, 0.0]]);
  const g = tf.grad((x: tf.Tensor) => weightedCrossEntropy(x as tf.Tensor2D, new Int32Array([1, 0]), new Float32Array([0.5, 0.5])))(z);
  g.print();
  const g2 = tf.grad((x: tf.Tensor) => tf.mul(weightedCrossEntropy(x as tf.Tensor2D, new Int32Array([1, 0]), new Float32Array([0.5, 0.5])), 3))(z);
  g2.print();
  const g3 = tf.grad((x: tf.Tensor) => tf.sum(tf.matMul(tf.softmax(tf.reshape(x,[1,2,3])), tf.ones([1,3,2]))))(z); g3.print();
})();

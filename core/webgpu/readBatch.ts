/**
 * One GPU -> host read for many tensors: on webgpu each synchronous read is a submit, a map and
 * a wait (~1-4 ms on lavapipe), and a microbatch's gradients are ~100 tensors. Concatenating
 * them on the device (an exact copy) and reading once gives the same bits in one round trip.
 * Returns false off webgpu, where the caller reads tensor by tensor.
 */
import * as tf from '@tensorflow/tfjs';

export function readAllInto(parts: { t: tf.Tensor; offset: number }[], dst: Float32Array): boolean {
  if (tf.getBackend() !== 'webgpu' || parts.length === 0 || parts.some((p) => p.t.dtype !== 'float32')) return false;
  const flat = tf.tidy(() => tf.concat(parts.map((p) => tf.reshape(p.t, [-1])), 0));
  try {
    const all = flat.dataSync() as Float32Array;
    let at = 0;
    for (const p of parts) {
      dst.set(all.subarray(at, at + p.t.size), p.offset);
      at += p.t.size;
    }
  } finally {
    flat.dispose();
  }
  return true;
}

/**
 * One turn of the event loop between training steps on webgpu. Measured on Dawn + lavapipe:
 * buffers that tfjs destroys keep their driver memory (one memfd mapping each on lavapipe) until
 * the loop turns (Node runs the binding's deferred finalizers from the loop), so a process
 * that never yields hits the kernel's limit of 65,530 mappings after ~11 tiny steps and
 * crashes inside the driver. Steps themselves stay synchronous (syncRead.ts); the boundary
 * between two steps is the one place where other callbacks may run anyway.
 */
import * as tf from '@tensorflow/tfjs';

export function stepBoundary(): Promise<void> {
  return tf.getBackend() === 'webgpu' ? new Promise((resolve) => setImmediate(resolve)) : Promise.resolve();
}

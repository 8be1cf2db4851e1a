/**
 * Output buffers of the native kernels: a pool that recycles the buffers of disposed tensors
 * (core/bufferPool.ts), and reading a tensor's values without an extra copy. The pool's size
 * cap comes from the load options (core/backend.ts reads MOECAT_POOL_MB).
 */
import * as os from 'os';
import * as tf from '@tensorflow/tfjs';
import { BufferPool, PoolStats } from '../bufferPool';
import { activeCpuBackend, findCpuBackend } from '../tfjsInternals';
import { f32 } from './tensors';

/**
 * Default cap: a quarter of RAM, at most 4 GiB. The pool holds about one step's peak of
 * activations and gradients (configs/small: 1.15 GB); a cap below that drops buffers and brings
 * the GC back.
 */
export const DEFAULT_POOL_MB = Math.min(4096, Math.floor(os.totalmem() / 4 / 2 ** 20));

let pool: BufferPool | null = null;
let detachPool: (() => void) | null = null;

export const alloc = (n: number): Float32Array => (pool ? pool.take(n) : new Float32Array(n));
export const allocZeroed = (n: number): Float32Array => (pool ? pool.takeZeroed(n) : new Float32Array(n));
/** Hands a scratch buffer back to the pool (no-op without one). */
export const give = (v: Float32Array): void => pool?.give(v);

/** Counters of the output-buffer pool, or null when it is off. */
export function nativePoolStats(): PoolStats | null {
  return pool?.snapshot() ?? null;
}

/** Attaches the pool to the cpu backend (once), capped at `mb` MiB; 0 leaves it off. */
export function attachPool(mb: number): void {
  if (pool || !(mb > 0)) return;
  const backend = findCpuBackend();
  if (!backend || typeof backend.readSync !== 'function' || !backend.data) return;
  pool = new BufferPool(mb * 2 ** 20);
  detachPool = pool.attach(backend);
}

export function detachBufferPool(): void {
  detachPool?.();
  detachPool = null;
  pool = null;
}

/**
 * Copies a float32 tensor's values into dst at offset. On the cpu backend it reads the backend's
 * own array (one copy, no allocation: dataSync() would copy a pooled buffer first); elsewhere it
 * falls back to dataSync().
 */
export function readInto(t: tf.Tensor, dst: Float32Array, offset: number): void {
  if (t.dtype === 'float32' && tf.getBackend() === 'cpu') {
    const b = activeCpuBackend();
    if (b.data?.has?.(t.dataId)) {
      const v = f32(b, t);
      if (v && v.length === t.size) {
        dst.set(v, offset);
        return;
      }
    }
  }
  dst.set(t.dataSync() as Float32Array, offset);
}

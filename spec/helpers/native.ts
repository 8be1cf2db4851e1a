/**
 * Shared set-up of the native-kernel specs: a deterministic pseudo-random fill, and mocha hooks
 * that run a describe block on the cpu backend with the native kernels registered, then restore
 * the kernels and the test backend that were there before.
 */
import { strict as assert } from 'assert';
import { selectBackend } from '../../core/backend';
import { loadNativeKernels, nativeKernelNames, unloadNativeKernels } from '../../core/native';
import { useTestBackend } from './backend';

/** n values uniform in ±scale from a 32-bit LCG seeded with `seed`. */
export function lcg(n: number, seed: number, scale: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 - 0.5) * 2 * scale;
  });
}

/** Call inside describe(): cpu + native kernels for the block (skipped when skipReason is set). */
export function useNativeCpu(skipReason: string): void {
  let hadNative = false;
  before(async function () {
    if (skipReason) this.skip();
    hadNative = nativeKernelNames().length > 0;
    await selectBackend('cpu');
    assert.ok(loadNativeKernels().loaded);
  });
  after(async () => {
    if (skipReason) return;
    if (hadNative) loadNativeKernels();
    else unloadNativeKernels();
    await useTestBackend();
  });
}

/** A stand-in for a tfjs backend's data map and readSync, enough for BufferPool.attach. */
export function fakeBackend() {
  const store = new Map<object, { values?: unknown }>();
  return {
    data: {
      has: (k: object) => store.has(k),
      get: (k: object) => store.get(k),
      set: (k: object, v: { values?: unknown }) => void store.set(k, v),
      delete: (k: object) => store.delete(k),
    },
    readSync: (k: object) => store.get(k)!.values,
  };
}

/**
 * Synchronous GPU -> host reads without running the event loop (GPU-NOTES "Synchronous reads").
 *
 * tfjs-backend-webgpu's readSync draws through an OffscreenCanvas, which Node lacks. The step
 * reads routing ids and a few scalars in the middle of a forward pass, so a read must return
 * before anything else happens. We copy the tensor into a staging buffer, ask Dawn to map it,
 * and then run only Dawn's own ticks (captured in dawn.ts) until the map lands. No timer, socket
 * or HTTP callback can run in between, because the event loop never turns: the read is as
 * atomic, from JavaScript's point of view, as a read on the CPU backend.
 */
import * as tf from '@tensorflow/tfjs';
import { runPendingDawnTicks } from './dawn';
import { BufferUsage, GpuBuffer, MapMode } from './gpuTypes';
import type { WebgpuBackendInternals } from '../tfjsInternals';

export const syncReadStats = { reads: 0, bytes: 0, ticks: 0, micros: 0 };

/** Waits ~20 µs between polls so the driver's worker threads get the core. */
const pause = new Int32Array(new SharedArrayBuffer(4));
/** A map that has not landed after this long means the device is gone. */
const READ_TIMEOUT_MS = 120_000;

/** Maps `staging` for reading, running Dawn's ticks (and nothing else) until it is mapped. */
export function mapForReadSync(staging: GpuBuffer): ArrayBuffer {
  let failure: unknown = null;
  staging.mapAsync(MapMode.READ).catch((e: unknown) => {
    failure = e;
  });
  const t0 = Date.now();
  let idle = 0;
  const state = () => staging.mapState as string;
  while (state() !== 'mapped') {
    const ran = runPendingDawnTicks();
    syncReadStats.ticks += ran;
    if (state() === 'mapped') break;
    if (failure || state() === 'unmapped') throw new Error(`webgpu: mapping a read buffer failed: ${String(failure ?? 'map was cancelled')}`);
    if (ran === 0 && ++idle > 50_000) {
      // Dawn always keeps a tick queued while work is outstanding; none for this long means
      // its tick was scheduled before our capture existed, which loadDawn() rules out.
      throw new Error('webgpu: no Dawn tick is pending while a read waits (the binding was loaded before moecat installed its tick capture)');
    }
    if (Date.now() - t0 > READ_TIMEOUT_MS) throw new Error(`webgpu: a read did not complete in ${READ_TIMEOUT_MS / 1000} s (device lost?)`);
    Atomics.wait(pause, 0, 0, 0.02);
  }
  return staging.getMappedRange().slice(0);
}

/** Reads a whole GPU buffer of the backend synchronously. */
export function readBufferSync(backend: WebgpuBackendInternals, buffer: GpuBuffer): ArrayBuffer {
  const t0 = process.hrtime.bigint();
  const size = buffer.size;
  const staging = backend.bufferManager.acquireBuffer(size, BufferUsage.COPY_DST | BufferUsage.MAP_READ);
  backend.ensureCommandEncoderReady();
  backend.endComputePassEncoder();
  backend.commandEncoder!.copyBufferToBuffer(buffer, 0, staging, 0, size);
  backend.submitQueue();
  try {
    return mapForReadSync(staging);
  } finally {
    if (staging.mapState === 'mapped') staging.unmap();
    backend.bufferManager.releaseBuffer(staging);
    syncReadStats.reads++;
    syncReadStats.bytes += size;
    syncReadStats.micros += Number(process.hrtime.bigint() - t0) / 1000;
  }
}

/** Replaces the backend's OffscreenCanvas readSync with the staging-buffer read above. */
export function installSyncRead(backend: WebgpuBackendInternals): void {
  const original = backend.readSync.bind(backend);
  backend.readSync = (dataId: object) => {
    const d = backend.tensorMap.get(dataId);
    if (!d || d.values != null || d.dtype === 'string' || d.dtype === 'complex64') return original(dataId);
    const bytes = readBufferSync(backend, d.resource as GpuBuffer);
    const n = d.shape.reduce((a, b) => a * b, 1);
    // bool lives on the GPU as one i32 per element.
    const vals = d.dtype === 'bool' ? Uint8Array.from(new Int32Array(bytes, 0, n)) : tf.util.convertBackendValuesAndArrayBuffer(bytes.slice(0, n * 4), d.dtype as tf.DataType);
    backend.convertAndCacheOnCPU(dataId, vals);
    return vals;
  };
}

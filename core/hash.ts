/**
 * Hashing of tensors and parameter sets: sha256 over raw float32 bytes, parameters in a fixed
 * (sorted-name) order, so a parameter hash is a bitwise identity of the weights.
 */
import { createHash } from 'crypto';

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export function bytesOf(a: Float32Array | Int32Array | Uint8Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Hash of named float32 arrays, in sorted name order; names and shapes are part of the hash. */
export function hashNamedArrays(named: Map<string, { shape: number[]; data: Float32Array }>): string {
  const h = createHash('sha256');
  for (const name of [...named.keys()].sort()) {
    const t = named.get(name)!;
    h.update(`${name}:${t.shape.join('x')};`);
    h.update(bytesOf(t.data));
  }
  return h.digest('hex');
}

/** Fingerprint of a training step: hash of the exact bits of the loss and gradient norm. */
export function stepFingerprint(loss: number, gradNorm: number): string {
  const buf = new Float64Array([loss, gradNorm]);
  return sha256Hex(new Uint8Array(buf.buffer)).slice(0, 16);
}

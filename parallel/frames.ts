/**
 * Binary frame format for parallel/ (DESIGN.md section 5). One ws message = one frame =
 * a fixed 32-byte little-endian header followed by raw payload bytes. Tensors are never JSON:
 * a message of N bytes travels as ceil(N / maxPayload) DATA frames carrying their byte offset,
 * so the receiver writes each payload straight into the destination buffer. Control messages
 * (rendezvous, auth) reuse the header with a small UTF-8 JSON payload.
 *
 *   offset  size  field
 *   0       2     magic 0x4D43 ('MC')
 *   2       1     version (1)
 *   3       1     type      (MsgType)
 *   4       1     dtype     (DType; payload element type)
 *   5       1     op        (collective kind, to catch ranks calling different collectives)
 *   6       2     channel   (sub-message within one collective)
 *   8       4     tag       (collective sequence number)
 *   12      4     reserved (0)
 *   16      8     byteOffset of this payload in the whole message
 *   24      8     totalBytes of the whole message
 */
import { ParallelError } from '../core/errors';

export const FRAME_MAGIC = 0x4d43;
export const FRAME_VERSION = 1;
export const HEADER_BYTES = 32;
/** Default upper bound on one frame (header + payload); also the receiver's ws maxPayload. */
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024;
/** Control messages are tiny; anything larger before authentication is an attack or a bug. */
export const MAX_CONTROL_BYTES = 16 * 1024;

export enum MsgType {
  Hello = 1, // acceptor -> dialer: nonce
  Auth = 2, // dialer -> acceptor: rank, worldSize, nonce, HMAC
  AuthOk = 3, // acceptor -> dialer: HMAC proving the acceptor knows the secret too
  Refuse = 4, // acceptor -> dialer: reason, then close
  Table = 5, // rank 0 -> all: listen addresses of every rank
  Ready = 6, // rank r -> rank 0: full mesh formed
  Go = 7, // rank 0 -> all: everyone is ready
  Data = 8, // collective payload
  Bye = 9, // clean close
  Abort = 10, // fatal error on the sender; payload = reason
}

export enum DType {
  Bytes = 0,
  Float32 = 1,
  Float64 = 2,
  Int32 = 3,
}

export type NumArray = Float32Array | Float64Array | Int32Array;

export function dtypeOf(a: NumArray): DType {
  if (a instanceof Float32Array) return DType.Float32;
  if (a instanceof Float64Array) return DType.Float64;
  if (a instanceof Int32Array) return DType.Int32;
  throw new ParallelError('unsupported buffer type (use Float32Array, Float64Array or Int32Array)');
}

export function elemBytes(d: DType): number {
  return d === DType.Float64 ? 8 : d === DType.Bytes ? 1 : 4;
}

/** A typed view over `bytes` (which must be aligned for the element size). */
export function viewAs(d: DType, bytes: Uint8Array): NumArray | Uint8Array {
  const n = bytes.byteLength / elemBytes(d);
  switch (d) {
    case DType.Float32:
      return new Float32Array(bytes.buffer, bytes.byteOffset, n);
    case DType.Float64:
      return new Float64Array(bytes.buffer, bytes.byteOffset, n);
    case DType.Int32:
      return new Int32Array(bytes.buffer, bytes.byteOffset, n);
    default:
      return bytes;
  }
}

export interface FrameHeader {
  type: MsgType;
  dtype: DType;
  op: number;
  channel: number;
  tag: number;
  byteOffset: number;
  totalBytes: number;
}

export function encodeHeader(h: FrameHeader): Buffer {
  const b = Buffer.alloc(HEADER_BYTES);
  b.writeUInt16LE(FRAME_MAGIC, 0);
  b.writeUInt8(FRAME_VERSION, 2);
  b.writeUInt8(h.type, 3);
  b.writeUInt8(h.dtype, 4);
  b.writeUInt8(h.op, 5);
  b.writeUInt16LE(h.channel, 6);
  b.writeUInt32LE(h.tag >>> 0, 8);
  b.writeUInt32LE(0, 12);
  b.writeBigUInt64LE(BigInt(h.byteOffset), 16);
  b.writeBigUInt64LE(BigInt(h.totalBytes), 24);
  return b;
}

/**
 * Parses and validates one received frame; throws ParallelError naming the defect so the
 * caller can close the connection with a clear reason instead of misreading memory.
 */
export function decodeFrame(frame: Buffer, maxMessageBytes: number): { header: FrameHeader; payload: Buffer } {
  if (frame.length < HEADER_BYTES) throw new ParallelError(`malformed frame: ${frame.length} bytes is shorter than the ${HEADER_BYTES}-byte header`);
  const magic = frame.readUInt16LE(0);
  if (magic !== FRAME_MAGIC) throw new ParallelError(`malformed frame: bad magic 0x${magic.toString(16)}`);
  const version = frame.readUInt8(2);
  if (version !== FRAME_VERSION) throw new ParallelError(`malformed frame: unsupported version ${version}`);
  const type = frame.readUInt8(3);
  if (!(type in MsgType)) throw new ParallelError(`malformed frame: unknown message type ${type}`);
  const dtype = frame.readUInt8(4);
  if (!(dtype in DType)) throw new ParallelError(`malformed frame: unknown dtype ${dtype}`);
  const byteOffset = Number(frame.readBigUInt64LE(16));
  const totalBytes = Number(frame.readBigUInt64LE(24));
  const payload = frame.subarray(HEADER_BYTES);
  if (totalBytes > maxMessageBytes) throw new ParallelError(`malformed frame: message of ${totalBytes} bytes exceeds the limit of ${maxMessageBytes}`);
  if (byteOffset + payload.length > totalBytes) throw new ParallelError(`malformed frame: payload [${byteOffset}, ${byteOffset + payload.length}) overruns message length ${totalBytes}`);
  const eb = elemBytes(dtype);
  if (totalBytes % eb !== 0 || byteOffset % eb !== 0 || payload.length % eb !== 0) {
    throw new ParallelError(`malformed frame: sizes not a multiple of the ${eb}-byte ${DType[dtype]} element`);
  }
  return {
    header: { type, dtype, op: frame.readUInt8(5), channel: frame.readUInt16LE(6), tag: frame.readUInt32LE(8), byteOffset, totalBytes },
    payload,
  };
}

/**
 * Splits a message into frames of at most `maxFrameBytes` (header included), returned as
 * [header, payloadView] pairs: the payload is a view, not a copy, of the caller's buffer.
 */
export function* frameChunks(
  base: Omit<FrameHeader, 'byteOffset' | 'totalBytes'>,
  bytes: Uint8Array,
  maxFrameBytes: number,
): Generator<[Buffer, Uint8Array]> {
  const eb = elemBytes(base.dtype);
  // Keep every chunk element-aligned so the receiver can validate sizes per frame.
  const per = Math.floor((maxFrameBytes - HEADER_BYTES) / eb) * eb;
  if (per <= 0) throw new ParallelError(`maxFrameBytes ${maxFrameBytes} leaves no room for payload`);
  const total = bytes.byteLength;
  let off = 0;
  do {
    const n = Math.min(per, total - off);
    yield [encodeHeader({ ...base, byteOffset: off, totalBytes: total }), bytes.subarray(off, off + n)];
    off += n;
  } while (off < total);
}

export function bytesOf(a: NumArray | Uint8Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export function encodeControl(type: MsgType, body: unknown): Buffer {
  const payload = Buffer.from(JSON.stringify(body ?? {}), 'utf8');
  return Buffer.concat([encodeHeader({ type, dtype: DType.Bytes, op: 0, channel: 0, tag: 0, byteOffset: 0, totalBytes: payload.length }), payload]);
}

export function decodeControl(payload: Buffer): Record<string, unknown> {
  try {
    const v = JSON.parse(payload.toString('utf8'));
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new ParallelError(`malformed control message: ${(e as Error).message}`);
  }
}

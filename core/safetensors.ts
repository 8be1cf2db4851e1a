/**
 * The safetensors format (https://github.com/huggingface/safetensors, "Format"), read and
 * written exactly as specified so that other tools open our checkpoints:
 *   8 bytes   N, little-endian u64: size of the header
 *   N bytes   UTF-8 JSON: {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}
 *             padded with spaces (0x20) so the byte buffer starts 8-byte aligned
 *   rest      the byte buffer; offsets are relative to its start, tensors are little-endian,
 *             row-major, laid out contiguously with no holes or overlaps and nothing after them.
 * Decoding validates all of that (as the reference reader does) and returns copies, so every
 * typed array is properly aligned and does not alias the file buffer.
 */
import fs from 'fs';
import os from 'os';
import { CheckpointError } from './errors';

/** BF16 and F16 are read (and written) as raw 16-bit patterns; see `toFloat32`. */
export type SafeDType = 'F32' | 'I32' | 'F64' | 'U8' | 'I64' | 'BF16' | 'F16';
export type SafeData = Float32Array | Int32Array | Float64Array | Uint8Array | BigInt64Array | Uint16Array;
export type SafeTensor = { dtype: SafeDType; shape: number[]; data: SafeData };
export interface DecodedSafetensors {
  tensors: Map<string, SafeTensor>;
  metadata: Record<string, string>;
}

const METADATA_KEY = '__metadata__';
const BYTES: Record<SafeDType, number> = { F32: 4, I32: 4, F64: 8, U8: 1, I64: 8, BF16: 2, F16: 2 };
const CTOR = {
  F32: Float32Array,
  I32: Int32Array,
  F64: Float64Array,
  U8: Uint8Array,
  I64: BigInt64Array,
  BF16: Uint16Array,
  F16: Uint16Array,
} as const;
// The reference implementation refuses headers above 100 MB; a larger N is a corrupt file.
const MAX_HEADER = 100_000_000;
const HOST_LE = os.endianness() === 'LE';

function isDType(s: unknown): s is SafeDType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(BYTES, s);
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Little-endian bytes of a typed array (a view on LE hosts, a byte-swapped copy otherwise). */
function leBytes(data: SafeData): Uint8Array {
  const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return HOST_LE ? view : swapped(view, data.BYTES_PER_ELEMENT);
}

function swapped(bytes: Uint8Array, width: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += width) for (let j = 0; j < width; j++) out[i + j] = bytes[i + width - 1 - j];
  return out;
}

/** Encodes tensors in Map order (that is also the byte layout) plus optional string metadata. */
export function encodeSafetensors(tensors: Map<string, SafeTensor>, metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new CheckpointError(`metadata value for '${k}' must be a string, got ${typeof v}`, { where: METADATA_KEY });
    }
    header[METADATA_KEY] = { ...metadata };
  }
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    if (name === '' || name === METADATA_KEY) throw new CheckpointError(`invalid tensor name '${name}'`);
    if (!isDType(t.dtype)) throw new CheckpointError(`unsupported dtype '${String(t.dtype)}'`, { where: name, hint: `use one of ${Object.keys(BYTES).join(', ')}` });
    if (!(t.data instanceof CTOR[t.dtype])) throw new CheckpointError(`dtype ${t.dtype} needs a ${CTOR[t.dtype].name}, got ${t.data.constructor.name}`, { where: name });
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new CheckpointError(`invalid shape [${t.shape.join(',')}]`, { where: name });
    if (numel(t.shape) !== t.data.length) throw new CheckpointError(`shape [${t.shape.join(',')}] holds ${numel(t.shape)} elements but data has ${t.data.length}`, { where: name });
    const bytes = leBytes(t.data);
    header[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes.byteLength] };
    parts.push(bytes);
    offset += bytes.byteLength;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8;
  if (pad > 0) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const out = Buffer.alloc(8 + json.length + offset);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(out, 8);
  let at = 8 + json.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

interface Entry {
  name: string;
  dtype: SafeDType;
  shape: number[];
  begin: number;
  end: number;
}

/** Decodes and validates a safetensors buffer; `where` (usually the file path) names it in errors. */
export function decodeSafetensors(buf: Buffer, where = 'safetensors'): DecodedSafetensors {
  const fail = (msg: string, hint?: string): never => {
    throw new CheckpointError(msg, { where, hint: hint ?? 'the file is corrupt or not a safetensors file' });
  };
  if (buf.length < 8) fail(`file is ${buf.length} bytes, too short for the 8-byte header length`);
  const n64 = buf.readBigUInt64LE(0);
  if (n64 > BigInt(buf.length - 8)) fail(`header length ${n64} runs past the end of the ${buf.length}-byte file`);
  const n = Number(n64);
  if (n > MAX_HEADER) fail(`header length ${n} exceeds the ${MAX_HEADER}-byte limit`);
  const text = buf.subarray(8, 8 + n).toString('utf8');
  if (!text.startsWith('{')) fail('header does not start with a JSON object');
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    fail(`header is not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
  const dataStart = 8 + n;
  const dataLen = buf.length - dataStart;
  const metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('__metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__.${k} must be a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
    if (typeof info !== 'object' || info === null) fail(`tensor '${name}': entry is not an object`);
    const { dtype, shape, data_offsets: offs } = info!;
    if (!isDType(dtype)) fail(`tensor '${name}': unknown dtype '${String(dtype)}'`, `moecat reads ${Object.keys(BYTES).join(', ')}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`tensor '${name}': shape must be an array of non-negative integers`);
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0)) fail(`tensor '${name}': data_offsets must be [begin, end] non-negative integers`);
    const [begin, end] = offs as number[];
    const shp = shape as number[];
    const dt = dtype as SafeDType;
    if (end < begin) fail(`tensor '${name}': data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataLen) fail(`tensor '${name}': data_offsets [${begin}, ${end}] are out of range (byte buffer is ${dataLen} bytes)`);
    const want = numel(shp) * BYTES[dt];
    if (end - begin !== want) fail(`tensor '${name}': data_offsets span ${end - begin} bytes but ${dt}[${shp.join(',')}] needs ${want}`);
    entries.push({ name, dtype: dt, shape: shp, begin, end });
  }
  // Contiguity, as the reference reader checks it: sorted by offset, each tensor starts where the
  // previous one ended, and the last one ends at the end of the file.
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let prev = '';
  for (const e of sorted) {
    if (e.begin < cursor) fail(`tensor '${e.name}' overlaps tensor '${prev}' (begins at ${e.begin}, '${prev}' ends at ${cursor})`);
    if (e.begin > cursor) fail(`hole of ${e.begin - cursor} bytes before tensor '${e.name}' (offset ${cursor})`);
    cursor = e.end;
    prev = e.name;
  }
  if (cursor !== dataLen) fail(`${dataLen - cursor} bytes of trailing garbage after the last tensor`);
  const tensors = new Map<string, SafeTensor>();
  for (const e of entries) {
    // A fresh copy: the file buffer gives no alignment guarantee for Float32Array and friends.
    let bytes: Uint8Array<ArrayBuffer> = new Uint8Array(e.end - e.begin);
    bytes.set(buf.subarray(dataStart + e.begin, dataStart + e.end));
    const width = BYTES[e.dtype];
    if (!HOST_LE && width > 1) bytes = swapped(bytes, width);
    const data = new CTOR[e.dtype](bytes.buffer, 0, bytes.byteLength / width);
    tensors.set(e.name, { dtype: e.dtype, shape: [...e.shape], data });
  }
  return { tensors, metadata };
}

/** Writes a safetensors file (plain write: durability and atomicity belong to core/checkpoint). */
export function writeSafetensorsFile(file: string, tensors: Map<string, SafeTensor>, metadata?: Record<string, string>): void {
  fs.writeFileSync(file, encodeSafetensors(tensors, metadata));
}

/** Reads and validates a safetensors file; errors name the file. */
export function readSafetensorsFile(file: string): DecodedSafetensors {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new CheckpointError(`cannot read safetensors file (${e instanceof Error ? e.message : String(e)})`, { where: file, cause: e });
  }
  return decodeSafetensors(buf, file);
}

/** I64 tensor values as JS numbers; refuses values a double cannot hold exactly. */
export function i64ToNumbers(data: BigInt64Array, where = 'I64 tensor'): number[] {
  return Array.from(data, (v) => {
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new CheckpointError(`value ${v} is outside the exactly representable integer range`, { where });
    }
    return Number(v);
  });
}

/** The values of a floating-point tensor (F32, BF16, F16) as float32; null for other dtypes. */
export function toFloat32(t: SafeTensor): Float32Array | null {
  if (t.dtype === 'F32') return t.data as Float32Array;
  if (t.dtype !== 'BF16' && t.dtype !== 'F16') return null;
  const src = t.data as Uint16Array;
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  if (t.dtype === 'BF16') {
    for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16; // bfloat16 is the top half of a float32
    return out;
  }
  for (let i = 0; i < src.length; i++) {
    const h = src[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    out[i] = exp === 0 ? sign * frac * 2 ** -24 : exp === 31 ? (frac ? NaN : sign * Infinity) : sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return out;
}

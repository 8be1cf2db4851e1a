import { strict as assert } from 'assert';
import fs from 'fs';
import os from 'os';
import path from 'path';
import { decodeSafetensors, encodeSafetensors, i64ToNumbers, readSafetensorsFile, SafeTensor, writeSafetensorsFile } from '../../core/safetensors';
import { CheckpointError } from '../../core/errors';

/** Builds a safetensors file by hand: u64 LE length, header text (padded to 8), data bytes. */
function rawFile(header: object | string, data: Uint8Array, opts: { pad?: boolean } = {}): Buffer {
  let text = typeof header === 'string' ? header : JSON.stringify(header);
  if (opts.pad !== false) while (Buffer.byteLength(text) % 8 !== 0) text += ' ';
  const h = Buffer.from(text, 'utf8');
  const out = Buffer.alloc(8 + h.length + data.length);
  out.writeBigUInt64LE(BigInt(h.length), 0);
  h.copy(out, 8);
  out.set(data, 8 + h.length);
  return out;
}

/**
 * An independent reader written from the format description alone, with a DataView, to check
 * that a third-party tool sees what we meant to write.
 */
function thirdPartyRead(bytes: Uint8Array): Record<string, { dtype: string; shape: number[]; values: (number | bigint)[] }> {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const base = 8 + n;
  const out: Record<string, { dtype: string; shape: number[]; values: (number | bigint)[] }> = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [b, e] = t.data_offsets;
    const values: (number | bigint)[] = [];
    for (let at = base + b; at < base + e; ) {
      switch (t.dtype) {
        case 'F32': values.push(dv.getFloat32(at, true)); at += 4; break;
        case 'I32': values.push(dv.getInt32(at, true)); at += 4; break;
        case 'F64': values.push(dv.getFloat64(at, true)); at += 8; break;
        case 'I64': values.push(dv.getBigInt64(at, true)); at += 8; break;
        case 'U8': values.push(dv.getUint8(at)); at += 1; break;
        default: throw new Error(`dtype ${t.dtype}`);
      }
    }
    out[name] = { dtype: t.dtype, shape: t.shape, values };
  }
  return out;
}

function sample(): Map<string, SafeTensor> {
  return new Map<string, SafeTensor>([
    ['model.embed_tokens.weight', { dtype: 'F32', shape: [2, 3], data: new Float32Array([1.5, -2, 3.25, 0, -0, 1e-30]) }],
    ['ids', { dtype: 'I32', shape: [3], data: new Int32Array([-7, 0, 2147483647]) }],
    ['big', { dtype: 'I64', shape: [2], data: new BigInt64Array([-(2n ** 62n), 9007199254740993n]) }],
    ['mask', { dtype: 'U8', shape: [5], data: new Uint8Array([0, 1, 255, 3, 4]) }],
    ['scale', { dtype: 'F64', shape: [], data: new Float64Array([Math.PI]) }],
    ['empty', { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) }],
  ]);
}

function expectError(fn: () => unknown, ...parts: (string | RegExp)[]): CheckpointError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof CheckpointError, `expected CheckpointError, got ${String(e)}`);
    for (const p of parts) {
      if (typeof p === 'string') assert.ok(e.message.includes(p), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(p)}`);
      else assert.match(e.message, p);
    }
    return e;
  }
  assert.fail('expected a CheckpointError');
}

describe('core/safetensors', () => {
  it('round-trips every dtype, shape (incl. scalar and empty) and the metadata exactly', () => {
    const t = sample();
    const d = decodeSafetensors(encodeSafetensors(t, { format: 'pt', note: 'ü' }));
    assert.deepEqual(d.metadata, { format: 'pt', note: 'ü' });
    assert.deepEqual([...d.tensors.keys()].sort(), [...t.keys()].sort());
    for (const [name, want] of t) {
      const got = d.tensors.get(name)!;
      assert.equal(got.dtype, want.dtype, name);
      assert.deepEqual(got.shape, want.shape, name);
      assert.equal(got.data.constructor, want.data.constructor, name);
      assert.deepEqual(Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength), Buffer.from(want.data.buffer, want.data.byteOffset, want.data.byteLength), name);
    }
    assert.ok(Object.is((d.tensors.get('model.embed_tokens.weight')!.data as Float32Array)[4], -0));
  });

  it('lays out the file as specified: 8-aligned space-padded header, contiguous offsets in written order', () => {
    const buf = encodeSafetensors(sample(), { a: 'b' });
    const n = Number(buf.readBigUInt64LE(0));
    assert.equal(n % 8, 0);
    const text = buf.subarray(8, 8 + n).toString('utf8');
    const close = text.lastIndexOf('}');
    assert.ok(close >= n - 8, 'at most 7 bytes of padding');
    assert.ok([...buf.subarray(8 + close + 1, 8 + n)].every((b) => b === 0x20), 'padding is spaces');
    const header = JSON.parse(text) as Record<string, { data_offsets?: [number, number] }>;
    let cursor = 0;
    for (const name of sample().keys()) {
      const [b, e] = header[name].data_offsets!;
      assert.equal(b, cursor, `${name} starts where the previous tensor ended`);
      cursor = e;
    }
    assert.equal(8 + n + cursor, buf.length, 'nothing after the last tensor');
    assert.deepEqual(header.__metadata__, { a: 'b' });
  });

  it('omits __metadata__ when there is none', () => {
    const buf = encodeSafetensors(new Map([['x', { dtype: 'U8' as const, shape: [1], data: new Uint8Array([9]) }]]));
    const n = Number(buf.readBigUInt64LE(0));
    assert.deepEqual(Object.keys(JSON.parse(buf.subarray(8, 8 + n).toString())), ['x']);
    assert.deepEqual(decodeSafetensors(buf).metadata, {});
  });

  it('an independent DataView reader following the spec reads back our values', () => {
    const got = thirdPartyRead(encodeSafetensors(sample()));
    assert.deepEqual(got['model.embed_tokens.weight'], { dtype: 'F32', shape: [2, 3], values: Array.from(new Float32Array([1.5, -2, 3.25, 0, -0, 1e-30])) });
    assert.deepEqual(got.ids.values, [-7, 0, 2147483647]);
    assert.deepEqual(got.big.values, [-(2n ** 62n), 9007199254740993n]);
    assert.deepEqual(got.mask.values, [0, 1, 255, 3, 4]);
    assert.deepEqual(got.scale, { dtype: 'F64', shape: [], values: [Math.PI] });
    assert.deepEqual(got.empty, { dtype: 'F32', shape: [0, 4], values: [] });
  });

  it('decodes a hand-made byte fixture (tensors listed out of byte order, metadata last)', () => {
    const data = new Uint8Array(24);
    const dv = new DataView(data.buffer);
    dv.setInt32(0, -5, true); // "b" at [0, 4)
    dv.setFloat32(4, 0.5, true); // "a" at [4, 12)
    dv.setFloat32(8, -8, true);
    data.set([1, 2, 3, 4], 12); // "c": 12 bytes of U8 at [12, 24)
    const header =
      '{"a":{"dtype":"F32","shape":[1,2],"data_offsets":[4,12]},' +
      '"c":{"dtype":"U8","shape":[12],"data_offsets":[12,24]},' +
      '"b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"format":"pt"}}';
    const d = decodeSafetensors(rawFile(header, data), 'fixture');
    assert.deepEqual(Array.from(d.tensors.get('a')!.data as Float32Array), [0.5, -8]);
    assert.deepEqual(d.tensors.get('a')!.shape, [1, 2]);
    assert.deepEqual(Array.from(d.tensors.get('b')!.data as Int32Array), [-5]);
    assert.deepEqual(Array.from(d.tensors.get('c')!.data as Uint8Array), [1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual(d.metadata, { format: 'pt' });
  });

  it('accepts an unpadded header (other writers may not pad)', () => {
    const data = new Uint8Array(new Float32Array([2]).buffer);
    const buf = rawFile('{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', data, { pad: false });
    assert.notEqual(Number(buf.readBigUInt64LE(0)) % 8, 0);
    assert.deepEqual(Array.from(decodeSafetensors(buf).tensors.get('x')!.data as Float32Array), [2]);
  });

  it('returns aligned copies even from an unaligned source buffer', () => {
    const enc = encodeSafetensors(new Map([['w', { dtype: 'F64' as const, shape: [2], data: new Float64Array([1.25, -3]) }]]));
    const host = Buffer.alloc(enc.length + 3);
    enc.copy(host, 3);
    const src = host.subarray(3);
    const w = decodeSafetensors(src).tensors.get('w')!.data as Float64Array;
    assert.deepEqual(Array.from(w), [1.25, -3]);
    assert.equal(w.byteOffset % 8, 0);
    src.fill(0);
    assert.deepEqual(Array.from(w), [1.25, -3], 'the decoded array does not alias the file buffer');
  });

  describe('refuses a malformed file with a CheckpointError naming it', () => {
    const f32 = (n: number) => new Uint8Array(new Float32Array(n).buffer);
    const cases: [string, () => Buffer, string][] = [
      ['a file shorter than 8 bytes', () => Buffer.from([1, 2, 3]), 'too short'],
      ['a header length beyond the file', () => { const b = rawFile({}, new Uint8Array(0)); b.writeBigUInt64LE(1000n, 0); return b; }, 'runs past the end'],
      ['a header that is not JSON', () => rawFile('{"x": nope}', new Uint8Array(0)), 'not valid JSON'],
      ['a header that is a JSON array', () => rawFile('[1,2]   ', new Uint8Array(0)), 'JSON object'],
      ['an unknown dtype', () => rawFile({ x: { dtype: 'Q7', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), "unknown dtype 'Q7'"],
      ['a negative dimension', () => rawFile({ x: { dtype: 'U8', shape: [-1], data_offsets: [0, 1] } }, new Uint8Array(1)), 'shape'],
      ['offsets past the byte buffer', () => rawFile({ x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, f32(1)), 'out of range'],
      ['offsets ending before they begin', () => rawFile({ x: { dtype: 'U8', shape: [0], data_offsets: [4, 0] } }, f32(1)), 'end before'],
      ['offsets that disagree with shape x dtype', () => rawFile({ x: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, f32(1)), 'needs 8'],
      ['overlapping tensors', () => rawFile({ x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, y: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, f32(2)), 'overlaps'],
      ['a hole between tensors', () => rawFile({ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, y: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, f32(3)), 'hole of 4 bytes'],
      ['trailing garbage after the last tensor', () => rawFile({ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32(2)), '4 bytes of trailing garbage'],
      ['non-string metadata', () => rawFile({ __metadata__: { n: 1 } }, new Uint8Array(0)), '__metadata__.n'],
    ];
    for (const [what, make, msg] of cases) {
      it(what, () => {
        const e = expectError(() => decodeSafetensors(make(), '/runs/x/model.safetensors'), msg, '/runs/x/model.safetensors');
        assert.equal(e.code, 'E_CHECKPOINT');
      });
    }
  });

  it('refuses to encode data whose length or array type does not match shape and dtype', () => {
    expectError(() => encodeSafetensors(new Map([['w', { dtype: 'F32' as const, shape: [2, 2], data: new Float32Array(3) }]])), 'holds 4 elements', 'w');
    expectError(() => encodeSafetensors(new Map([['w', { dtype: 'F32' as const, shape: [1], data: new Float64Array(1) }]])), 'Float32Array');
    expectError(() => encodeSafetensors(new Map([['__metadata__', { dtype: 'U8' as const, shape: [0], data: new Uint8Array(0) }]])), 'invalid tensor name');
  });

  it('writes and reads files; a read failure names the path', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-st-'));
    try {
      const file = path.join(dir, 'w.safetensors');
      writeSafetensorsFile(file, sample(), { step: '7' });
      const d = readSafetensorsFile(file);
      assert.equal(d.metadata.step, '7');
      assert.deepEqual(Array.from(d.tensors.get('ids')!.data as Int32Array), [-7, 0, 2147483647]);
      fs.truncateSync(file, fs.statSync(file).size - 1);
      expectError(() => readSafetensorsFile(file), file, 'out of range');
      expectError(() => readSafetensorsFile(path.join(dir, 'nope.safetensors')), 'nope.safetensors', 'cannot read');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('i64ToNumbers converts exactly representable values and refuses the rest', () => {
    assert.deepEqual(i64ToNumbers(new BigInt64Array([-3n, 2n ** 53n - 1n])), [-3, 2 ** 53 - 1]);
    expectError(() => i64ToNumbers(new BigInt64Array([2n ** 53n + 1n]), 'pos'), 'pos');
  });
});

import { strict as assert } from 'assert';
import { decodeFrame, DType, frameChunks, HEADER_BYTES, MsgType } from '../../parallel/frames';

describe('parallel frames', () => {
  const base = { type: MsgType.Data, dtype: DType.Float32, op: 3, channel: 2, tag: 77 };

  it('chunks a message into frames of at most maxFrameBytes that reassemble exactly', () => {
    const data = Float32Array.from({ length: 1000 }, (_, i) => i * 0.5);
    const bytes = new Uint8Array(data.buffer);
    const frames = [...frameChunks(base, bytes, 1024)];
    const out = new Uint8Array(bytes.length);
    for (const [h, p] of frames) {
      const whole = Buffer.concat([h, p]);
      assert.ok(whole.length <= 1024);
      const f = decodeFrame(whole, 1 << 20);
      assert.deepEqual({ ...f.header, byteOffset: 0 }, { ...base, byteOffset: 0, totalBytes: bytes.length });
      out.set(f.payload, f.header.byteOffset);
    }
    assert.equal(frames.length, Math.ceil(4000 / (1024 - HEADER_BYTES - ((1024 - HEADER_BYTES) % 4))));
    assert.deepEqual(new Float32Array(out.buffer), data);
  });

  it('sends an empty message as one header-only frame', () => {
    const frames = [...frameChunks(base, new Uint8Array(0), 1024)];
    assert.equal(frames.length, 1);
    assert.equal(decodeFrame(Buffer.concat(frames[0]), 100).header.totalBytes, 0);
  });

  it('rejects malformed frames with a reason', () => {
    const [h, p] = [...frameChunks(base, new Uint8Array(8), 1024)][0];
    const good = Buffer.concat([h, p]);
    assert.throws(() => decodeFrame(good.subarray(0, 10), 100), /shorter than the 32-byte header/);
    const badMagic = Buffer.from(good);
    badMagic[0] = 0;
    assert.throws(() => decodeFrame(badMagic, 100), /bad magic/);
    const badType = Buffer.from(good);
    badType[3] = 99;
    assert.throws(() => decodeFrame(badType, 100), /unknown message type/);
    const overrun = Buffer.concat([good, Buffer.alloc(4)]);
    assert.throws(() => decodeFrame(overrun, 100), /overruns message length/);
    const odd = Buffer.concat([h, p.subarray(0, 6)]);
    assert.throws(() => decodeFrame(odd, 100), /multiple of the 4-byte Float32/);
    assert.throws(() => decodeFrame(good, 4), /exceeds the limit/);
  });
});

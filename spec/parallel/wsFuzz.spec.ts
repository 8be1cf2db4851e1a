/**
 * Fuzzing rank 0's rendezvous port: random bytes over plain TCP, and WebSocket peers sending
 * random binary, random text, frames with a valid magic but random header fields, and Auth
 * control messages with random bodies. Every connection is closed by rank 0 within a bound,
 * every refusal it logs is one line, nothing hangs, and afterwards a real rank still joins and
 * the group works. Counts go to stdout for docs/robustness.md.
 */
import { strict as assert } from 'assert';
import * as net from 'net';
import WebSocket from 'ws';
import { Group } from '../../parallel/collectives';
import { encodeControl, encodeHeader, MsgType } from '../../parallel/frames';
import { clientWsOptions } from '../../parallel/transport';
import { freePort, killAll, rankEnv, spawnRank, withTimeout } from './procs';
import { Rand } from '../helpers/rand';

const SECRET = 'fuzz-test-secret';
const FRAME = 64 * 1024;
const TCP_CASES = 150;
const WS_CASES = 250;


/** A frame with the right magic and version and random everything else. */
function randomFrame(r: Rand): Buffer {
  const payload = r.bytes(r.int(200));
  const h = encodeHeader({ type: r.int(256), dtype: r.int(256), op: r.int(256), channel: r.int(65536), tag: r.int(2 ** 32), byteOffset: 0, totalBytes: 0 });
  h.writeBigUInt64LE(BigInt(r.next() < 0.5 ? r.int(300) : Math.floor(r.next() * 2 ** 53)), 16);
  h.writeBigUInt64LE(BigInt(r.next() < 0.5 ? r.int(300) : Math.floor(r.next() * 2 ** 53)), 24);
  return Buffer.concat([h, payload]);
}

/** An Auth message whose body is random JSON (wrong or missing fields, a wrong MAC). */
function randomAuth(r: Rand): Buffer {
  const vals = [0, 1, -1, 2 ** 40, 'x', null, true, [], {}, 'a'.repeat(r.int(100)), 1.5];
  const body: Record<string, unknown> = {};
  for (const k of ['rank', 'worldSize', 'nonce', 'mac', 'listen', 'junk']) if (r.next() < 0.7) body[k] = vals[r.int(vals.length)];
  return encodeControl(MsgType.Auth, body);
}

function messageFor(kind: number, r: Rand): Buffer | string {
  switch (kind) {
    case 0: return r.bytes(r.int(3000));
    case 1: return r.bytes(r.int(16)).toString('latin1');
    case 2: return randomFrame(r);
    case 3: return randomAuth(r);
    default: return encodeControl(MsgType.Data, { x: 1 }).subarray(0, r.int(40));
  }
}

function closed(sock: { once(ev: 'close', f: () => void): unknown }, ms: number, what: string): Promise<void> {
  return withTimeout(new Promise<void>((res) => void sock.once('close', () => res())), ms, what);
}

describe('rank 0 port under random bytes and malformed frames (bounded, 127.0.0.1)', function () {
  this.timeout(120_000);
  let group: Group | null = null;
  after(async () => {
    killAll();
    await group?.close().catch(() => {});
  });

  it(`closes ${TCP_CASES} raw-TCP and ${WS_CASES} WebSocket junk connections, logs one line per refusal, then forms the group`, async () => {
    const port = await freePort();
    const logs: string[] = [];
    const pending = Group.init({ rank: 0, worldSize: 2, masterAddr: '127.0.0.1', masterPort: port, secret: SECRET, joinTimeoutMs: 100_000, maxFrameBytes: FRAME, log: (m) => logs.push(m) });
    pending.catch(() => {});
    const r = new Rand(2024);
    const t0 = Date.now();

    // Peers that start an upgrade request and stall are cut off (10 s), not held for minutes.
    const stalled = Promise.all(
      Array.from({ length: 3 }, async (_, i) => {
        const s = net.connect(port, '127.0.0.1');
        s.on('error', () => {});
        s.resume();
        await withTimeout(new Promise((res) => s.once('connect', res)), 5000, 'tcp connect');
        const done = closed(s, 20_000, `stalled request ${i} to be cut off`);
        s.write(i === 0 ? 'G' : 'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n');
        await done;
        return (Date.now() - t0) / 1000;
      }),
    );

    // Random bytes over plain TCP (not even HTTP), all at once: the server answers 400 and drops
    // each; one that stalls in a valid-looking partial request is cut off after 10 s.
    let tcpClosed = 0;
    await Promise.all(
      Array.from({ length: TCP_CASES }, async (_, i) => {
        const bytes = r.bytes(1 + r.int(2000));
        const end = r.next() < 0.5;
        const s = net.connect(port, '127.0.0.1');
        s.on('error', () => {});
        s.resume(); // read (and drop) the 400 answer, so the server's end of stream is seen
        await withTimeout(new Promise((res) => s.once('connect', res)), 5000, 'tcp connect');
        const done = closed(s, 20_000, `tcp case ${i} to be closed`);
        s.write(bytes);
        if (end) s.end(); // half-close too, so a server waiting for more bytes sees the end
        await done;
        tcpClosed++;
      }),
    );

    // WebSocket peers that never authenticate properly, 25 at a time.
    let wsClosed = 0;
    const kinds = [0, 0, 0, 0, 0];
    const wsCase = async (i: number, msgs: (Buffer | string)[]): Promise<void> => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}`, clientWsOptions(16 * FRAME, 5000));
      ws.on('error', () => {});
      const done = closed(ws, 20_000, `ws case ${i} to be closed`);
      await withTimeout(new Promise((res, rej) => (ws.once('open', res), ws.once('close', res), ws.once('unexpected-response', rej))), 5000, 'ws open');
      for (const m of msgs) if (ws.readyState === WebSocket.OPEN) ws.send(m);
      await done;
      wsClosed++;
    };
    for (let b = 0; b < WS_CASES; b += 25) {
      await Promise.all(
        Array.from({ length: Math.min(25, WS_CASES - b) }, (_, j) => {
          const msgs = Array.from({ length: 1 + r.int(4) }, () => {
            const kind = r.int(5);
            kinds[kind]++;
            return messageFor(kind, r);
          });
          return wsCase(b + j, msgs);
        }),
      );
    }
    const junkSeconds = (Date.now() - t0) / 1000;
    const stalledAt = await stalled;

    // Nothing hung: a real rank joins and a collective runs.
    const ok = spawnRank('join', rankEnv(1, 2, port, SECRET));
    group = await withTimeout(pending, 30_000, 'group after the junk');
    await withTimeout(group.barrier(), 10_000, 'barrier');
    assert.equal((await withTimeout(ok.done, 20_000, 'rank 1')).code, 0);

    assert.equal(tcpClosed, TCP_CASES);
    assert.equal(wsClosed, WS_CASES);
    for (const l of logs) assert.ok(!l.includes('\n'), `one line: ${JSON.stringify(l)}`);
    // Exactly one line per refused WebSocket peer (raw TCP junk gets node's 400 answer instead).
    const refusals = logs.filter((l) => !/ joined from /.test(l));
    assert.equal(refusals.length, WS_CASES, logs.slice(0, 20).join('\n'));
    for (const t of stalledAt) assert.ok(t >= 9 && t < 16, `a stalled request was cut off after ${t} s`);
    process.stdout.write(`      ws fuzz: ${tcpClosed} raw-TCP + ${wsClosed} WebSocket junk connections closed in ${junkSeconds.toFixed(1)} s; messages by kind [random binary, random text, random-header frame, random Auth, truncated frame] = [${kinds.join(', ')}]; ${refusals.length} one-line refusals logged; 3 stalled upgrade requests cut off at ${stalledAt.map((t) => t.toFixed(1)).join('/')} s; group formed afterwards\n`);
  });
});

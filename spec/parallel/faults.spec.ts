import { strict as assert } from 'assert';
import WebSocket from 'ws';
import { ParallelError } from '../../core/errors';
import { Group } from '../../parallel/collectives';
import { GroupOptions } from '../../parallel/rendezvous';
import { dialHandshake } from '../../parallel/handshake';
import { clientWsOptions, PeerLink } from '../../parallel/transport';
import { freePort, killAll, rankEnv, spawnRank, withTimeout } from './procs';

const SECRET = 'fault-test-secret';
const FRAME = 64 * 1024;

/** Rank 0 hosted in the mocha process, with its log captured. */
function master(W: number, port: number, extra: Partial<GroupOptions> = {}): { group: Promise<Group>; logs: string[] } {
  const logs: string[] = [];
  const group = Group.init({
    rank: 0, worldSize: W, masterAddr: '127.0.0.1', masterPort: port, secret: SECRET,
    joinTimeoutMs: 20_000, maxFrameBytes: FRAME, log: (m) => logs.push(m), ...extra,
  });
  group.catch(() => {});
  return { group, logs };
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A raw client that authenticates (or not) as an arbitrary rank, for protocol-level checks. */
async function rawJoin(port: number, rank: number, worldSize: number, secret: string): Promise<void> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}`, clientWsOptions(FRAME, 5000));
  // The link must listen from 'open' on: Hello may arrive in the same packet as the upgrade.
  const opts = { maxFrameBytes: FRAME, maxMessageBytes: 1 << 20, heartbeatMs: 1000, timeoutMs: 5000 };
  const link = await new Promise<PeerLink>((res, rej) => (ws.once('open', () => res(new PeerLink(ws, opts, 'test'))), ws.once('error', rej)));
  try {
    await dialHandshake(link, secret, 5000, { rank, worldSize }, 'rank 0');
  } finally {
    await link.close();
  }
}

describe('parallel faults (bounded, real sockets on 127.0.0.1)', function () {
  this.timeout(60_000);
  const groups: Group[] = [];
  afterEach(async () => {
    killAll();
    await Promise.all(groups.splice(0).map((g) => g.close().catch(() => {})));
  });

  it('refuses a peer with the wrong secret and still forms the group with the right one', async () => {
    const port = await freePort();
    const m = master(2, port);
    const bad = await withTimeout(spawnRank('join', rankEnv(1, 2, port, 'not-the-secret')).done, 20_000, 'bad peer');
    assert.equal(bad.code, 3);
    assert.match(String(bad.lines[0].error), /refused.*HMAC mismatch/);
    const good = spawnRank('join', rankEnv(1, 2, port, SECRET));
    const g = await withTimeout(m.group, 20_000, 'group');
    groups.push(g);
    await g.barrier();
    assert.equal((await withTimeout(good.done, 20_000, 'good peer')).code, 0);
    assert.ok(m.logs.some((l) => /refused .*HMAC mismatch \(wrong MOECAT_SECRET\?\)/.test(l)), m.logs.join('\n'));
  });

  it('refuses a duplicate rank with a clear error', async () => {
    const port = await freePort();
    const m = master(3, port);
    const first = spawnRank('join', rankEnv(1, 3, port, SECRET));
    await until(() => m.logs.some((l) => /rank 1 joined/.test(l)), 20_000, 'rank 1 to join');
    const dup = await withTimeout(spawnRank('join', rankEnv(1, 3, port, SECRET)).done, 20_000, 'duplicate');
    assert.equal(dup.code, 3);
    assert.match(String(dup.lines[0].error), /rank 1 has already joined \(duplicate rank\)/);
    const third = spawnRank('join', rankEnv(2, 3, port, SECRET));
    const g = await withTimeout(m.group, 20_000, 'group');
    groups.push(g);
    await g.barrier();
    assert.deepEqual([(await first.done).code, (await third.done).code], [0, 0]);
  });

  it('refuses a world-size mismatch and an out-of-range rank', async () => {
    const port = await freePort();
    const m = master(2, port);
    const wrongW = await withTimeout(spawnRank('join', rankEnv(1, 3, port, SECRET)).done, 20_000, 'mismatch');
    assert.match(String(wrongW.lines[0].error), /world size mismatch: rank 1 says 3, rank 0 has 2/);
    await assert.rejects(rawJoin(port, 5, 2, SECRET), /rank 5 is out of range/);
    const ok = spawnRank('join', rankEnv(1, 2, port, SECRET));
    groups.push(await withTimeout(m.group, 20_000, 'group'));
    await groups[0].barrier();
    assert.equal((await ok.done).code, 0);
  });

  it('fails the join after the timeout, naming the missing ranks', async () => {
    const port = await freePort();
    const m = master(4, port, { joinTimeoutMs: 2500 });
    const one = spawnRank('join', rankEnv(1, 4, port, SECRET));
    const t0 = Date.now();
    await assert.rejects(m.group, (e: Error) => e instanceof ParallelError && /missing rank\(s\) 2, 3 of world size 4/.test(e.message));
    assert.ok(Date.now() - t0 < 6000);
    const r1 = await withTimeout(one.done, 10_000, 'rank 1 to give up');
    assert.equal(r1.code, 3);
    assert.match(String(r1.lines[0].error), /missing rank\(s\) 2, 3/);
  });

  it('ignores unauthenticated garbage and oversized frames before the handshake', async () => {
    const port = await freePort();
    const m = master(2, port);
    const junk = new WebSocket(`ws://127.0.0.1:${port}`, clientWsOptions(16 * FRAME, 5000));
    await new Promise((res) => junk.once('open', res));
    junk.send(Buffer.from('garbage garbage garbage garbage garbage'));
    const huge = new WebSocket(`ws://127.0.0.1:${port}`, clientWsOptions(16 * FRAME, 5000));
    await new Promise((res) => huge.once('open', res));
    huge.send(Buffer.alloc(4 * FRAME));
    await Promise.all([junk, huge].map((w) => new Promise((r) => (w.readyState === WebSocket.CLOSED ? r(0) : w.once('close', r)))));
    const ok = spawnRank('join', rankEnv(1, 2, port, SECRET));
    const g = await withTimeout(m.group, 20_000, 'group');
    groups.push(g);
    await g.barrier();
    assert.equal((await ok.done).code, 0);
    assert.ok(m.logs.some((l) => /malformed frame: bad magic/.test(l)), m.logs.join('\n'));
    assert.ok(m.logs.some((l) => /larger than maxFrameBytes/.test(l)), m.logs.join('\n'));
  });

  for (const [mode, pattern] of [
    ['malformed', /rank 1 sent a malformed frame: bad magic/],
    ['oversized', /rank 1 lost: frame larger than maxFrameBytes \(65536\) refused/],
  ] as const) {
    it(`an authenticated peer sending a ${mode} frame fails the collective with a clear error`, async () => {
      const port = await freePort();
      const m = master(2, port);
      const evil = spawnRank(mode, rankEnv(1, 2, port, SECRET));
      const g = await withTimeout(m.group, 20_000, 'group');
      groups.push(g);
      const t0 = Date.now();
      await assert.rejects(withTimeout(g.allReduce(new Float32Array(10)), 10_000, 'collective'), (e: Error) => e instanceof ParallelError && pattern.test(e.message));
      assert.ok(Date.now() - t0 < 5000);
      await assert.rejects(g.barrier(), pattern, 'the group stays failed');
      await withTimeout(evil.done, 10_000, 'evil peer exit');
    });
  }

  for (const how of ['SIGKILL', 'SIGSTOP'] as const) {
    it(`a rank ${how === 'SIGKILL' ? 'killed' : 'frozen (SIGSTOP)'} mid-collective fails every other rank, naming it, within the bound`, async () => {
      const port = await freePort();
      const extra = { PAR_TIMEOUT: '3000' };
      const m = master(4, port, { timeoutMs: 3000 });
      const kids = [1, 2, 3].map((r) => spawnRank('loop', rankEnv(r, 4, port, SECRET, extra)));
      const g = await withTimeout(m.group, 20_000, 'group');
      groups.push(g);
      const buf = new Float32Array(1 << 18).fill(1);
      const loop = (async () => {
        for (;;) await g.allReduce(buf);
      })();
      loop.catch(() => {});
      await withTimeout(kids[1].firstLine, 20_000, 'rank 2 to start');
      const t0 = Date.now();
      kids[1].child.kill(how);
      await assert.rejects(withTimeout(loop, 10_000, 'rank 0 to notice'), (e: Error) => e instanceof ParallelError && /rank 2 lost/.test(e.message));
      assert.ok(Date.now() - t0 < 10_000);
      for (const k of [kids[0], kids[2]]) {
        const out = await withTimeout(k.done, 10_000, 'survivor exit');
        assert.equal(out.code, 3);
        const err = String(out.lines.find((l) => 'error' in l)?.error);
        assert.match(err, /rank 2 lost/);
      }
    });
  }
});

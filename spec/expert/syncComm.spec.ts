/** The worker-thread synchronous all-to-all over real processes and sockets (127.0.0.1). */
import { strict as assert } from 'assert';
import * as path from 'path';
import { freePort, killAll, rankEnv, spawnRank, withTimeout } from '../parallel/procs';

const SCRIPT = path.join(__dirname, 'a2aRank.js');

async function runGroup(W: number, mode: string) {
  const port = await freePort();
  const runs = Array.from({ length: W }, (_, r) => spawnRank(mode, rankEnv(r, W, port, 'ep-secret'), SCRIPT));
  return withTimeout(Promise.all(runs.map((r) => r.done)), 60000, `${mode} at W=${W}`);
}

describe('syncAllToAll (worker thread + Atomics.wait)', function () {
  this.timeout(120000);
  after(killAll);

  for (const W of [2, 4]) {
    it(`delivers variable-sized parts exactly at W=${W}, blocking and overlapped`, async () => {
      const res = await runGroup(W, 'exchange');
      res.forEach((r, rank) => {
        assert.equal(r.code, 0, r.stderr);
        const line = r.lines.find((l) => 'bad' in l);
        assert.ok(line, `rank ${rank}: ${JSON.stringify(r.lines)} ${r.stderr}`);
        assert.deepEqual(line.bad, []);
      });
    });
  }

  it('a lost peer surfaces on the blocked main thread as a ParallelError naming it', async () => {
    const res = await runGroup(2, 'lose');
    const line = res[0].lines.find((l) => 'error' in l);
    assert.ok(line, res[0].stderr);
    assert.equal(line.kind, 'ParallelError');
    assert.match(String(line.error), /rank 1/);
    assert.ok(Number(line.ms) < 20000, `took ${line.ms} ms`);
  });
});

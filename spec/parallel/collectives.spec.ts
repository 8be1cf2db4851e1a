import { strict as assert } from 'assert';
import { expected } from '../fixtures/parallel-data';
import { freePort, killAll, rankEnv, spawnRank, withTimeout } from './procs';

describe('parallel collectives (real processes over 127.0.0.1)', function () {
  this.timeout(90_000);
  after(killAll);

  for (const W of [1, 2, 4]) {
    describe(`world size ${W}`, () => {
      let results: Record<string, string>[] = [];
      let want: Record<string, string>[] = [];
      before(async () => {
        const port = await freePort();
        const runs = [...Array(W).keys()].map((r) => spawnRank('collectives', rankEnv(r, W, port, 'test-secret-collectives')));
        const outs = await withTimeout(Promise.all(runs.map((x) => x.done)), 60_000, `W=${W} collectives`);
        want = [...Array(W).keys()].map((r) => expected(W, r));
        results = outs.map((o, r) => {
          assert.equal(o.code, 0, `rank ${r} failed: ${JSON.stringify(o.lines)} ${o.stderr}`);
          return (o.lines[0] as { results: Record<string, string> }).results;
        });
      });
      const names = Object.keys(expected(1, 0));
      for (const name of names) {
        it(`${name} is exact on every rank`, () => {
          results.forEach((got, r) => assert.equal(got[name], want[r][name], `rank ${r}`));
        });
      }
    });
  }
});

/**
 * Expert-parallel training over real processes: with one microbatch per rank per step (M = W)
 * the parameters after a few steps are bitwise those of the single-process run, for ScMoE with
 * and without the communication overlap and for the sequential layer (each rank holding only
 * its own experts, the default); a rank lost mid-run fails the others with an error naming it.
 */
import { strict as assert } from 'assert';
import { killRankOneDuringTraining } from '../helpers/killRank';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { freePort } from '../../parallel/launcher';

const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');
const base = (M: number) => ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', `data.microBatches=${M}`, 'train.steps=3', 'train.checkpointEvery=3', 'optim.schedule={warmupSteps: 1, decaySteps: 1}'];
const setArgs = (sets: string[]) => sets.flatMap((s) => ['--set', s]);
const ENV = { ...process.env, MOECAT_BACKEND: process.env.MOECAT_TEST_BACKEND ?? 'wasm' };

function hashOf(out: string): string {
  const m = /param_hash ([0-9a-f]{64})/.exec(out);
  assert.ok(m, `no param_hash in output:\n${out.slice(-3000)}`);
  return m[1];
}

function moecat(args: string[], timeout = 240000) {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: ENV, encoding: 'utf8', timeout });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

describe('expert-parallel training over sockets', function () {
  this.timeout(600000);
  let tmp: string;
  before(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-ep-'))));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const cases: { name: string; W: number; extra: string[]; flags: string[] }[] = [
    { name: 'ScMoE, overlapped, W=2', W: 2, extra: [], flags: [] },
    { name: 'ScMoE, not overlapped, W=2', W: 2, extra: [], flags: ['--no-ep-overlap'] },
    { name: 'sequential layer, W=2', W: 2, extra: ['model.layerType=sequential'], flags: [] },
    { name: 'ScMoE, overlapped, W=4', W: 4, extra: [], flags: [] },
  ];
  const refs = new Map<string, string>();
  for (const c of cases) {
    it(`${c.name}: same param_hash as the single-process run with M = W`, () => {
      const sets = setArgs([...base(c.W), ...c.extra]);
      const key = `${c.W}:${c.extra.join(',')}`;
      if (!refs.has(key)) {
        const one = moecat(['train', '--config', 'configs/tiny.yaml', '--out', path.join(tmp, `ref-${refs.size}`), ...sets]);
        assert.equal(one.status, 0, one.out);
        refs.set(key, hashOf(one.out));
      }
      const r = moecat(['launch', '--nproc', String(c.W), '--', 'train', '--config', 'configs/tiny.yaml', '--out', path.join(tmp, `ep-${c.name.replace(/\W+/g, '_')}`), '--expert-parallel', ...c.flags, ...sets]);
      assert.equal(r.status, 0, r.out);
      assert.equal(hashOf(r.out), refs.get(key), c.name);
    });
  }

  it('killing one rank during EP training makes the other exit with an error naming it', async () => {
    const port = await freePort();
    const env = { ...ENV, MOECAT_SECRET: 'ep-test-secret' };
    const out = path.join(tmp, 'kill');
    const sets = setArgs([...base(2), 'train.steps=200', 'train.checkpointEvery=1000', 'optim.schedule={warmupSteps: 1, decaySteps: 1}']);
    const r = await killRankOneDuringTraining(
      CLI,
      (rank) => ['train', '--config', 'configs/tiny.yaml', '--out', out, ...sets, '--expert-parallel', '--world-size', '2', '--rank', String(rank), '--master', `127.0.0.1:${port}`, '--peer-timeout', '20'],
      env,
      200,
    );
    assert.notEqual(r.code, 0);
    assert.match(r.log, /error: .*rank 1/);
    assert.ok(r.tookMs < 30000, `rank 0 took ${r.tookMs} ms to fail`);
  });
});

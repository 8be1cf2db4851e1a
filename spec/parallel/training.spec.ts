/**
 * Data-parallel training over real processes and sockets: world sizes give the same bits, a
 * lost rank fails the others clearly, and launch --max-restarts resumes to the same result.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { freePort } from '../../parallel/launcher';
import { killRankOneDuringTraining } from '../helpers/killRank';

const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');
const SETS = ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=4', 'train.steps=6', 'train.checkpointEvery=3', 'optim.schedule={warmupSteps: 1, decaySteps: 2}'];
const setArgs = SETS.flatMap((s) => ['--set', s]);
const ENV = { ...process.env, MOECAT_BACKEND: process.env.MOECAT_TEST_BACKEND ?? 'wasm' };

function hashOf(out: string): string {
  const m = /param_hash ([0-9a-f]{64})/.exec(out);
  assert.ok(m, `no param_hash in output:\n${out.slice(-2000)}`);
  return m[1];
}

function moecat(args: string[], env: NodeJS.ProcessEnv = ENV, timeout = 240000) {
  const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8', timeout });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

describe('data-parallel training over sockets', function () {
  this.timeout(600000);
  let tmp: string;
  let reference = '';
  before(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-dp-'))));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('world sizes 1, 2 and 4 with the same global batch give the same param_hash', () => {
    const one = moecat(['train', '--config', 'configs/tiny.yaml', '--out', path.join(tmp, 'w1'), ...setArgs]);
    assert.equal(one.status, 0, one.out);
    reference = hashOf(one.out);
    for (const W of [2, 4]) {
      const r = moecat(['launch', '--nproc', String(W), '--', 'train', '--config', 'configs/tiny.yaml', '--out', path.join(tmp, `w${W}`), ...setArgs]);
      assert.equal(r.status, 0, r.out);
      assert.equal(hashOf(r.out), reference, `world size ${W}`);
    }
  });

  it('killing one rank makes the other exit with an error naming it, within the bound', async () => {
    const port = await freePort();
    const env = { ...ENV, MOECAT_SECRET: 'test-secret' };
    const out = path.join(tmp, 'kill');
    const r = await killRankOneDuringTraining(
      CLI,
      (rank) => ['train', '--config', 'configs/tiny.yaml', '--out', out, ...setArgs, '--set', 'train.steps=200', '--world-size', '2', '--rank', String(rank), '--master', `127.0.0.1:${port}`, '--peer-timeout', '20'],
      env,
      200,
    );
    assert.notEqual(r.code, 0);
    assert.match(r.log, /rank 1/);
    assert.ok(r.tookMs < 30000, `rank 0 took ${r.tookMs} ms to fail`);
  });

  it('launch --max-restarts 1 resumes after a rank dies and ends with the uninterrupted param_hash', () => {
    assert.ok(reference, 'needs the reference run');
    const env = { ...ENV, MOECAT_FAULT_EXIT_AT_STEP: '4', MOECAT_FAULT_RANK: '1' };
    const r = moecat(['launch', '--nproc', '2', '--max-restarts', '1', '--', 'train', '--config', 'configs/tiny.yaml', '--out', path.join(tmp, 'restart'), '--auto-resume', ...setArgs], env);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /fault drill: rank 1 exits at step 4/);
    assert.match(r.out, /restarting the group/);
    assert.match(r.out, /resumed from .*step-00000003/);
    assert.equal(hashOf(r.out), reference);
  });
});

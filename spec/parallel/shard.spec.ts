/**
 * `parallel.shard: optimizer` over real processes and sockets: world sizes 2 and 4 give the
 * param_hash of the unsharded single-process run, and a sharded run resumed on a different
 * world size (4 -> 2 -> 1, 1 -> 4) ends with the uninterrupted run's param_hash.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');
const SETS = ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=4', 'train.steps=6', 'train.checkpointEvery=1', 'optim.clipNorm=0.05', 'optim.schedule={warmupSteps: 1, decaySteps: 2}'];
const setArgs = SETS.flatMap((s) => ['--set', s]);
const ENV = { ...process.env, MOECAT_BACKEND: process.env.MOECAT_TEST_BACKEND ?? 'wasm' };

function hashOf(out: string): string {
  const m = /param_hash ([0-9a-f]{64})/.exec(out);
  assert.ok(m, `no param_hash in output:\n${out.slice(-2000)}`);
  return m[1];
}

/** `moecat ARGS` under `launch --nproc W` when W > 1; bounded in time. */
function moecat(W: number, args: string[]) {
  const argv = W > 1 ? ['launch', '--nproc', String(W), '--', ...args] : args;
  const r = spawnSync(process.execPath, [CLI, ...argv], { env: ENV, encoding: 'utf8', timeout: 240000 });
  const out = `${r.stdout}\n${r.stderr}`;
  assert.equal(r.status, 0, out);
  return out;
}

describe('sharded optimizer state over sockets', function () {
  this.timeout(600000);
  let tmp: string;
  let reference = '';
  before(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-shard-'))));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('shard: optimizer on 2 and 4 ranks gives the param_hash of shard: none on one process', () => {
    reference = hashOf(moecat(1, ['train', '--config', 'configs/tiny.yaml', '--out', path.join(tmp, 'ref'), ...setArgs]));
    for (const W of [2, 4]) {
      const out = moecat(W, ['train', '--config', 'configs/tiny.yaml', '--out', path.join(tmp, `w${W}`), ...setArgs, '--set', 'parallel.shard=optimizer']);
      assert.equal(hashOf(out), reference, `world size ${W}`);
    }
  });

  it('a sharded run resumed on other world sizes (4 -> 2 -> 1, 1 -> 4) ends with the uninterrupted param_hash', () => {
    assert.ok(reference, 'needs the reference run');
    const a = path.join(tmp, 'a');
    moecat(4, ['train', '--config', 'configs/tiny.yaml', '--out', a, ...setArgs, '--set', 'parallel.shard=optimizer', '--max-steps', '2']);
    const mid = moecat(2, ['train', '--resume', a, '--max-steps', '4']);
    assert.match(mid, /resumed from .*step-00000002/);
    const end = moecat(1, ['train', '--resume', a]);
    assert.match(end, /resumed from .*step-00000004/);
    assert.equal(hashOf(end), reference, '4 -> 2 -> 1');
    const b = path.join(tmp, 'b');
    moecat(1, ['train', '--config', 'configs/tiny.yaml', '--out', b, ...setArgs, '--set', 'parallel.shard=optimizer', '--max-steps', '3']);
    assert.equal(hashOf(moecat(4, ['train', '--resume', b])), reference, '1 -> 4');
  });
});

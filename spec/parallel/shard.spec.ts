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

/** `moecat ARGS` (under `launch --nproc W` when W > 1), bounded in time; returns status and output. */
function run(W: number, args: string[], env: NodeJS.ProcessEnv = ENV, launchFlags: string[] = []) {
  const argv = W > 1 ? ['launch', '--nproc', String(W), ...launchFlags, '--', ...args] : args;
  const r = spawnSync(process.execPath, [CLI, ...argv], { env, encoding: 'utf8', timeout: 240000 });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

function moecat(W: number, args: string[], env: NodeJS.ProcessEnv = ENV, launchFlags: string[] = []): string {
  const r = run(W, args, env, launchFlags);
  assert.equal(r.status, 0, r.out);
  return r.out;
}

const stateOf = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as Record<string, unknown>;

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

  it('shard: optimizer combines with --expert-parallel (M = W = 2): the single-process param_hash', () => {
    const m2 = ['--set', 'data.microBatches=2', '--set', 'train.steps=4'];
    const one = hashOf(moecat(1, ['train', '--config', 'configs/tiny.yaml', '--out', path.join(tmp, 'ep-ref'), ...setArgs, ...m2]));
    const ep = moecat(2, ['train', '--config', 'configs/tiny.yaml', '--out', path.join(tmp, 'ep2'), '--expert-parallel', ...setArgs, ...m2, '--set', 'parallel.shard=optimizer']);
    assert.equal(hashOf(ep), one);
  });

  it('a sharded checkpoint holds one optimizer file per rank, indexed by state.json; audit and export read it', () => {
    const ck = path.join(tmp, 'w4', 'checkpoints', 'step-00000006');
    const names = fs.readdirSync(ck).sort();
    assert.ok(!names.includes('optimizer.safetensors'), names.join(' '));
    const shards = names.filter((n) => n.startsWith('optimizer-rank-'));
    assert.deepEqual(shards, [0, 1, 2, 3].map((r) => `optimizer-rank-0000${r}-of-00004.safetensors`));
    const st = stateOf(ck) as { optimizer_shards: { world_size: number; ranges: [number, number][] }; files: Record<string, string> };
    assert.equal(st.optimizer_shards.world_size, 4);
    for (const n of shards) assert.match(st.files[n], /^[0-9a-f]{64}$/);
    const sizes = st.optimizer_shards.ranges.map(([lo, hi]) => hi - lo);
    assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `uneven shards ${sizes}`);
    assert.equal(fs.readdirSync(path.dirname(ck)).filter((n) => n.startsWith('.shards-')).length, 0, 'staging left behind');
    // Audit starts from the sharded checkpoint of step 4 (keepLast 3) and recomputes steps 5..6 on one process.
    const audit = moecat(1, ['audit', path.join(tmp, 'w4'), '--from', '5']);
    assert.match(audit, /recomputed from .*step-00000004/);
    assert.match(audit, /OK: steps 5\.\.6 identical/);
    moecat(1, ['export', '--checkpoint', path.join(tmp, 'w4'), '--out', path.join(tmp, 'w4-hf')]);
    assert.ok(fs.existsSync(path.join(tmp, 'w4-hf', 'config.json')));
  });

  it('a truncated shard is refused on resume with one line naming the file', () => {
    const copy = path.join(tmp, 'w4-damaged');
    fs.cpSync(path.join(tmp, 'w4'), copy, { recursive: true, verbatimSymlinks: true });
    const f = path.join(copy, 'checkpoints', 'step-00000006', 'optimizer-rank-00002-of-00004.safetensors');
    fs.truncateSync(f, 100);
    const r = run(1, ['train', '--resume', copy]);
    assert.equal(r.status, 2, r.out);
    assert.match(r.out, /error: .*optimizer-rank-00002-of-00004\.safetensors.*truncated/);
  });

  it('SIGKILL of a rank while it writes its shard commits nothing; the restarted group resumes from the previous checkpoint to the same param_hash', () => {
    assert.ok(reference, 'needs the reference run');
    const out = path.join(tmp, 'kill');
    const env = { ...ENV, MOECAT_FAULT_SHARD_KILL: '3:1' };
    const r = moecat(2, ['train', '--config', 'configs/tiny.yaml', '--out', out, '--auto-resume', ...setArgs, '--set', 'parallel.shard=optimizer'], env, ['--max-restarts', '1']);
    assert.match(r, /fault drill: rank 1 killed while writing its optimizer shard at step 3/);
    assert.match(r, /resumed from .*step-00000002/);
    assert.equal(hashOf(r), reference);
    assert.equal(fs.readdirSync(path.join(out, 'checkpoints')).filter((n) => n.startsWith('.')).length, 0, 'leftovers of the killed attempt');
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

/**
 * `parallel.shard: full` over real processes and sockets: a run on 4 ranks resumed on 1 and then
 * 2 (4 -> 1 -> 2 reshards its checkpoints) ends with the param_hash of the unsharded
 * single-process run, audit recomputes it, and a per-process state limit
 * (`parallel.maxStateBytes`) refuses `shard: none` cleanly (spec/parallel/shardFullHosts.spec.ts
 * trains `full` under such a limit on 4 hosts).
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadTrainConfig } from '../../trainer/config';
import { flatLayout } from '../../model/flatParams';
import { paramSpecs } from '../../model/params';
import { estimateStateBytes } from '../../trainer/stateBudget';

const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');
const SETS = ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=4', 'train.steps=4', 'train.checkpointEvery=1', 'optim.clipNorm=0.05', 'optim.schedule={warmupSteps: 1, decaySteps: 2}'];
const setArgs = SETS.flatMap((s) => ['--set', s]);
const ENV = { ...process.env, MOECAT_BACKEND: process.env.MOECAT_TEST_BACKEND ?? 'wasm' };

function hashOf(out: string): string {
  const m = /param_hash ([0-9a-f]{64})/.exec(out);
  assert.ok(m, `no param_hash in output:\n${out.slice(-2000)}`);
  return m[1];
}

function run(W: number, args: string[]) {
  const argv = W > 1 ? ['launch', '--nproc', String(W), '--', ...args] : args;
  const r = spawnSync(process.execPath, [CLI, ...argv], { env: ENV, encoding: 'utf8', timeout: 240000 });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

function moecat(W: number, args: string[]): string {
  const r = run(W, args);
  assert.equal(r.status, 0, r.out);
  return r.out;
}

describe('sharded weights (parallel.shard: full) over sockets', function () {
  this.timeout(600000);
  let tmp: string;
  before(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-shardfull-'))));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('4 ranks, resumed on 1 and then on 2 (sharded checkpoints), end on the param_hash of shard: none on one process; audit recomputes the run', () => {
    const reference = hashOf(moecat(1, ['train', '--config', 'configs/tiny.yaml', '--out', path.join(tmp, 'ref'), ...setArgs]));
    const a = path.join(tmp, 'a');
    moecat(4, ['train', '--config', 'configs/tiny.yaml', '--out', a, ...setArgs, '--set', 'parallel.shard=full', '--max-steps', '2']);
    const names = fs.readdirSync(path.join(a, 'checkpoints', 'step-00000002'));
    assert.ok(names.includes('model.safetensors'), names.join(' '));
    assert.deepEqual(names.filter((n) => n.startsWith('optimizer-rank-')).sort(), [0, 1, 2, 3].map((x) => `optimizer-rank-0000${x}-of-00004.safetensors`));
    const mid = moecat(1, ['train', '--resume', a, '--max-steps', '3']);
    assert.match(mid, /resumed from .*step-00000002/);
    const end = moecat(2, ['train', '--resume', a]);
    assert.match(end, /resumed from .*step-00000003/);
    assert.equal(hashOf(end), reference, '4 -> 1 -> 2');
    // Audit starts from the checkpoint the 4 ranks wrote at step 2 and recomputes steps 3..4.
    const audit = moecat(1, ['audit', a, '--from', '3']);
    assert.match(audit, /recomputed from .*step-00000002/);
    assert.match(audit, /OK: steps 3\.\.4 identical/);
  });

  it('under a per-process state limit, shard: none is refused with one line and nothing written', () => {
    const cfg = loadTrainConfig('configs/tiny.yaml', SETS).config;
    const layout = flatLayout(paramSpecs(cfg.model));
    const limit = Math.floor((estimateStateBytes(layout, 'none', 1, 4).total + estimateStateBytes(layout, 'full', 4, 4).total) / 2);
    const refused = path.join(tmp, 'refused');
    const r = run(1, ['train', '--config', 'configs/tiny.yaml', '--out', refused, ...setArgs, '--set', `parallel.maxStateBytes=${limit}`]);
    assert.equal(r.status, 2, r.out);
    const errors = r.out.split('\n').filter((l) => l.startsWith('error:'));
    assert.equal(errors.length, 1, r.out);
    assert.match(errors[0], /^error: parallel\.maxStateBytes: one rank would hold .* under parallel\.shard: none on 1 rank, over the limit/);
    assert.ok(!fs.existsSync(refused), 'a refused run left a directory behind');
  });

  it('shard: full with --expert-parallel is refused with one line', () => {
    const r = run(2, ['train', '--config', 'configs/tiny.yaml', '--out', path.join(tmp, 'ep'), '--expert-parallel', ...setArgs, '--set', 'parallel.shard=full']);
    assert.notEqual(r.status, 0, r.out);
    assert.match(r.out, /error: --expert-parallel: parallel\.shard: full does not combine with expert parallelism/);
  });
});

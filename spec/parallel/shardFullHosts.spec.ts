/**
 * A run that needs `parallel.shard: full` (issue: train models larger than one process): under a
 * per-process training-state limit (`parallel.maxStateBytes`, checked at start-up), the config
 * is refused with `shard: none` on one host and trains with `shard: full` on 4 ranks, each on its
 * own host — network namespaces with their own addresses (scripts/cluster/test-cluster.sh with 4
 * nodes), joined by torchrun-style variables — to the param_hash of one process running the same
 * config with the limit lifted. Each rank's memory report shows it held about a quarter of the
 * weights and Adam moments. Needs root, iproute2, slurm-wlm and munge (the cluster script starts
 * Slurm daemons too); skips with the reason otherwise.
 */
import { strict as assert } from 'assert';
import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { setTimeout as sleep } from 'timers/promises';
import { loadTrainConfig } from '../../trainer/config';
import { flatLayout } from '../../model/flatParams';
import { paramSpecs } from '../../model/params';
import { estimateStateBytes } from '../../trainer/stateBudget';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const CLUSTER = path.join(ROOT, 'scripts', 'cluster', 'test-cluster.sh');
const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');
const BACKEND = process.env.MOECAT_TEST_BACKEND ?? 'wasm';
const W = 4;
const SETS = ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=4', 'train.steps=4', 'train.checkpointEvery=2', 'optim.schedule={warmupSteps: 1, decaySteps: 2}'];
const TRAIN_ARGS = ['--config', 'configs/tiny.yaml', ...SETS.flatMap((s) => ['--set', s])];

function skipReason(): string {
  if (process.platform !== 'linux') return 'hosts test: Linux only';
  if (process.getuid?.() !== 0) return 'hosts test: needs root (network namespaces)';
  for (const tool of ['slurmctld', 'slurmd', 'munged', 'ip', 'nsenter', 'unshare']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `hosts test: ${tool} not found (apt-get install slurm-wlm munge iproute2 util-linux)`;
  }
  return '';
}

function cluster(args: string[], timeout = 90_000) {
  const r = spawnSync('bash', [CLUSTER, ...args], { encoding: 'utf8', timeout, cwd: ROOT, env: { ...process.env, MOECAT_CLUSTER_NODES: String(W) } });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

const hashOf = (text: string) => [...text.matchAll(/param_hash ([0-9a-f]{64})/g)].map((m) => m[1]).pop() ?? '';

describe('parallel.shard: full: a config over the per-process limit trains on 4 hosts', function () {
  this.timeout(600_000);
  const reason = skipReason();
  let dir = '';
  let work = '';
  let limit = 0;

  before(function () {
    if (reason) {
      console.log(`      skipped: ${reason}`);
      this.skip();
    }
    const cfg = loadTrainConfig('configs/tiny.yaml', SETS).config;
    const layout = flatLayout(paramSpecs(cfg.model));
    // Between what `full` needs on 4 ranks and what `none` needs on one: only `full` fits.
    limit = Math.floor((estimateStateBytes(layout, 'none', 1, 4).total + estimateStateBytes(layout, 'full', W, 4).total) / 2);
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-hosts-work-'));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-hosts-'));
    const up = cluster(['up', dir, '600']);
    assert.equal(up.status, 0, up.out);
  });

  after(() => {
    if (dir && fs.existsSync(path.join(dir, 'tag'))) {
      const down = cluster(['down', dir]);
      assert.equal(down.status, 0, down.out);
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('shard: none under the limit is refused on a host (one line, exit 2, nothing written); shard: full on 4 hosts gives the unlimited single-process param_hash', async () => {
    const env = [`PATH=${process.env.PATH}`, `MOECAT_BACKEND=${BACKEND}`];
    const limitSet = ['--set', `parallel.maxStateBytes=${limit}`];
    const refusedOut = path.join(work, 'none');
    const refused = cluster(['exec', dir, '1', 'env', '-i', ...env, process.execPath, CLI, 'train', ...TRAIN_ARGS, ...limitSet, '--out', refusedOut], 120_000);
    assert.equal(refused.status, 2, refused.out);
    const errors = refused.out.split('\n').filter((l) => l.startsWith('error:'));
    assert.equal(errors.length, 1, refused.out);
    assert.match(errors[0], /^error: parallel\.maxStateBytes: one rank would hold .* under parallel\.shard: none on 1 rank, over the limit .*\(use parallel\.shard: full on more ranks/);
    assert.ok(!fs.existsSync(refusedOut), 'the refused run wrote a directory');

    const one = spawnSync(process.execPath, [CLI, 'train', ...TRAIN_ARGS, '--out', path.join(work, 'single')], { cwd: ROOT, encoding: 'utf8', timeout: 240_000, env: { ...process.env, MOECAT_BACKEND: BACKEND } });
    assert.equal(one.status, 0, one.stderr);
    const reference = hashOf(one.stdout + one.stderr);
    assert.match(reference, /^[0-9a-f]{64}$/);

    const procs: ChildProcess[] = [];
    const outs = new Array<string>(W).fill('');
    const mem = path.join(work, 'mem');
    const codes = await Promise.all(
      Array.from({ length: W }, (_, rank) => {
        const vars = [...env, 'MOECAT_SECRET=hosts-test-secret', `RANK=${rank}`, `WORLD_SIZE=${W}`, 'MASTER_ADDR=node1', 'MASTER_PORT=29631'];
        const args = ['train', ...TRAIN_ARGS, ...limitSet, '--set', 'parallel.shard=full', '--out', path.join(work, 'full'), '--memory-report', mem];
        const p = spawn('bash', [CLUSTER, 'exec', dir, String(rank + 1), 'env', '-i', ...vars, process.execPath, CLI, ...args], { cwd: ROOT });
        procs.push(p);
        p.stdout!.on('data', (d: Buffer) => (outs[rank] += d));
        p.stderr!.on('data', (d: Buffer) => (outs[rank] += d));
        return new Promise<number | null>((res) => p.once('exit', (c) => res(c)));
      }).map((p) => Promise.race([p, sleep(240_000).then(() => 'timeout' as const)])),
    );
    for (const p of procs) p.kill('SIGKILL');
    assert.deepEqual(codes, new Array(W).fill(0), outs.join('\n----\n'));
    for (let r = 1; r < W; r++) assert.match(outs[0], new RegExp(`rank ${r} joined from 10\\.78\\.0\\.${r + 1}:`), outs[0]);
    for (const o of outs) assert.equal(hashOf(o), reference, o);
    const n = flatLayout(paramSpecs(loadTrainConfig('configs/tiny.yaml', SETS).config.model)).total;
    for (let r = 0; r < W; r++) {
      const rep = JSON.parse(fs.readFileSync(`${mem}.rank${r}.json`, 'utf8')) as Record<string, number | string>;
      assert.equal(rep.shard, 'full');
      assert.ok(Math.abs((rep.params_bytes as number) - (4 * n) / W) <= 4, JSON.stringify(rep));
      assert.equal(rep.optimizer_bytes, 2 * (rep.params_bytes as number));
      console.log(`      rank ${r}: ${JSON.stringify(rep)}`);
    }
  });
});

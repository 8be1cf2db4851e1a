/**
 * moecat on a real scheduler: a two-node Slurm cluster in network namespaces on this machine
 * (scripts/cluster/test-cluster.sh), the project's sbatch file as shipped, a lost node that Slurm
 * requeues, and torchrun-style variables on the same two hosts. Every run must end on the
 * param_hash of one process training the same config. Needs root and slurm-wlm + munge; skips
 * with the reason otherwise (CI installs them and runs as root).
 */
import { strict as assert } from 'assert';
import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { setTimeout as sleep } from 'timers/promises';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const CLUSTER = path.join(ROOT, 'scripts', 'cluster', 'test-cluster.sh');
const SBATCH = path.join(ROOT, 'scripts', 'cluster', 'moecat.sbatch');
const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');
const BACKEND = process.env.MOECAT_TEST_BACKEND ?? 'wasm';
const STEPS = 24;
const SETS = ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=4', `train.steps=${STEPS}`, 'train.checkpointEvery=3', 'optim.schedule={warmupSteps: 1, decaySteps: 2}'];
const TRAIN_ARGS = ['--config', 'configs/tiny.yaml', ...SETS.flatMap((s) => ['--set', s])];
const SECRET = 'cluster-test-secret';
/** The cluster's own watchdog tears it down after this long even if this process dies. */
const CLUSTER_LIFETIME_S = 900;

function skipReason(): string {
  if (process.platform !== 'linux') return 'Slurm cluster test: Linux only';
  if (process.getuid?.() !== 0) return 'Slurm cluster test: needs root (network namespaces, slurmd)';
  for (const tool of ['slurmctld', 'slurmd', 'munged', 'sbatch', 'srun', 'scontrol', 'ip', 'nsenter', 'unshare']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `Slurm cluster test: ${tool} not found (apt-get install slurm-wlm munge iproute2 util-linux)`;
  }
  return '';
}

function cluster(args: string[], timeout = 60_000) {
  const r = spawnSync('bash', [CLUSTER, ...args], { encoding: 'utf8', timeout, cwd: ROOT });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

function hashes(text: string): string[] {
  return [...text.matchAll(/param_hash ([0-9a-f]{64})/g)].map((m) => m[1]);
}

interface JobView {
  state: string;
  restarts: number;
  nodes: string;
  reason: string;
  raw: string;
}

describe('Slurm: a two-node cluster in network namespaces', function () {
  this.timeout(600_000);
  const reason = skipReason();
  let dir = '';
  let work = '';
  let reference = '';

  const ctl = (args: string[], timeout = 30_000) => cluster(['ctl', dir, ...args], timeout);
  function job(id: string): JobView {
    const r = ctl(['scontrol', 'show', 'job', id]);
    assert.equal(r.status, 0, r.out);
    const f = (k: string) => new RegExp(`\\b${k}=(\\S*)`).exec(r.out)?.[1] ?? '';
    return { state: f('JobState'), restarts: Number(f('Restarts')), nodes: f('NodeList'), reason: f('Reason'), raw: r.out };
  }
  const stamp = () => new Date().toISOString().slice(11, 19);
  /** Polls `scontrol show job` until `ok`, appending each new state line to `seen` (the evidence). */
  async function until(id: string, what: string, ok: (j: JobView) => boolean, ms: number, seen: string[]): Promise<JobView> {
    const end = Date.now() + ms;
    for (;;) {
      const j = job(id);
      const line = `JobState=${j.state} Restarts=${j.restarts} NodeList=${j.nodes} Reason=${j.reason}`;
      const last = [...seen].reverse().find((l) => l.includes('JobState='));
      if (!last?.endsWith(line)) seen.push(`${stamp()} ${line}`);
      if (ok(j)) return j;
      if (Date.now() > end) assert.fail(`job ${id}: no ${what} within ${ms / 1000} s; scontrol history:\n${seen.join('\n')}\n${j.raw}`);
      await sleep(250);
    }
  }
  function sbatch(name: string, extra: string[] = [], timeout = 30_000) {
    // The sbatch file as shipped; the train arguments after its name replace its default config.
    const r = ctl(
      ['env', `MOECAT_SECRET=${SECRET}`, `MOECAT_BACKEND=${BACKEND}`, 'sbatch', '--parsable', '--nodes=2', `--job-name=${name}`, `--chdir=${ROOT}`,
        `--output=${path.join(work, `${name}-%j.out`)}`, '--open-mode=append', ...extra, SBATCH, ...TRAIN_ARGS, '--out', path.join(work, name)],
      timeout,
    );
    return { ...r, id: /^(\d+)/m.exec(r.out)?.[1] ?? '' };
  }
  const output = (name: string, id: string) => fs.readFileSync(path.join(work, `${name}-${id}.out`), 'utf8');

  /** A second cluster beside the main one (its own namespaces), and a check that it is all gone. */
  function throwaway(lifetime: number) {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-slurm-'));
    const up = cluster(['up', d, String(lifetime)]);
    assert.equal(up.status, 0, up.out);
    const tag = fs.readFileSync(path.join(d, 'tag'), 'utf8').trim();
    const files = ['slurmctld.pid', 'slurmd-node1.pid', 'slurmd-node2.pid', 'munged.pid', 'watchdog.pid'];
    const pids = files.map((f) => fs.readFileSync(path.join(d, f), 'utf8').trim());
    const running = (pid: string) => fs.existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    assert.ok(pids.every(running), 'the daemons run');
    return {
      dir: d,
      assertGone() {
        assert.ok(!fs.existsSync(d), `${d} is removed`);
        assert.ok(!spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.includes(`${tag}-`), 'its namespaces are deleted');
        // The teardown's last step removes the directory; give the exiting processes a moment.
        const end = Date.now() + 5000;
        while (pids.some(running) && Date.now() < end) spawnSync('sleep', ['0.1']);
        assert.deepEqual(files.filter((_, i) => running(pids[i])), [], 'its daemons and watchdog are gone');
      },
    };
  }

  before(function () {
    if (reason) {
      console.log(`      skipped: ${reason}`);
      this.skip();
    }
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-slurm-work-'));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-slurm-'));
    const up = cluster(['up', dir, String(CLUSTER_LIFETIME_S)]);
    assert.equal(up.status, 0, up.out);
    const one = spawnSync(process.execPath, [CLI, 'train', ...TRAIN_ARGS, '--out', path.join(work, 'single')], {
      cwd: ROOT, encoding: 'utf8', timeout: 240_000, env: { ...process.env, MOECAT_BACKEND: BACKEND },
    });
    assert.equal(one.status, 0, one.stderr);
    reference = hashes(one.stdout + one.stderr).pop() ?? '';
    assert.match(reference, /^[0-9a-f]{64}$/);
  });

  after(() => {
    if (dir && fs.existsSync(path.join(dir, 'tag'))) {
      const down = cluster(['down', dir]);
      assert.equal(down.status, 0, down.out);
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('the cluster has two idle nodes at their own addresses; down and the watchdog leave nothing behind', () => {
    const nodes = ctl(['scontrol', 'show', 'nodes']);
    assert.equal(nodes.status, 0, nodes.out);
    assert.match(nodes.out, /NodeName=node1 [\s\S]*NodeAddr=10\.78\.0\.1 [\s\S]*NodeName=node2 [\s\S]*NodeAddr=10\.78\.0\.2 /);
    assert.equal((nodes.out.match(/State=IDLE/g) ?? []).length, 2, nodes.out);
    const tag = fs.readFileSync(path.join(dir, 'tag'), 'utf8').trim();
    const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    assert.deepEqual(ns.split('\n').filter((l) => l.startsWith(`${tag}-`)).map((l) => l.split(' ')[0]).sort(), [`${tag}-ctl`, `${tag}-node1`, `${tag}-node2`]);
    // Two throwaway clusters: one taken down by `down`, one by its watchdog; nothing of either remains.
    const a = throwaway(60);
    const down = cluster(['down', a.dir]);
    assert.equal(down.status, 0, down.out);
    a.assertGone();
    const b = throwaway(3);
    const end = Date.now() + 20_000;
    while (fs.existsSync(b.dir) && Date.now() < end) spawnSync('sleep', ['0.2']);
    b.assertGone();
  });

  it('sbatch --nodes=2 runs moecat.sbatch as shipped on tiny and ends on the single-process param_hash', async () => {
    const r = sbatch('dp2');
    assert.equal(r.status, 0, r.out);
    const j = await until(r.id, 'end', (v) => ['COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL'].includes(v.state), 180_000, []);
    const out = output('dp2', r.id);
    assert.equal(j.state, 'COMPLETED', `${j.raw}\n${out}`);
    assert.equal(j.nodes, 'node[1-2]', j.raw);
    // Both ranks found each other from the Slurm variables alone, rank 1 from the other host.
    assert.match(out, /rank 0\/2: joining node1:29500 \(slurm\)/);
    assert.match(out, /rank 1\/2: joining node1:29500 \(slurm\)/);
    assert.match(out, /rank 1 joined from 10\.78\.0\.2:/);
    const h = hashes(out);
    assert.ok(h.length >= 1, out);
    for (const x of h) assert.equal(x, reference, out);
  });

  it('a lost node: the survivor fails clearly, Slurm requeues, --auto-resume ends on the same param_hash', async () => {
    const history: string[] = [];
    const r = sbatch('lost');
    assert.equal(r.status, 0, r.out);
    const run = path.join(work, 'lost');
    await until(r.id, 'RUNNING', (j) => j.state === 'RUNNING' && j.nodes === 'node[1-2]', 60_000, history);
    // Lose node 2 (rank 1's host) once step 6's checkpoint exists and training is past it.
    const end = Date.now() + 120_000;
    const steps = () => (fs.existsSync(path.join(run, 'metrics.jsonl')) ? fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean).length : 0);
    while (!(fs.existsSync(path.join(run, 'checkpoints', 'step-00000006')) && steps() >= 7)) {
      if (Date.now() > end) assert.fail(`training did not reach step 7:\n${output('lost', r.id)}`);
      await sleep(100);
    }
    const killedAt = steps();
    assert.ok(killedAt < STEPS, `the run ended (${killedAt} steps) before the node could be lost`);
    const kill = cluster(['kill-node', dir, '2']);
    assert.equal(kill.status, 0, kill.out);
    history.push(`${stamp()} node2 lost at step ${killedAt}`);
    // Slurm notices the node is gone, ends the allocation with NODE_FAIL and requeues the job.
    await until(r.id, 'requeue', (j) => j.restarts >= 1 && j.state === 'PENDING', 120_000, history);
    const start = cluster(['start-node', dir, '2']);
    assert.equal(start.status, 0, start.out);
    history.push(`${stamp()} node2 back`);
    const done = await until(r.id, 'end', (j) => ['COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT'].includes(j.state), 180_000, history);
    console.log(`      scontrol show job ${r.id} history:\n${history.map((l) => `        ${l}`).join('\n')}`);
    const out = output('lost', r.id);
    assert.equal(done.state, 'COMPLETED', `${done.raw}\n${out}`);
    assert.equal(done.restarts, 1, done.raw);
    assert.match(done.raw, /Requeue=1/);
    // The states Slurm went through, in order.
    const states = history.map((l) => /JobState=(\S+) Restarts=(\d+)/.exec(l)).filter(Boolean).map((m) => `${m![1]}/${m![2]}`);
    const order = ['RUNNING/0', 'PENDING/1', 'RUNNING/1', 'COMPLETED/1'].map((s) => states.indexOf(s));
    assert.ok(order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1])), `scontrol history out of order:\n${history.join('\n')}`);
    // The survivor's clear error, then Slurm's node failure, then the resumed run.
    const lost = out.search(/error: rank 1 lost: /);
    const nodeFail = out.search(/CANCELLED AT \S+ DUE TO NODE FAILURE/);
    const resumed = /resumed from (\S*step-(\d+))/.exec(out);
    assert.ok(lost >= 0 && nodeFail > lost, `no clear error from the survivor before the node failure:\n${out}`);
    assert.ok(resumed && resumed.index > nodeFail, `the requeued job did not resume:\n${out}`);
    assert.ok(Number(resumed[2]) >= 6 && Number(resumed[2]) < STEPS, `resumed from ${resumed[1]}`);
    const after = hashes(out.slice(resumed.index));
    assert.ok(after.length >= 1, out);
    for (const x of after) assert.equal(x, reference, out);
    assert.match(out.slice(lost, nodeFail), /task 0: Exited with exit code 2/, 'the survivor exits with status 2');
    const log = fs.readFileSync(path.join(dir, 'slurmctld.log'), 'utf8');
    const events = log.split('\n').filter((l) => new RegExp(`JobId=${r.id}\\b.*(requeu|NODE_FAIL|node_fail)|node2.*(not responding|DOWN|returned to service)|[Rr]equeu\\w* JobId=${r.id}\\b`, 'i').test(l));
    console.log(`      slurmctld.log:\n${events.map((l) => `        ${l}`).join('\n')}`);
    assert.ok(events.some((l) => new RegExp(`[Rr]equeu\\w* JobId=${r.id}\\b`).test(l)), `slurmctld logged no requeue of job ${r.id}:\n${log.slice(-3000)}`);
  });

  it('torchrun-style RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT alone launch the ranks on the two hosts', async () => {
    const procs: ChildProcess[] = [];
    const outs = ['', ''];
    const codes = await Promise.all(
      [0, 1].map((rank) => {
        // env -i: no Slurm variable reaches the rank; only what torchrun would set.
        const vars = [`PATH=${process.env.PATH}`, `MOECAT_BACKEND=${BACKEND}`, `MOECAT_SECRET=${SECRET}`, `RANK=${rank}`, 'WORLD_SIZE=2', 'MASTER_ADDR=node1', 'MASTER_PORT=29611'];
        const p = spawn('bash', [CLUSTER, 'exec', dir, String(rank + 1), 'env', '-i', ...vars, process.execPath, CLI, 'train', ...TRAIN_ARGS, '--out', path.join(work, 'torchrun')], { cwd: ROOT });
        procs.push(p);
        p.stdout!.on('data', (d: Buffer) => (outs[rank] += d));
        p.stderr!.on('data', (d: Buffer) => (outs[rank] += d));
        return new Promise<number | null>((res) => p.once('exit', (c) => res(c)));
      }).map((p) => Promise.race([p, sleep(180_000).then(() => 'timeout' as const)])),
    );
    for (const p of procs) p.kill('SIGKILL');
    assert.deepEqual(codes, [0, 0], outs.join('\n----\n'));
    assert.match(outs[0], /rank 0\/2: joining node1:29611 \(torchrun\)/);
    assert.match(outs[1], /rank 1\/2: joining node1:29611 \(torchrun\)/);
    assert.match(outs[0], /rank 1 joined from 10\.78\.0\.2:/);
    for (const o of outs) assert.equal(hashes(o).pop(), reference, o);
  });
});

describe('scripts/cluster/test-cluster.sh: bad input', () => {
  it('refuses an unknown command, a directory without a cluster and a bad node number, one line each, exit 2', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-slurm-bad-'));
    try {
      const cases: [string[], RegExp][] = [
        [['start'], /^error: test-cluster\.sh: usage: test-cluster\.sh run\|up\|ctl\|exec\|kill-node\|start-node\|down/],
        [['ctl', tmp, 'sinfo'], /^error: test-cluster\.sh: .*: not a cluster directory \(no tag file; start one with: test-cluster\.sh up DIR\)$/],
        [['down', path.join(tmp, 'nope')], /^error: test-cluster\.sh: .*nope: no such cluster directory/],
        [['kill-node', tmp], /^error: test-cluster\.sh: usage: test-cluster\.sh kill-node DIR K$/],
      ];
      for (const [args, want] of cases) {
        const r = cluster(args);
        assert.equal(r.status, 2, `${args.join(' ')}: ${r.out}`);
        assert.equal(r.out.trim().split('\n').length, 1, r.out);
        assert.match(r.out.trim(), want);
      }
      fs.writeFileSync(path.join(tmp, 'tag'), 'mcs0');
      const r = cluster(['kill-node', tmp, '3']);
      assert.equal(r.status, 2, r.out);
      assert.match(r.out, /^error: test-cluster\.sh: node 3: no such node \(1\.\.2\)$/m);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

/**
 * A run that needs `parallel.shard: full` (issue: train models larger than one process): under a
 * per-process training-state limit (`parallel.maxStateBytes`, checked at start-up), the config
 * is refused with `shard: none` on one host and trains with `shard: full` on 4 ranks, each on its
 * own host — one network namespace per rank with its own address (scripts/netns/run.sh, bounded,
 * removes everything it made) — to the param_hash of one process running the same config with
 * the limit lifted. Each rank's memory report shows it held a quarter of the weights, reduced
 * gradient and Adam moments. Needs root and iproute2; skips with the reason otherwise.
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

const ROOT = path.resolve(__dirname, '..', '..', '..');
const NETNS = path.join(ROOT, 'scripts', 'netns', 'run.sh');
const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');
const ENV = { ...process.env, MOECAT_BACKEND: process.env.MOECAT_TEST_BACKEND ?? 'wasm' };
const W = 4;
const SETS = ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=4', 'train.steps=4', 'train.checkpointEvery=2', 'optim.schedule={warmupSteps: 1, decaySteps: 2}'];
const TRAIN_ARGS = ['--config', 'configs/tiny.yaml', ...SETS.flatMap((s) => ['--set', s])];

function skipReason(): string {
  if (process.platform !== 'linux') return 'hosts test: Linux only';
  if (process.getuid?.() !== 0) return 'hosts test: needs root (network namespaces)';
  if (spawnSync('sh', ['-c', 'command -v ip']).status !== 0) return 'hosts test: ip not found (apt-get install iproute2)';
  return '';
}

/** `scripts/netns/run.sh -n N -- ARGS`: N ranks, one per namespace, bounded in time. */
function hosts(n: number, port: number, args: string[]) {
  const r = spawnSync('bash', [NETNS, '-n', String(n), '-t', '240', '-p', String(port), '--', ...args], { cwd: ROOT, env: ENV, encoding: 'utf8', timeout: 300_000 });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

const hashesOf = (text: string) => [...text.matchAll(/param_hash ([0-9a-f]{64})/g)].map((m) => m[1]);

describe('parallel.shard: full: a config over the per-process limit trains on 4 hosts', function () {
  this.timeout(600_000);
  const reason = skipReason();
  let work = '';

  before(function () {
    if (reason) {
      console.log(`      skipped: ${reason}`);
      this.skip();
    }
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-hosts-'));
  });

  after(() => {
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('shard: none under the limit is refused on a host (one line, exit 2, nothing written); shard: full on 4 hosts gives the unlimited single-process param_hash', () => {
    const layout = flatLayout(paramSpecs(loadTrainConfig('configs/tiny.yaml', SETS).config.model));
    // Between what `full` needs on 4 ranks and what `none` needs on one: only `full` fits.
    const limit = Math.floor((estimateStateBytes(layout, 'none', 1, 4).total + estimateStateBytes(layout, 'full', W, 4).total) / 2);
    const limitSet = ['--set', `parallel.maxStateBytes=${limit}`];

    const refusedOut = path.join(work, 'none');
    const refused = hosts(1, 29631, ['train', ...TRAIN_ARGS, ...limitSet, '--out', refusedOut]);
    assert.equal(refused.status, 2, refused.out);
    const errors = refused.out.split('\n').filter((l) => l.includes('error:'));
    assert.equal(errors.length, 1, refused.out);
    assert.match(errors[0], /^\[host 0\] error: parallel\.maxStateBytes: one rank would hold .* under parallel\.shard: none on 1 rank, over the limit .*\(use parallel\.shard: full on more ranks/);
    assert.ok(!fs.existsSync(refusedOut), 'the refused run wrote a directory');

    const one = spawnSync(process.execPath, [CLI, 'train', ...TRAIN_ARGS, '--out', path.join(work, 'single')], { cwd: ROOT, encoding: 'utf8', timeout: 240_000, env: ENV });
    assert.equal(one.status, 0, one.stderr);
    const reference = hashesOf(one.stdout + one.stderr).pop();
    assert.match(reference ?? '', /^[0-9a-f]{64}$/);

    const mem = path.join(work, 'mem');
    const full = hosts(W, 29632, ['train', ...TRAIN_ARGS, ...limitSet, '--set', 'parallel.shard=full', '--out', path.join(work, 'full'), '--memory-report', mem]);
    assert.equal(full.status, 0, full.out);
    for (let r = 1; r < W; r++) assert.match(full.out, new RegExp(`\\[host 0\\] .*rank ${r} joined from 10\\.77\\.0\\.${r + 1}:`), full.out);
    const lastHashes = Array.from({ length: W }, (_, r) => hashesOf(full.out.split('\n').filter((l) => l.startsWith(`[host ${r}] `)).join('\n')).pop());
    assert.deepEqual(lastHashes, new Array(W).fill(reference), full.out);
    const n = layout.total;
    for (let r = 0; r < W; r++) {
      const rep = JSON.parse(fs.readFileSync(`${mem}.rank${r}.json`, 'utf8')) as Record<string, number | string>;
      assert.equal(rep.shard, 'full');
      assert.ok(Math.abs((rep.params_bytes as number) - (4 * n) / W) <= 4, JSON.stringify(rep));
      assert.equal(rep.reduced_grad_bytes, rep.params_bytes);
      assert.equal(rep.optimizer_bytes, 2 * (rep.params_bytes as number));
      console.log(`      rank ${r}: ${JSON.stringify(rep)}`);
    }
  });
});

/**
 * Sharded experts under expert parallelism, over real processes and sockets: each rank holds
 * only its own experts' weights, gradients and Adam moments (bytes per rank from the memory
 * report), the training hash is the one of the replicated layout (--no-ep-shard-experts), a
 * resume into the same EP layout continues bitwise, and the checkpoint rank 0 gathers holds
 * every expert: the single-process run's bytes, read by audit and export.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadTrainConfig } from '../../trainer/config';
import { flatLayout } from '../../model/flatParams';
import { numel, paramSpecs } from '../../model/params';

const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');
const ENV = { ...process.env, MOECAT_BACKEND: process.env.MOECAT_TEST_BACKEND ?? 'wasm' };
const base = (M: number, steps: number) => ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', `data.microBatches=${M}`, `train.steps=${steps}`, `train.checkpointEvery=2`, 'optim.clipNorm=0.05', 'optim.schedule={warmupSteps: 1, decaySteps: 1}'];
const setArgs = (sets: string[]) => sets.flatMap((s) => ['--set', s]);

function moecat(args: string[], W = 1): string {
  const argv = W > 1 ? ['launch', '--nproc', String(W), '--', ...args] : args;
  const r = spawnSync(process.execPath, [CLI, ...argv], { env: ENV, encoding: 'utf8', timeout: 240000 });
  const out = `${r.stdout}\n${r.stderr}`;
  assert.equal(r.status, 0, out.slice(-3000));
  return out;
}

function hashOf(out: string): string {
  const all = [...out.matchAll(/param_hash ([0-9a-f]{64})/g)].map((m) => m[1]);
  assert.ok(all.length > 0, `no param_hash in output:\n${out.slice(-3000)}`);
  assert.ok(all.every((h) => h === all[0]), `ranks print different hashes: ${all.join(' ')}`);
  return all[0];
}

interface Report { params_bytes: number; grad_buffer_bytes: number; reduced_grad_bytes: number; optimizer_bytes: number; experts_sharded: boolean }
const reports = (mem: string, W: number) => Array.from({ length: W }, (_, r) => JSON.parse(fs.readFileSync(`${mem}.rank${r}.json`, 'utf8')) as Report);

describe('sharded experts under expert parallelism over sockets', function () {
  this.timeout(600000);
  let tmp: string;
  before(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-epshard-'))));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('W = 2, M = 4: the replicated layout\'s param_hash; each rank holds the replicated parameters and half of the experts', () => {
    // Recompute checks and the router-gradient ratio run the sharded step twice and the EP MoE in extra passes.
    const sets = setArgs([...base(4, 3), 'stability.recomputeEvery=2', 'stability.routerRatioEvery=2']);
    const run = (name: string, flags: string[]) => {
      const mem = path.join(tmp, `mem-${name}`);
      const out = moecat(['train', '--config', 'configs/tiny.yaml', '--out', path.join(tmp, name), '--expert-parallel', ...flags, ...sets, '--memory-report', mem], 2);
      return { hash: hashOf(out), reports: reports(mem, 2) };
    };
    const sharded = run('sharded', []);
    const replicated = run('replicated', ['--no-ep-shard-experts']);
    assert.equal(sharded.hash, replicated.hash);
    const model = loadTrainConfig('configs/tiny.yaml', ['data.synthetic={}']).config.model;
    const specs = paramSpecs(model);
    const total = flatLayout(specs).total;
    const experts = specs.filter((s) => s.expert).reduce((n, s) => n + numel(s.shape), 0);
    const held = total - experts + experts / 2;
    for (const r of replicated.reports) assert.deepEqual([r.experts_sharded, r.params_bytes, r.optimizer_bytes, r.reduced_grad_bytes], [false, 4 * total, 8 * total, 4 * total]);
    for (const r of sharded.reports) {
      assert.deepEqual([r.experts_sharded, r.params_bytes, r.optimizer_bytes, r.reduced_grad_bytes], [true, 4 * held, 8 * held, 4 * held]);
      assert.equal(r.grad_buffer_bytes % (4 * held), 0, 'gradient buffers of another size than the held vector');
    }
  });

  it('a resume into the same EP layout continues bitwise; the gathered checkpoint is the single-process one, read by audit and export', () => {
    const sets = setArgs(base(2, 4));
    const one = path.join(tmp, 'one');
    const ref = hashOf(moecat(['train', '--config', 'configs/tiny.yaml', '--out', one, ...sets]));
    const ep = path.join(tmp, 'ep');
    moecat(['train', '--config', 'configs/tiny.yaml', '--out', ep, '--expert-parallel', ...sets, '--max-steps', '2'], 2);
    const end = moecat(['train', '--resume', ep, '--expert-parallel'], 2);
    assert.match(end, /resumed from .*step-00000002/);
    assert.equal(hashOf(end), ref);
    for (const step of ['step-00000002', 'step-00000004']) {
      for (const f of ['model.safetensors', 'optimizer.safetensors']) {
        assert.ok(fs.readFileSync(path.join(ep, 'checkpoints', step, f)).equals(fs.readFileSync(path.join(one, 'checkpoints', step, f))), `${step}/${f} differs from the single-process run's`);
      }
    }
    assert.match(moecat(['audit', ep, '--from', '3']), /OK: steps 3\.\.4 identical/);
    moecat(['export', '--checkpoint', ep, '--out', path.join(tmp, 'ep-hf')]);
    assert.ok(fs.existsSync(path.join(tmp, 'ep-hf', 'config.json')));
  });
});

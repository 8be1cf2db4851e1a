/**
 * The determinism contract of the cpu-native backend (issue 22): the same config and seed give
 * the same weights on every x86-64 and arm64 machine, under every GEMM variant and any thread
 * count. Training tiny under each forced variant and thread count gives one param_hash; golden
 * hashes committed here catch any drift on a machine with another CPU (a CI runner); and
 * `moecat audit` of a run recorded under one variant and thread count passes under another.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { selectBackend } from '../../core/backend';
import { GemmIsa, loadNativeKernels, nativeKernelNames, unloadNativeKernels } from '../../core/native';
import { loadTrainConfig, TrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer } from '../../trainer/trainer';
import { useTestBackend } from '../helpers/backend';

const probe = loadNativeKernels({ register: false });
const skipReason = probe.loaded ? '' : probe.reason ?? 'addon not loaded';
const supported: GemmIsa[] = probe.gemm?.supported ?? [];

/**
 * param_hash of configs/tiny.yaml after 20 steps and configs/small.yaml after 3, on synthetic
 * data, on cpu-native. Recorded with moecat's GEMM; any machine must reproduce them. If one
 * changes on purpose (a kernel's arithmetic changed), record the new value and say why.
 */
const GOLDEN = {
  tiny20: '1315e96e70e20dbb62c57125ec8e48637b4733e0cdb3246183ebaa71c77a77ae',
  small3: '44bf46728c9156ed766d57f045dba461c9b209db1b4f0ed7de8c916945eda70a',
};

function config(name: 'tiny' | 'small', extra: string[] = []): TrainConfig {
  return loadTrainConfig(`configs/${name}.yaml`, ['data.synthetic={}', 'train.steps=1000', ...extra]).config;
}

async function train(cfg: TrainConfig, steps: number): Promise<{ hash: string; fingerprints: string[] }> {
  const t = new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen));
  const fingerprints: string[] = [];
  for (let i = 0; i < steps; i++) {
    const r = await t.step();
    if (r.kind !== 'step') throw new Error(`unexpected spike: ${r.event.reason}`);
    fingerprints.push(r.metrics.fingerprint);
  }
  const hash = t.paramHash();
  t.dispose();
  return { hash, fingerprints };
}

describe(`cpu-native determinism across GEMM variants and thread counts (this CPU runs: ${supported.join(', ') || 'none'})`, function () {
  this.timeout(900000);
  let hadNative = false;

  before(async function () {
    if (skipReason) this.skip();
    hadNative = nativeKernelNames().length > 0;
    await selectBackend('cpu');
  });

  after(async () => {
    if (skipReason) return;
    if (hadNative) loadNativeKernels();
    else unloadNativeKernels();
    await useTestBackend();
  });

  it('training tiny under every variant with 1 and 2 threads gives one param_hash and the same fingerprints', async () => {
    const cfg = config('tiny', ['data.seqLen=32', 'data.microBatchSize=2', 'data.microBatches=2', 'optim.schedule={type: wsd, warmupSteps: 2, decaySteps: 2}']);
    let first: { hash: string; fingerprints: string[]; label: string } | null = null;
    for (const isa of supported) {
      for (const threads of [1, 2]) {
        assert.ok(loadNativeKernels({ isa, threads }).loaded);
        const r = await train(cfg, 4);
        const label = `${isa}, ${threads} thread(s)`;
        if (!first) first = { ...r, label };
        else {
          assert.equal(r.hash, first.hash, `${label} vs ${first.label}`);
          assert.deepEqual(r.fingerprints, first.fingerprints, `${label} vs ${first.label}`);
        }
      }
    }
  });

  it('golden: configs/tiny.yaml after 20 steps has the committed param_hash', async () => {
    loadNativeKernels();
    const { hash } = await train(config('tiny'), 20);
    assert.equal(hash, GOLDEN.tiny20, 'tiny after 20 steps drifted from the committed hash');
  });

  it('golden: configs/small.yaml after 3 steps has the committed param_hash', async () => {
    loadNativeKernels();
    const { hash } = await train(config('small'), 3);
    assert.equal(hash, GOLDEN.small3, 'small after 3 steps drifted from the committed hash');
  });

  it('moecat audit of a run recorded under one variant and thread count passes under another', function () {
    const from = supported.includes('avx2') ? 'avx2' : 'scalar';
    const to = supported.find((i) => i !== from) ?? from;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-isa-audit-'));
    try {
      const main = path.join(__dirname, '..', '..', 'cli', 'main.js');
      const env = (isa: string, threads: string) => ({ ...process.env, MOECAT_BACKEND: 'cpu-native', MOECAT_ISA: isa, MOECAT_THREADS: threads });
      const sets = ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'train.steps=6', 'train.checkpointEvery=3', 'train.paramHashEvery=2', 'optim.schedule={type: wsd, warmupSteps: 2, decaySteps: 2}'];
      const run = path.join(dir, 'run');
      const t = spawnSync(process.execPath, [main, 'train', '--config', 'configs/tiny.yaml', '--out', run, ...sets.flatMap((s) => ['--set', s])], { encoding: 'utf8', env: env(from, '1'), timeout: 300000 });
      assert.equal(t.status, 0, t.stderr);
      assert.match(t.stderr, new RegExp(`moecat GEMM ${from}, 1 thread,`));
      const a = spawnSync(process.execPath, [main, 'audit', run, '--threads', '2'], { encoding: 'utf8', env: env(to, '1'), timeout: 300000 });
      assert.equal(a.status, 0, `${a.stdout}\n${a.stderr}`);
      assert.match(a.stderr, new RegExp(`moecat GEMM ${to}, 2 threads`)); // --threads beats MOECAT_THREADS
      assert.match(a.stdout, /OK: steps 1\.\.6 identical/);
      const bad = spawnSync(process.execPath, [main, 'audit', run], { encoding: 'utf8', env: { ...env(to, '1'), MOECAT_ISA: 'avx9' }, timeout: 60000 });
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /^error: MOECAT_ISA: unknown GEMM variant 'avx9'/m);
      for (const threads of ['0', 'two']) {
        const r = spawnSync(process.execPath, [main, 'audit', run, '--threads', threads], { encoding: 'utf8', env: env(to, '1'), timeout: 60000 });
        assert.equal(r.status, 2, `--threads ${threads}: ${r.stderr}`);
        assert.match(r.stderr, /^error: --threads: .* is not a thread count/m);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * GPU-resident training on webgpu (issue 21 items 4 and 6): weights, gradients and Adam moments
 * stay on the device, so a data-parallel-free step reads back only scalars, routing ids and
 * the gradient's block partials; reruns, resume and in-process data parallel give one
 * param_hash; the stability suite (gradient norm and per-group RMS, eps check, router
 * similarity, R_g, hidden z-loss) agrees with cpu-native; a spike rolls back to the device-side
 * snapshot bit for bit.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../core/backend';
import { loadTrainConfig, TrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer, TrainerOptions } from '../../trainer/trainer';
import { runTraining } from '../../trainer/run';
import { StepMetrics } from '../../trainer/metrics';
import { syncReadStats } from '../../core/webgpu/syncRead';
import { programCounter } from '../../core/webgpu/trace';
import { sha256Hex } from '../../core/hash';
import { LocalGroup } from '../helpers/localGroup';
import { useTestBackend } from '../helpers/backend';
import { webgpuOrSkip } from './helpers';

const SETS = ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=4', 'train.steps=3', 'train.checkpointEvery=0', 'train.paramHashEvery=1000', 'optim.schedule={type: wsd, warmupSteps: 1, decaySteps: 2}'];

function tinyConfig(sets: string[] = []): TrainConfig {
  return loadTrainConfig('configs/tiny.yaml', [...SETS, ...sets]).config;
}

function trainer(cfg: TrainConfig, opts: TrainerOptions = {}): Trainer {
  return new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen), opts);
}

/** The stability-suite fields of a step's metrics. */
type SuiteMetrics = StepMetrics & { grad_rms_by_group: Record<string, number>; router_similarity: number[]; router_grad_ratio?: number[] };

async function steps(t: Trainer, n: number): Promise<SuiteMetrics[]> {
  const out: SuiteMetrics[] = [];
  for (let s = 0; s < n; s++) {
    const r = await t.step();
    if (r.kind !== 'step') throw new Error(`unexpected spike: ${r.event.reason}`);
    out.push(r.metrics as SuiteMetrics);
  }
  return out;
}

async function hashOf(cfg: TrainConfig, n: number, worldSize = 1): Promise<string> {
  const group = new LocalGroup(worldSize);
  const ts = Array.from({ length: worldSize }, (_, r) => trainer(cfg, { dp: group.member(r) }));
  try {
    for (let s = 0; s < n; s++) await Promise.all(ts.map((t) => t.step()));
    const hashes = ts.map((t) => t.paramHash());
    assert.ok(hashes.every((h) => h === hashes[0]), 'ranks hold different weights');
    return hashes[0];
  } finally {
    ts.forEach((t) => t.dispose());
  }
}

const momentsHash = (t: Trainer) => {
  const { m, v } = t.checkpointState().opt;
  return sha256Hex(Buffer.concat([Buffer.from(m.buffer, m.byteOffset, m.byteLength), Buffer.from(v.buffer, v.byteOffset, v.byteLength)]));
};

const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(1e-12, Math.abs(b));

describe('webgpu: GPU-resident training', function () {
  this.timeout(300000);
  let tmp: string;
  before(async function () {
    await webgpuOrSkip(this);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-resident-'));
  });
  after(async () => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    await useTestBackend();
  });

  it('a W=1 step reads back no gradient or weight copy (reads and bytes per step, host path vs resident)', async () => {
    const cfg = tinyConfig(['train.steps=100']);
    const measure = async (resident: boolean) => {
      const t = trainer(cfg, { resident });
      try {
        assert.equal(t.resident !== null, resident);
        await steps(t, 1);
        const r0 = { ...syncReadStats };
        const d0 = programCounter.dispatches;
        const tensors = tf.memory().numTensors;
        await steps(t, 1);
        assert.equal(tf.memory().numTensors, tensors, 'a step leaks tensors');
        return { reads: syncReadStats.reads - r0.reads, bytes: syncReadStats.bytes - r0.bytes, dispatches: programCounter.dispatches - d0, params: t.layout.total };
      } finally {
        t.dispose();
      }
    };
    const host = await measure(false);
    const dev = await measure(true);
    console.log(`      per step: host path ${host.reads} reads, ${host.bytes} bytes, ${host.dispatches} dispatches; resident ${dev.reads} reads, ${dev.bytes} bytes, ${dev.dispatches} dispatches (${host.params} parameters)`);
    const copy = host.params * 4;
    // The counter sees the host path's per-microbatch gradient reads, so it would see a copy here.
    assert.ok(host.bytes >= cfg.data.microBatches * copy, `host path read only ${host.bytes} bytes`);
    assert.ok(dev.bytes < copy / 8, `a resident step read ${dev.bytes} bytes back (one weight or gradient copy is ${copy})`);
    assert.ok(dev.reads > 0, 'no reads counted at all');
  });

  it('reruns, in-process data parallel W=2 and the resident default agree bit for bit', async () => {
    const cfg = tinyConfig();
    const a = await hashOf(cfg, 2);
    assert.equal(await hashOf(cfg, 2), a);
    assert.equal(await hashOf(cfg, 2, 2), a, 'W=2 (the gradient crosses the host) differs from W=1');
  });

  it('2 steps straight equal 1 step + checkpoint + resume to 2, and a run that recomputes step 2 (host snapshot + upload)', async () => {
    const two = ['train.steps=2', 'optim.schedule={type: wsd, warmupSteps: 1, decaySteps: 1}'];
    const run = async (outDir: string, maxSteps?: number, resume = false, sets: string[] = []) => {
      const { config, raw } = loadTrainConfig('configs/tiny.yaml', [...SETS, ...two, ...sets]);
      const r = await runTraining({ outDir, config: resume ? undefined : config, rawConfig: resume ? undefined : raw, resume, maxSteps, backend: 'webgpu' });
      assert.ok(r.trainer.resident, 'the run did not take the resident path');
      const h = `${r.trainer.paramHash()}/${momentsHash(r.trainer)}`;
      r.trainer.dispose();
      return h;
    };
    const straight = await run(path.join(tmp, 'straight'));
    await run(path.join(tmp, 'k1'), 1);
    assert.equal(await run(path.join(tmp, 'k1'), undefined, true), straight);
    // stability.recomputeEvery: snapshotState() reads the device state back, restoreState() uploads it.
    assert.equal(await run(path.join(tmp, 'recompute'), undefined, false, ['stability.recomputeEvery=2']), straight);
  });

  it('the resident path is refused, with a clear error, where it cannot run (sharded optimizer); the default then takes the host path', () => {
    const cfg = tinyConfig(['parallel.shard=optimizer']);
    assert.throws(() => trainer(cfg, { resident: true }), /GPU-resident training cannot run: it needs parallel.shard: none \(here: optimizer\)/);
    const t = trainer(cfg);
    assert.equal(t.resident, null);
    t.dispose();
  });

  it('the stability suite on the device agrees with cpu-native (losses 1e-4, grad norm, group RMS, eps warnings, router similarity, R_g, z-loss)', async () => {
    const cfg = tinyConfig(['train.zLossCoef=1e-4', 'stability.routerRatioEvery=1', 'stability.epsWarnFactor=1e20']);
    const run = async () => {
      const t = trainer(cfg);
      try {
        const ms = await steps(t, 2);
        return { ms, warnings: t.takeWarnings(), resident: t.resident !== null };
      } finally {
        t.dispose();
      }
    };
    let ref: Awaited<ReturnType<typeof run>>;
    try {
      // cpu-native where the addon is built, else the JS cpu backend (as agreement.spec.ts).
      await selectBackend('cpu-native').catch(() => selectBackend('cpu'));
      ref = await run();
    } finally {
      await selectBackend('webgpu');
    }
    const dev = await run();
    assert.ok(dev.resident && !ref.resident);
    assert.equal(dev.warnings.length, ref.warnings.length);
    assert.ok(dev.warnings.length >= 2 * Object.keys(ref.ms[0].grad_rms_by_group).length, 'the eps check did not warn for every group');
    dev.ms.forEach((m, s) => {
      const r = ref.ms[s];
      for (const k of ['loss', 'lm_loss', 'z_loss', 'balance_loss'] as const) assert.ok(rel(m[k], r[k]) < 1e-4, `step ${s + 1} ${k}: ${m[k]} vs ${r[k]}`);
      assert.ok(m.z_loss > 0);
      assert.ok(rel(m.grad_norm, r.grad_norm) < 1e-4, `step ${s + 1} grad_norm ${m.grad_norm} vs ${r.grad_norm}`);
      for (const [g, v] of Object.entries(r.grad_rms_by_group)) assert.ok(rel(m.grad_rms_by_group[g], v) < 1e-4, `step ${s + 1} ${g} rms`);
      m.router_similarity.forEach((x, l) => assert.ok(Math.abs(x - r.router_similarity[l]) < 1e-5, `step ${s + 1} layer ${l} similarity ${x} vs ${r.router_similarity[l]}`));
      m.router_grad_ratio!.forEach((x, l) => assert.ok(rel(x, r.router_grad_ratio![l]) < 1e-3, `step ${s + 1} layer ${l} R_g ${x} vs ${r.router_grad_ratio![l]}`));
    });
  });

  it('a loss spike rolls back to the device-side snapshot bit for bit (weights and moments)', async () => {
    const spike = ['stability.spike={enabled: true, minSteps: 2, window: 10, snapshotEvery: 2, gradFactor: 10}', 'train.injectGradScale=[{dataStep: 3, scale: 1000}]', 'train.steps=10'];
    const t = trainer(tinyConfig(spike));
    try {
      await steps(t, 2);
      const at2 = { params: t.paramHash(), moments: momentsHash(t) };
      await steps(t, 1);
      const at3 = t.paramHash();
      assert.notEqual(at3, at2.params);
      const r = await t.step();
      assert.equal(r.kind, 'spike', 'the injected gradient was not caught');
      assert.equal(r.kind === 'spike' && r.event.restored_to, 2);
      assert.equal(t.state.step, 2);
      assert.equal(t.paramHash(), at2.params);
      assert.equal(momentsHash(t), at2.moments);
      // The run replays data step 2 from the restored state (the same bits as the first time),
      // then skips the offending batch 3.
      const again = await steps(t, 1);
      assert.equal(again[0].data_step, 2);
      assert.equal(t.paramHash(), at3);
      assert.equal((await steps(t, 1))[0].data_step, 4);
    } finally {
      t.dispose();
    }
  });
});

/**
 * GPU-resident training on webgpu (`npm run bench -- resident`): per training step, the host
 * path (gradients read back after every microbatch, tree, norm and AdamW on the host, weights
 * uploaded again) against the resident path (trainer/deviceState.ts), in one process, steps
 * interleaved so that machine load hits both alike. Reports median step time, tokens/s, GPU
 * dispatches, synchronous reads and bytes read back per step. On a software Vulkan driver
 * (lavapipe) the times measure overhead, not GPU speed; the read counts hold on any adapter.
 * Usage: node dist/scripts/bench/resident.js [--configs tiny] [--steps 4]
 */
import { programCounter } from '../../core/webgpu/trace';
import { syncReadStats } from '../../core/webgpu/syncRead';
import { loadTrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer } from '../../trainer/trainer';
import { arg, median, emit } from './args';
import { selectWebgpuOrReport } from './webgpuAdapter';

interface Sample {
  ms: number;
  dispatches: number;
  reads: number;
  bytes: number;
}

async function timedStep(t: Trainer): Promise<Sample> {
  const r0 = { ...syncReadStats };
  const d0 = programCounter.dispatches;
  const t0 = process.hrtime.bigint();
  const r = await t.step();
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.kind !== 'step') throw new Error(`unexpected spike: ${r.event.reason}`);
  return { ms, dispatches: programCounter.dispatches - d0, reads: syncReadStats.reads - r0.reads, bytes: syncReadStats.bytes - r0.bytes };
}

async function main(): Promise<void> {
  if (!(await selectWebgpuOrReport())) return;
  const steps = Number(arg('steps', '4'));
  for (const name of arg('configs', 'tiny').split(',')) {
    // Synthetic data, else the config's own batch shape (tiny: 8 × 64 tokens × 2 microbatches).
    const cfg = loadTrainConfig(`configs/${name}.yaml`, ['data.synthetic={}', 'train.steps=1000', 'train.checkpointEvery=0', 'train.paramHashEvery=100000']).config;
    const make = (resident: boolean) => new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen), { resident });
    const paths = { host: make(false), resident: make(true) };
    const samples: Record<keyof typeof paths, Sample[]> = { host: [], resident: [] };
    try {
      for (const t of Object.values(paths)) await t.step(); // warm-up: shader compiles
      for (let s = 0; s < steps; s++) for (const k of ['host', 'resident'] as const) samples[k].push(await timedStep(paths[k]));
    } finally {
      Object.values(paths).forEach((t) => t.dispose());
    }
    const tokensPerStep = cfg.data.microBatches * cfg.data.microBatchSize * cfg.data.seqLen;
    for (const k of ['host', 'resident'] as const) {
      const xs = samples[k];
      const ms = median(xs.map((x) => x.ms));
      emit({
        bench: 'training step: host path vs GPU-resident',
        config: name,
        path: k,
        params: paths[k].layout.total,
        tokens_per_step: tokensPerStep,
        step_ms: Math.round(ms),
        step_ms_each: xs.map((x) => Math.round(x.ms)).join(' '),
        tokens_per_s: (tokensPerStep / ms) * 1000,
        gpu_dispatches_per_step: median(xs.map((x) => x.dispatches)),
        sync_reads_per_step: median(xs.map((x) => x.reads)),
        bytes_read_per_step: median(xs.map((x) => x.bytes)),
      });
    }
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});

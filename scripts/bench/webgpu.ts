/**
 * The webgpu backend (`npm run bench -- webgpu`): the adapter, per-op overhead, matMul GFLOP/s
 * and training tokens/s with GPU dispatches and synchronous reads per step, three ways: tfjs'
 * composite ops, the fused kernels landed first (cross-entropy, RMSNorm, softmax, SwiGLU
 * activation, MoE combine), and all of moecat's fused kernels (those plus every FFN expert of a
 * layer in a few programs, RoPE, MLA's key and scaled dot-product attention). For the last,
 * the programs a step dispatches most. On a software Vulkan driver (lavapipe) these figures measure correctness and overhead,
 * not GPU speed.
 * Usage: node dist/scripts/bench/webgpu.js [--configs tiny,small] [--steps 3] [--sizes 256,512,1024]
 *        [--kernels composite,fused-first,fused]
 * Prints one JSON line per result; without an adapter, one line saying why.
 */
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../core/backend';
import { programCounter, startProgramTrace } from '../../core/webgpu/trace';
import { registerFusedKernels, unregisterFusedKernels } from '../../core/webgpu/fusedKernels';
import { registerExpertKernels, unregisterExpertKernels } from '../../core/webgpu/expertKernels';
import { registerRopeKernels, unregisterRopeKernels } from '../../core/webgpu/ropeKernels';
import { registerSdpaKernels, unregisterSdpaKernels } from '../../core/webgpu/sdpaKernels';
import { syncReadStats } from '../../core/webgpu/syncRead';
import { loadTrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer } from '../../trainer/trainer';
import { forwardFlops } from './flops';
import { MoeStats } from '../../model/moe/layer';
import { arg, median, emit } from './args';
import { selectWebgpuOrReport } from './webgpuAdapter';

/**
 * µs per op over a chain of `n` element-wise adds on a 4096-element tensor, ended by one read.
 * 4096 elements is past tfjs-webgpu's CPU hand-off (tensors under 1000 elements that live on
 * the host run on the CPU), so each add is one GPU dispatch (checked by the dispatch counter).
 */
function opOverheadUs(n: number): { us: number; dispatchesPerOp: number } {
  const x = tf.tidy(() => tf.add(tf.range(0, 4096), 1));
  const d0 = programCounter.dispatches;
  const run = () =>
    tf.tidy(() => {
      let y = x;
      for (let i = 0; i < n; i++) y = tf.add(y, x);
      return y.dataSync()[0];
    });
  run();
  const times: number[] = [];
  for (let r = 0; r < 3; r++) {
    const t0 = process.hrtime.bigint();
    run();
    times.push(Number(process.hrtime.bigint() - t0) / 1000 / n);
  }
  x.dispose();
  return { us: median(times), dispatchesPerOp: (programCounter.dispatches - d0) / (4 * n) };
}

function matMulGflops(n: number): { ms: number; gflops: number } {
  const a = tf.randomNormal([n, n], 0, 1, 'float32', 1);
  const b = tf.randomNormal([n, n], 0, 1, 'float32', 2);
  const run = () => tf.tidy(() => tf.sum(tf.matMul(a, b)).dataSync()[0]);
  run();
  const times: number[] = [];
  for (let r = 0; r < 3; r++) {
    const t0 = process.hrtime.bigint();
    run();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  tf.dispose([a, b]);
  const ms = median(times);
  return { ms, gflops: (2 * n ** 3) / (ms * 1e6) };
}

async function main(): Promise<void> {
  if (!(await selectWebgpuOrReport())) return;
  const gpu = opOverheadUs(200);
  await selectBackend('cpu');
  const cpu = opOverheadUs(200);
  await selectBackend('webgpu');
  emit({ bench: 'op overhead', op: 'add [4096] x 200, one read', webgpu_us_per_op: gpu.us, gpu_dispatches_per_op: gpu.dispatchesPerOp, cpu_js_us_per_op: cpu.us });
  for (const n of arg('sizes', '256,512,1024').split(',').map(Number)) {
    const r = matMulGflops(n);
    emit({ bench: 'matMul', shape: `${n}x${n}x${n}`, ms: r.ms, gflops: r.gflops });
  }
  const steps = Number(arg('steps', '3'));
  // Each config three ways: tfjs' composite ops, the first fused set, all fused kernels (the default).
  const variants = [
    { kernels: 'composite', setup: () => (unregisterFusedKernels(), unregisterExpertKernels(), unregisterRopeKernels(), unregisterSdpaKernels()) },
    { kernels: 'fused-first', setup: () => (registerFusedKernels(), unregisterExpertKernels(), unregisterRopeKernels(), unregisterSdpaKernels()) },
    { kernels: 'fused', setup: () => (registerFusedKernels(), registerExpertKernels(), registerRopeKernels(), registerSdpaKernels()) },
  ].filter((v) => arg('kernels', 'composite,fused-first,fused').split(',').includes(v.kernels));
  for (const name of arg('configs', 'tiny,small').split(',')) {
    const { config } = loadTrainConfig(`configs/${name}.yaml`, ['data.synthetic={}', 'stability.spike={enabled: false}']);
    const B = config.data.microBatchSize;
    const S = config.data.seqLen;
    const M = config.data.microBatches;
    // One trainer per variant, their steps interleaved, so machine load hits all alike.
    const runs = variants.map((v) => ({
      v,
      t: new Trainer(config, new MarkovSource(config.seed, config.model.vocabSize, B, S)),
      times: [] as number[],
      dispatches: [] as number[],
      reads: [] as number[],
      flops: [] as number[],
      programs: new Map<string, number>(),
    }));
    for (let i = 0; i < steps + 1; i++) {
      for (const run of runs) {
        run.v.setup();
        const d0 = programCounter.dispatches;
        const r0 = syncReadStats.reads;
        const tr = i === 1 ? startProgramTrace() : null;
        const t0 = Date.now();
        const r = await run.t.step();
        if (tr) run.programs = tr.stop().counts;
        if (r.kind !== 'step') throw new Error('unexpected spike');
        if (i === 0) continue; // shader compilation
        run.times.push(Date.now() - t0);
        // 3 x forward FLOPs (forward + backward), from the routing actually taken (as bench train).
        const stats = r.metrics.ffn_experts_per_token_by_layer.map((f) => ({ ffnRows: Math.round(f * B * S) }) as MoeStats);
        run.flops.push(3 * M * forwardFlops(config.model, B, S, stats).total);
        run.dispatches.push(programCounter.dispatches - d0);
        run.reads.push(syncReadStats.reads - r0);
      }
    }
    for (const run of runs) {
      run.t.dispose();
      const ms = median(run.times);
      emit({ bench: 'training', config: name, kernels: run.v.kernels, tokens_per_step: B * S * M, step_ms: ms, tokens_per_s: (B * S * M) / (ms / 1000), achieved_gflop_s: median(run.flops) / 1e9 / (ms / 1000), gpu_dispatches_per_step: median(run.dispatches), sync_reads_per_step: median(run.reads) });
    }
    // The programs a step dispatches most with all fused kernels: where the next one would pay.
    for (const run of runs.filter((r) => r.v.kernels === 'fused')) {
      const top = [...run.programs.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8);
      emit({ bench: 'dispatches', config: name, kernels: run.v.kernels, per_step: median(run.dispatches), top_programs: top.map(([p, n]) => `${p.replace(/^\w+Program:/, '')} ${n}`).join(', ') });
    }
  }
  registerFusedKernels();
  registerExpertKernels();
  registerRopeKernels();
  registerSdpaKernels();
}

main().catch((e) => {
  process.stderr.write(`bench webgpu: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});

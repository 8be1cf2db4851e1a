/**
 * Expert-parallel benchmark: step time of ScMoE (overlapped), ScMoE (not overlapped) and
 * sequential layers under expert parallelism at W ranks on this host, with an artificial
 * latency injected in the comm worker before every all-to-all (this kernel has no netem).
 * Each variant runs `--reps` forward+backward microbatches (after one warm-up) and forward-only
 * passes; the main thread's time blocked waiting for all-to-alls is measured, and the share of
 * the forward's all-to-all time that ScMoE hides is 1 − blocked(overlap) / blocked(no overlap).
 * (Backward all-to-alls are blocking in every variant: tfjs runs gradient functions one by one.)
 *
 * Usage: node dist/scripts/bench/expert.js [--world 2] [--delays 0,20] [--reps 3] [--seq 16] [--batch 2]
 * Prints JSON lines with a `bench` field (rank 0 only).
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as crypto from 'crypto';
import * as tf from '@tensorflow/tfjs';
import YAML from 'yaml';
import { selectBackend } from '../../core/backend';
import { ModelConfig, parseModelConfig } from '../../model/config';
import { initParams, paramSpecs, ParamStore } from '../../model/params';
import { initialBiases } from '../../model/transformer';
import { microbatchLoss } from '../../trainer/losses';
import { Batch } from '../../data/batch';
import { microbatchGrad } from '../../trainer/microbatch';
import { flatLayout } from '../../model/flatParams';
import { freePort } from '../../parallel/launcher';
import { SyncComm } from '../../parallel/syncComm';
import { ExpertParallel } from '../../parallel/expertParallel';
import { arg } from './args';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function rankMain(): Promise<void> {
  const rank = Number(process.env.RANK);
  const W = Number(process.env.WORLD_SIZE);
  const reps = Number(arg('reps', '3'));
  const delays = arg('delays', '0,20').split(',').map(Number);
  const S = Number(arg('seq', '16'));
  const B = Number(arg('batch', '2'));
  await selectBackend((process.env.MOECAT_BACKEND as 'wasm') ?? 'wasm');
  const raw = YAML.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'configs', 'tiny.yaml'), 'utf8')) as { model: unknown };
  const base = parseModelConfig(raw.model);
  const comm = await SyncComm.create({ rank, worldSize: W, masterAddr: '127.0.0.1', masterPort: Number(process.env.MASTER_PORT), secret: process.env.MOECAT_SECRET!, timeoutMs: 120000 });
  // Different tokens per rank (each rank holds its own microbatch).
  const mb: Batch = {
    inputs: new Int32Array(B * S).map((_, i) => (i * 7919 + 13 + rank * 101) % base.vocabSize),
    targets: new Int32Array(B * S).map((_, i) => (i * 104729 + 3 + rank * 37) % base.vocabSize),
    lossMask: new Float32Array(B * S).fill(1),
    batchSize: B,
    seqLen: S,
  };
  const norms = { globalTokens: B * S * W, globalSeqs: B * W };
  const variants: { name: string; layerType: 'scmoe' | 'sequential'; overlap: boolean }[] = [
    { name: 'scmoe+overlap', layerType: 'scmoe', overlap: true },
    { name: 'scmoe no overlap', layerType: 'scmoe', overlap: false },
    { name: 'sequential', layerType: 'sequential', overlap: false },
  ];
  for (const delay of delays) {
    comm.setDelay(delay);
    const rows: Record<string, number | string>[] = [];
    for (const v of variants) {
      const c: ModelConfig = { ...base, layerType: v.layerType };
      const specs = paramSpecs(c);
      const store = new ParamStore(specs, initParams(c, 1234));
      const layout = flatLayout(specs);
      const biases = initialBiases(c);
      const ep = new ExpertParallel(comm, { overlap: v.overlap });
      const step = () => microbatchGrad(c, store, layout, mb, norms, { biases, zLossCoef: 0, moe: ep.moe });
      const fwd = () => tf.tidy(() => microbatchLoss(c, (n) => store.get(n), mb, norms, { biases, moe: ep.moe }).total.dataSync());
      step();
      fwd();
      const stepMs: number[] = [];
      const stepBlocked: number[] = [];
      const fwdMs: number[] = [];
      const fwdBlocked: number[] = [];
      for (let r = 0; r < reps; r++) {
        let b0 = comm.blockedMs;
        let t0 = performance.now();
        step();
        stepMs.push(performance.now() - t0);
        stepBlocked.push(comm.blockedMs - b0);
        b0 = comm.blockedMs;
        t0 = performance.now();
        fwd();
        fwdMs.push(performance.now() - t0);
        fwdBlocked.push(comm.blockedMs - b0);
      }
      store.dispose();
      rows.push({ variant: v.name, step_ms: median(stepMs), step_a2a_blocked_ms: median(stepBlocked), fwd_ms: median(fwdMs), fwd_a2a_blocked_ms: median(fwdBlocked) });
    }
    if (rank === 0) {
      const L = base.nLayers;
      for (const r of rows) process.stdout.write(JSON.stringify({ bench: 'expert parallel (tiny)', world: W, delay_ms: delay, batch: `${B}x${S}`, a2a_per_step: 4 * L, ...r }) + '\n');
      const ov = rows[0];
      const no = rows[1];
      const seq = rows[2];
      process.stdout.write(
        JSON.stringify({
          bench: 'expert parallel overlap summary',
          world: W,
          delay_ms: delay,
          fwd_a2a_hidden_share: 1 - (ov.fwd_a2a_blocked_ms as number) / Math.max(1e-9, no.fwd_a2a_blocked_ms as number),
          step_a2a_hidden_share: 1 - (ov.step_a2a_blocked_ms as number) / Math.max(1e-9, no.step_a2a_blocked_ms as number),
          step_speedup_vs_sequential: (seq.step_ms as number) / (ov.step_ms as number),
          step_speedup_vs_no_overlap: (no.step_ms as number) / (ov.step_ms as number),
        }) + '\n',
      );
    }
  }
  await comm.close();
}

async function parentMain(): Promise<void> {
  const W = Number(arg('world', '2'));
  const port = await freePort();
  const secret = crypto.randomBytes(16).toString('hex');
  const kids = Array.from({ length: W }, (_, r) =>
    spawn(process.execPath, [__filename, ...process.argv.slice(2), '--as-rank'], {
      env: { ...process.env, RANK: String(r), WORLD_SIZE: String(W), MASTER_PORT: String(port), MOECAT_SECRET: secret },
      stdio: ['ignore', r === 0 ? 'inherit' : 'ignore', 'inherit'],
    }),
  );
  const codes = await Promise.all(kids.map((k) => new Promise<number | null>((res) => k.once('exit', (c) => res(c)))));
  if (codes.some((c) => c !== 0)) {
    process.stderr.write(`expert bench: rank exit codes ${codes.join(',')}\n`);
    process.exitCode = 1;
  }
}

(process.argv.includes('--as-rank') ? rankMain() : parentMain()).catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});

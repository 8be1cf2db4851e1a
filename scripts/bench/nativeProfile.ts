/**
 * Step profile of small.yaml on cpu+native (`npm run bench -- nativeProfile`): what a shared
 * machine's load cannot distort. Per child process (MOECAT_THREADS = 1, then all cores, over
 * interleaved rounds):
 *   native-profile-kernel  one step's exclusive CPU ms, calls and output MB per tfjs kernel, at
 *                          one thread (first round only)
 *   native-profile         CPU ms per step (process.cpuUsage, all threads), and at one thread
 *                          the CPU ms inside pool jobs that more threads would split
 *                          (native/pool.h pool_profile): the rest is the serial part, whose
 *                          share s bounds the 1 -> 2 thread speed-up to 1 / (s + (1 - s) / 2)
 *   native-profile-summary medians over the rounds, and whether param_hash was one for all
 * Wall-clock figures are here for reference only: on a shared machine they move with the load.
 *
 *   node dist/scripts/bench/nativeProfile.js [--quick]
 */
import { spawnSync } from 'child_process';
import * as os from 'os';
import * as tf from '@tensorflow/tfjs';
import { nativeOptionsFromEnv, selectBackend } from '../../core/backend';
import { loadNativeKernels, nativeAddon } from '../../core/native';
import { loadTrainConfig, TrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer } from '../../trainer/trainer';

type Row = Record<string, unknown>;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

function cpuMsSince(c0: NodeJS.CpuUsage): number {
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1000;
}

/** Wraps every kernel of the backend: exclusive CPU ms, calls and output bytes per kernel name. */
function instrument(backendName: string): Map<string, { cpuMs: number; calls: number; outBytes: number }> {
  const stats = new Map<string, { cpuMs: number; calls: number; outBytes: number }>();
  for (const k of tf.getKernelsForBackend(backendName)) {
    const inner = k.kernelFunc;
    tf.unregisterKernel(k.kernelName, backendName);
    tf.registerKernel({
      ...k,
      kernelFunc: (args) => {
        const c0 = process.cpuUsage();
        const out = inner(args);
        const e = stats.get(k.kernelName) ?? { cpuMs: 0, calls: 0, outBytes: 0 };
        e.cpuMs += cpuMsSince(c0);
        e.calls += 1;
        for (const t of (Array.isArray(out) ? out : [out]) as tf.TensorInfo[]) e.outBytes += 4 * t.shape.reduce((a, b) => a * b, 1);
        stats.set(k.kernelName, e);
        return out;
      },
    });
  }
  return stats;
}

/** The child: `steps` timed steps after a warm-up, one pool-profiled step, one instrumented step. */
async function childProfile(cfg: TrainConfig, threads: number, steps: number, emit: (r: Row) => void): Promise<void> {
  const m = nativeAddon();
  if (!m) throw new Error('native addon not loaded');
  const t = new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen));
  for (let i = 0; i < 3; i++) await t.step();
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < steps; i++) {
    const c0 = process.cpuUsage();
    const s0 = process.hrtime.bigint();
    await t.step();
    wall.push(Number(process.hrtime.bigint() - s0) / 1e6);
    cpu.push(cpuMsSince(c0));
  }
  m.poolProfile(1);
  const c0 = process.cpuUsage();
  await t.step();
  const profCpu = cpuMsSince(c0);
  const par = m.poolProfile(0);
  const stats = instrument(tf.getBackend());
  const c1 = process.cpuUsage();
  await t.step();
  const instCpu = cpuMsSince(c1);
  const hash = t.paramHash().slice(0, 16);
  t.dispose();
  const sorted = [...stats.entries()].sort((a, b) => b[1].cpuMs - a[1].cpuMs);
  // The kernel table once per child at one thread (the profile the serial fraction refers to).
  for (const [kernel, e] of threads === 1 ? sorted : []) {
    emit({ bench: 'native-profile-kernel', config: 'small', threads, kernel, calls: e.calls, cpu_ms: +e.cpuMs.toFixed(2), out_mb: +(e.outBytes / 2 ** 20).toFixed(2), share_of_step_cpu: +(e.cpuMs / instCpu).toFixed(3) });
  }
  const inKernels = sorted.reduce((s, [, e]) => s + e.cpuMs, 0);
  const row: Row = {
    bench: 'native-profile',
    config: 'small',
    threads,
    steps,
    step_ms_median: +median(wall).toFixed(1),
    step_cpu_ms_median: +median(cpu).toFixed(1),
    kernel_calls: sorted.reduce((s, [, e]) => s + e.calls, 0),
    kernel_out_mb: +(sorted.reduce((s, [, e]) => s + e.outBytes, 0) / 2 ** 20).toFixed(1),
    outside_kernels_cpu_ms: +(instCpu - inKernels).toFixed(1),
    param_hash: hash,
  };
  if (threads === 1) {
    // Pool jobs measured on the one thread that ran them: the parallel part of the step.
    const s = 1 - par.cpuMs / profCpu;
    Object.assign(row, { profiled_step_cpu_ms: +profCpu.toFixed(1), parallel_cpu_ms: +par.cpuMs.toFixed(1), pool_jobs: par.jobs, serial_fraction: +s.toFixed(3), amdahl_bound_2_threads: +(1 / (s + (1 - s) / 2)).toFixed(2) });
  }
  emit(row);
}

/** The parent: `rounds` rounds of one child at 1 thread and one at `cores`, then the medians. */
function runProfile(rounds: number, steps: number, cores: number, child: (threads: number, keepKernels: boolean) => void, rows: Row[], emit: (r: Row) => void): void {
  for (let r = 0; r < rounds; r++) for (const th of [...new Set([1, cores])]) child(th, r === 0);
  const got = (th: number, key: string) => +median(rows.filter((x) => x.bench === 'native-profile' && x.threads === th).map((x) => x[key] as number)).toFixed(3);
  const hashes = new Set(rows.filter((x) => x.bench === 'native-profile').map((x) => x.param_hash));
  emit({
    bench: 'native-profile-summary',
    config: 'small',
    rounds,
    steps,
    cores,
    step_cpu_ms_1_thread: got(1, 'step_cpu_ms_median'),
    step_cpu_ms_all_cores: got(cores, 'step_cpu_ms_median'),
    step_ms_1_thread: got(1, 'step_ms_median'),
    step_ms_all_cores: got(cores, 'step_ms_median'),
    wall_scaling: +(got(1, 'step_ms_median') / got(cores, 'step_ms_median')).toFixed(2),
    serial_fraction: got(1, 'serial_fraction'),
    amdahl_bound_2_threads: got(1, 'amdahl_bound_2_threads'),
    param_hash_same_for_all_thread_counts: hashes.size === 1,
  });
}

const rows: Row[] = [];
function emit(r: Row): void {
  process.stdout.write(JSON.stringify(r) + '\n');
  rows.push(r);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const ci = args.indexOf('--child');
  if (ci >= 0) {
    const steps = Number(args[ci + 1]);
    await selectBackend('cpu');
    const r = loadNativeKernels(nativeOptionsFromEnv());
    if (!r.loaded) throw new Error(`native kernels not loaded: ${r.reason}`);
    const cfg = loadTrainConfig('configs/small.yaml', ['data.synthetic={}', 'train.steps=1000', 'optim.schedule={type: constant, warmupSteps: 2}']).config;
    await childProfile(cfg, r.gemm?.threads ?? 1, steps, emit);
    return;
  }
  if (!loadNativeKernels({ register: false }).loaded) {
    emit({ bench: 'native-profile-errors', reason: 'native addon not built (node native/build.js)' });
    return;
  }
  const quick = args.includes('--quick');
  const steps = quick ? 3 : 5;
  runProfile(quick ? 1 : 2, steps, os.cpus().length, (th, keepKernels) => {
    const r = spawnSync(process.execPath, [__filename, '--child', String(steps)], { env: { ...process.env, MOECAT_THREADS: String(th) }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 });
    if (r.status !== 0) emit({ bench: 'native-profile-errors', threads: th, exit: r.status });
    for (const line of (r.stdout ?? '').split('\n')) {
      if (!line.startsWith('{')) continue;
      const row = JSON.parse(line) as Row;
      if (keepKernels || row.bench !== 'native-profile-kernel') emit(row);
    }
  }, rows, emit);
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);

/**
 * Native kernel benchmark (issue 14). Prints JSON lines, one per measurement, each with a
 * `bench` field naming its table:
 *   native-sgemm      matMul GFLOP/s at 1024³ and at the model's shapes: cpu+native, wasm, cpu-JS
 *   native-train      training tokens/s and achieved matMul GFLOP/s, tiny and small, per backend
 *   native-kernels    top-10 kernels of one training step, per backend and config
 * Each backend runs in its own child process (the native kernels replace the cpu backend's
 * kernels process-wide), so `cpu` here is the pure-JS backend and `cpu+native` the same backend
 * with the addon's kernels registered.
 *
 *   native-torch      the same for scripts/bench/torch_reference.py (PyTorch, same matmul shapes)
 *   native-summary    tokens/s ratios and the share of the native sgemm peak reached in training
 *   native-levers     small.yaml step time with each cpu+native lever switched off in turn
 *                     (output-buffer pool, glibc malloc thresholds, fused kernels, AdamW in
 *                     C), interleaved over rounds so machine noise hits every variant alike
 *   native-h2h        small.yaml: moecat cpu+native on 1 thread and on all cores against PyTorch on
 *                     1 and 2 threads, alternating over rounds (robust to machine drift); the
 *                     moecat rows carry param_hash, which must not depend on the thread count
 *
 *   node dist/scripts/bench/native.js                 # everything
 *   node dist/scripts/bench/native.js sgemm train     # a subset (sgemm, train, torch, levers, h2h)
 *   node dist/scripts/bench/native.js --quick         # fewer steps / repeats
 *   node dist/scripts/bench/native.js --coretype X    # OPENBLAS_CORETYPE for the children
 *   node dist/scripts/bench/native.js --child <json>  # internal
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as os from 'os';
import * as tf from '@tensorflow/tfjs';
import { nativeOptionsFromEnv, selectBackend } from '../../core/backend';
import { EXPERTS_GRAD_KERNEL, EXPERTS_KERNEL } from '../../model/moe/nativeKernels';
import { loadNativeKernels } from '../../core/native';
import { loadTrainConfig, TrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer } from '../../trainer/trainer';

type Variant = 'wasm' | 'cpu' | 'cpu+native';
const VARIANTS: Variant[] = ['cpu+native', 'wasm', 'cpu'];
const CONFIGS = ['tiny', 'small'] as const;
type ConfigName = (typeof CONFIGS)[number];

interface ChildTask {
  kind: 'sgemm' | 'train';
  variant: Variant;
  config?: ConfigName;
  steps?: number;
  quick?: boolean;
  /** Lever label: only the native-train row is printed, tagged with it. */
  lever?: string;
}

/** Result rows of this process and its children (for the summary tables). */
const rows: Record<string, unknown>[] = [];

/** Prints a result row and keeps it for the summary tables. */
function emit(row: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(row) + '\n');
  rows.push(row);
}

/** The pool threads of the cpu+native child (MOECAT_THREADS, else all cores). */
let nativeThreads = 1;

async function useVariant(v: Variant): Promise<string> {
  if (v === 'wasm') {
    await selectBackend('wasm');
    return 'wasm';
  }
  await selectBackend('cpu');
  if (v === 'cpu+native') {
    const r = loadNativeKernels(nativeOptionsFromEnv());
    if (!r.loaded) throw new Error(`native kernels not loaded: ${r.reason}`);
    nativeThreads = r.gemm?.threads ?? 1;
    return `cpu+native(${r.kernels.length} kernels)`;
  }
  return 'cpu';
}

export function benchConfig(name: ConfigName): TrainConfig {
  return loadTrainConfig(`configs/${name}.yaml`, ['data.synthetic={}', 'train.steps=1000', 'optim.schedule={type: constant, warmupSteps: 2}']).config;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/**
 * Exclusive time per kernel: every kernel registered for the backend is wrapped (a JS kernel
 * calls its helpers directly, not through the registry, so nothing is counted twice, unlike
 * tf.profile, whose list also holds the enclosing customGrad `forward` records). Wall time and
 * process CPU time (all threads: OpenBLAS' too) are both kept: on a shared machine wall time
 * includes waiting for a core.
 */
interface KStat {
  ms: number;
  cpuMs: number;
  calls: number;
  flops: number;
}
function instrument(backendName: string): { stats: Map<string, KStat>; reset(): void } {
  const stats = new Map<string, KStat>();
  for (const k of tf.getKernelsForBackend(backendName)) {
    const inner = k.kernelFunc;
    const name = k.kernelName;
    tf.unregisterKernel(name, backendName);
    tf.registerKernel({
      ...k,
      kernelFunc: (args) => {
        const c0 = process.cpuUsage();
        const t0 = process.hrtime.bigint();
        const out = inner(args);
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        const c = process.cpuUsage(c0);
        const e = stats.get(name) ?? { ms: 0, cpuMs: 0, calls: 0, flops: 0 };
        e.ms += ms;
        e.cpuMs += (c.user + c.system) / 1000;
        e.calls += 1;
        e.flops += kernelMatmulFlops(name, args.inputs as Record<string, tf.TensorInfo>, (Array.isArray(out) ? out[0] : out) as tf.TensorInfo);
        stats.set(name, e);
        return out;
      },
    });
  }
  return { stats, reset: () => stats.clear() };
}

/**
 * matMul FLOPs of one kernel call: BatchMatMul's, and the fused experts kernels' (3 products of
 * 2·R·d·h forward, 6 backward; model/moe/nativeKernels.ts).
 */
function kernelMatmulFlops(name: string, inputs: Record<string, tf.TensorInfo>, out: tf.TensorInfo): number {
  if (name === 'BatchMatMul') return matmulFlops(inputs.a, out);
  if (name === EXPERTS_KERNEL || name === EXPERTS_GRAD_KERNEL) {
    const [R, d] = inputs.x.shape;
    const h = inputs.w0 ? inputs.w0.shape[1] : 0;
    return (name === EXPERTS_KERNEL ? 3 : 6) * 2 * R * d * h;
  }
  return 0;
}

/** matMul FLOPs: 2·|out|·K, K from a's last two dims over M. */
function matmulFlops(a: tf.TensorInfo, out: tf.TensorInfo): number {
  const as = a.shape;
  const os = out.shape;
  const M = os[os.length - 2];
  const K = (as[as.length - 1] * as[as.length - 2]) / M;
  return 2 * os.reduce((x, y) => x * y, 1) * K;
}

function cpuMsSince(c0: NodeJS.CpuUsage): number {
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1000;
}

async function childTrain(task: ChildTask): Promise<void> {
  const backend = await useVariant(task.variant);
  const name = task.config!;
  const cfg = benchConfig(name);
  const t = new Trainer(cfg, new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen));
  const tokensPerStep = cfg.data.microBatchSize * cfg.data.seqLen * cfg.data.microBatches;
  // Warm-up: kernel set-up, JIT, and (cpu+native) the output-buffer pool, which reaches its
  // steady state (nearly every output a reuse) on the third step.
  for (let i = 0; i < (task.variant === 'cpu+native' ? 3 : 1); i++) await t.step();
  // Timed steps first (uninstrumented), then one instrumented step for the kernel table.
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < (task.steps ?? 5); i++) {
    const c0 = process.cpuUsage();
    const s0 = process.hrtime.bigint();
    const r = await t.step();
    if (r.kind !== 'step') throw new Error('spike');
    wall.push(Number(process.hrtime.bigint() - s0) / 1e6);
    cpu.push(cpuMsSince(c0));
  }
  if (task.lever) {
    const hash = t.paramHash();
    t.dispose();
    const wMs = median(wall);
    if (task.lever === H2H) emit({ bench: 'native-h2h-raw', config: name, who: `moecat ${nativeThreads} thread${nativeThreads > 1 ? 's' : ''}`, steps: wall.length, step_ms_median: +wMs.toFixed(1), param_hash: hash.slice(0, 16) });
    else emit({ bench: 'native-levers-raw', config: name, lever: task.lever, steps: wall.length, step_ms_median: +wMs.toFixed(1), step_cpu_ms_median: +median(cpu).toFixed(1) });
    return;
  }
  const ins = instrument(tf.getBackend());
  const c0 = process.cpuUsage();
  const s0 = process.hrtime.bigint();
  await t.step();
  const stepMs = Number(process.hrtime.bigint() - s0) / 1e6;
  const stepCpu = cpuMsSince(c0);
  t.dispose();
  const rows = [...ins.stats.entries()].sort((a, b) => b[1].cpuMs - a[1].cpuMs);
  const kernelCpu = rows.reduce((s, [, e]) => s + e.cpuMs, 0);
  const kernelMs = rows.reduce((s, [, e]) => s + e.ms, 0);
  const flops = rows.reduce((a, [, e]) => a + e.flops, 0);
  const matmulCpu = rows.reduce((a, [, e]) => a + (e.flops > 0 ? e.cpuMs : 0), 0);
  rows.slice(0, 10).forEach(([kernel, e], rank) =>
    emit({ bench: 'native-kernels', config: name, variant: task.variant, rank: rank + 1, kernel, calls: e.calls, cpu_ms: +e.cpuMs.toFixed(1), wall_ms: +e.ms.toFixed(1), share_of_step_cpu: +(e.cpuMs / stepCpu).toFixed(3), ...(e.flops > 0 ? { gflops_cpu: +(e.flops / 1e6 / e.cpuMs).toFixed(1) } : {}) }),
  );
  emit({ bench: 'native-kernels', config: name, variant: task.variant, rank: 0, kernel: '(outside kernels: engine, tape, trainer JS, AdamW, GC)', calls: 0, cpu_ms: +(stepCpu - kernelCpu).toFixed(1), wall_ms: +(stepMs - kernelMs).toFixed(1), share_of_step_cpu: +((stepCpu - kernelCpu) / stepCpu).toFixed(3) });
  const wMs = median(wall);
  const cMs = median(cpu);
  emit({
    bench: 'native-train',
    config: name,
    variant: task.variant,
    backend,
    tokens_per_step: tokensPerStep,
    steps: wall.length,
    step_ms_median: +wMs.toFixed(1),
    step_cpu_ms_median: +cMs.toFixed(1),
    tokens_per_s: +((tokensPerStep / wMs) * 1000).toFixed(1),
    tokens_per_cpu_s: +((tokensPerStep / cMs) * 1000).toFixed(1),
    matmul_gflop_per_step: +(flops / 1e9).toFixed(3),
    achieved_gflops: +(flops / 1e6 / wMs).toFixed(2),
    matmul_share_of_step_cpu: +(matmulCpu / stepCpu).toFixed(3),
    kernel_calls: rows.reduce((s, [, e]) => s + e.calls, 0),
  });
}

function timeIt(f: () => void, minMs: number, maxReps: number): number {
  f(); // warm-up
  const times: number[] = [];
  const start = Date.now();
  while (times.length < maxReps && (times.length < 2 || Date.now() - start < minMs)) {
    const s0 = process.hrtime.bigint();
    f();
    times.push(Number(process.hrtime.bigint() - s0) / 1e6);
  }
  return median(times);
}

async function childSgemm(task: ChildTask): Promise<void> {
  await useVariant(task.variant);
  const nativeThreads = task.variant === 'cpu+native' ? loadNativeKernels({ ...nativeOptionsFromEnv(), register: false }).gemm!.threads : 1;
  const threadSettings = task.variant === 'cpu+native' ? [...new Set([1, nativeThreads])] : [0];
  for (const th of threadSettings) {
    if (th > 0) loadNativeKernels({ ...nativeOptionsFromEnv(), threads: th });
    await sgemmShapes(task, th);
  }
}

async function sgemmShapes(task: ChildTask, threads: number): Promise<void> {
  const shapes: { label: string; b: number; m: number; k: number; n: number; ta: boolean; tb: boolean }[] = [
    { label: '1024^3', b: 1, m: 1024, k: 1024, n: 1024, ta: false, tb: false },
    { label: '1024^3 transposeA', b: 1, m: 1024, k: 1024, n: 1024, ta: true, tb: false },
    { label: '1024^3 transposeB', b: 1, m: 1024, k: 1024, n: 1024, ta: false, tb: true },
    // small.yaml: 1024 tokens, d 192, vocab 2048, ffn 512, 6 heads, seq 128, dk 48.
    { label: 'small lm_head 1024x192x2048', b: 1, m: 1024, k: 192, n: 2048, ta: false, tb: false },
    { label: 'small lm_head dW 192x1024x2048 (tA)', b: 1, m: 192, k: 1024, n: 2048, ta: true, tb: false },
    { label: 'small ffn 1024x192x512', b: 1, m: 1024, k: 192, n: 512, ta: false, tb: false },
    { label: 'small expert ~200x192x128', b: 1, m: 200, k: 192, n: 128, ta: false, tb: false },
    { label: 'small attn QK^T 48x(128x48x128) (tB)', b: 48, m: 128, k: 48, n: 128, ta: false, tb: true },
    { label: 'small attn PV 48x(128x128x32)', b: 48, m: 128, k: 128, n: 32, ta: false, tb: false },
  ];
  for (const s of shapes) {
    if (task.variant === 'cpu' && s.m * s.k * s.n * s.b > 2e8 && task.quick) continue;
    const aShape = s.b > 1 ? [s.b, ...(s.ta ? [s.k, s.m] : [s.m, s.k])] : s.ta ? [s.k, s.m] : [s.m, s.k];
    const bShape = s.b > 1 ? [s.b, ...(s.tb ? [s.n, s.k] : [s.k, s.n])] : s.tb ? [s.n, s.k] : [s.k, s.n];
    const a = tf.randomNormal(aShape, 0, 1, 'float32', 1);
    const b = tf.randomNormal(bShape, 0, 1, 'float32', 2);
    const big = s.m * s.k * s.n * s.b >= 1e9;
    const ms = timeIt(
      () => {
        const c = tf.matMul(a, b, s.ta, s.tb);
        c.dataSync();
        c.dispose();
      },
      task.variant === 'cpu' && big ? 1 : task.quick ? 300 : 1000,
      task.variant === 'cpu' && big ? 2 : 50,
    );
    const flops = 2 * s.b * s.m * s.k * s.n;
    emit({ bench: 'native-sgemm', shape: s.label, variant: task.variant, ...(threads > 0 ? { blas_threads: threads } : {}), ms: +ms.toFixed(3), gflops: +(flops / 1e6 / ms).toFixed(2) });
    tf.dispose([a, b]);
  }
}

/**
 * OpenBLAS core type for the children: --coretype X, else SkylakeX on AVX-512 CPUs (Debian's
 * OpenBLAS 0.3.21 does not know Zen 4/5 and picks Haswell kernels, ~2x slower; this machine's
 * environment even presets OPENBLAS_CORETYPE=Haswell), else OpenBLAS' own choice.
 */
function coreType(args: string[]): string | undefined {
  const i = args.indexOf('--coretype');
  if (i >= 0) return args[i + 1];
  try {
    const flags = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1] ?? '';
    if (/\bavx512f\b/.test(flags)) return 'SkylakeX';
  } catch {
    /* not Linux */
  }
  return process.env.OPENBLAS_CORETYPE;
}

let childEnv: NodeJS.ProcessEnv = process.env;

/** The JSON rows among a child's output lines. */
function jsonLines(out: string): Record<string, unknown>[] {
  const got: Record<string, unknown>[] = [];
  for (const line of out.split('\n')) {
    if (!line.trim().startsWith('{')) continue;
    try {
      got.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      /* not JSON */
    }
  }
  return got;
}

function passThrough(out: string): void {
  for (const row of jsonLines(out)) emit(row);
}

function runChild(task: ChildTask, extraEnv: NodeJS.ProcessEnv = {}): void {
  const r = spawnSync(process.execPath, [__filename, '--child', JSON.stringify(task)], { env: { ...childEnv, ...extraEnv }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 });
  if (r.status !== 0) emit({ bench: 'native-errors', task: JSON.stringify(task), exit: r.status });
  passThrough(r.stdout ?? '');
}

const PY = '/usr/bin/python3';
const TORCH_SCRIPT = path.resolve(__dirname, '..', '..', '..', 'scripts', 'bench', 'torch_reference.py');

/** Debian's python3 with python3-torch, if installed (else one error row). */
function haveTorch(): boolean {
  if (fs.existsSync(PY) && spawnSync(PY, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0) return true;
  emit({ bench: 'native-errors', task: 'torch', reason: 'python3-torch not installed (apt-get install python3-torch)' });
  return false;
}

/** The PyTorch reference's JSON rows for these arguments. */
function torchRows(args: string[]): Record<string, unknown>[] {
  const r = spawnSync(PY, [TORCH_SCRIPT, ...args], { env: { ...childEnv, OMP_WAIT_POLICY: 'PASSIVE' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) emit({ bench: 'native-errors', task: `torch ${args.join(' ')}`, exit: r.status });
  return jsonLines(r.stdout ?? '');
}

/** PyTorch on one thread (as the native path) and on two. */
function runTorch(quick: boolean): void {
  if (!haveTorch()) return;
  for (const threads of [1, 2]) for (const row of torchRows(['--threads', String(threads), '--steps', quick ? '3' : '7'])) emit(row);
}

const H2H = 'head-to-head';

/**
 * moecat (cpu+native, 1 thread and all cores) and PyTorch (1 and 2 threads) on small.yaml,
 * alternating in `rounds` rounds: PyTorch's own step time moved by up to 50% between separate
 * runs on this machine, so ratios are taken between the medians of interleaved runs. The
 * moecat rows carry the param_hash after the same number of steps: it must not depend on the
 * thread count.
 */
function runHeadToHead(quick: boolean): void {
  if (!haveTorch()) return;
  const rounds = quick ? 1 : 3;
  const cores = os.cpus().length;
  for (let r = 0; r < rounds; r++) {
    runChild({ kind: 'train', variant: 'cpu+native', config: 'small', steps: quick ? 4 : 7, lever: H2H }, { MOECAT_THREADS: '1' });
    runChild({ kind: 'train', variant: 'cpu+native', config: 'small', steps: quick ? 4 : 7, lever: H2H }, { MOECAT_THREADS: String(cores) });
    for (const threads of [1, 2]) {
      for (const row of torchRows(['--threads', String(threads), '--steps', quick ? '3' : '7', 'small'])) {
        emit({ bench: 'native-h2h-raw', config: 'small', who: `torch ${threads} thread${threads > 1 ? 's' : ''}`, steps: row.steps, step_ms_median: row.step_ms_median });
      }
    }
  }
  const raw = rows.filter((x) => x.bench === 'native-h2h-raw');
  const med = (who: string) => median(raw.filter((x) => x.who === who).map((x) => x.step_ms_median as number));
  const allCores = `moecat ${cores} thread${cores > 1 ? 's' : ''}`;
  const [m1, mN, t1, t2] = [med('moecat 1 thread'), med(allCores), med('torch 1 thread'), med('torch 2 threads')];
  if (!Number.isFinite(mN) || !Number.isFinite(t1)) return;
  const tBest = Number.isFinite(t2) ? Math.min(t1, t2) : t1;
  const hashes = new Set(raw.filter((x) => String(x.who).startsWith('moecat')).map((x) => x.param_hash));
  emit({
    bench: 'native-h2h',
    config: 'small',
    rounds,
    moecat_threads: cores,
    moecat_step_ms: +mN.toFixed(1),
    moecat_1_thread_step_ms: +m1.toFixed(1),
    torch_1_thread_step_ms: +t1.toFixed(1),
    torch_2_threads_step_ms: Number.isFinite(t2) ? +t2.toFixed(1) : undefined,
    moecat_tokens_per_s: +((1024 / mN) * 1000).toFixed(0),
    torch_best_tokens_per_s: +((1024 / tBest) * 1000).toFixed(0),
    moecat_vs_torch_best: +(tBest / mN).toFixed(2),
    moecat_scaling_1_to_all: +(m1 / mN).toFixed(2),
    param_hash_same_for_all_thread_counts: hashes.size === 1,
  });
}

/**
 * Each lever of the cpu+native path switched off alone, and all together, against all on:
 * small.yaml, `rounds` interleaved rounds, median step time per variant over its rounds' medians.
 */
const LEVERS: { lever: string; env: NodeJS.ProcessEnv }[] = [
  { lever: 'all levers on', env: {} },
  { lever: 'output-buffer pool off', env: { MOECAT_POOL_MB: '0' } },
  { lever: 'malloc thresholds off', env: { MOECAT_MALLOC_TUNE: '0' } },
  { lever: 'fused kernels off (cross-entropy, softmax, RMSNorm, SwiGLU, MoE experts and combine)', env: { MOECAT_NATIVE_FUSED: '0' } },
  { lever: 'AdamW in JS', env: { MOECAT_NATIVE_ADAMW: '0' } },
  { lever: 'all four off', env: { MOECAT_POOL_MB: '0', MOECAT_MALLOC_TUNE: '0', MOECAT_NATIVE_FUSED: '0', MOECAT_NATIVE_ADAMW: '0' } },
];

function runLevers(quick: boolean): void {
  const rounds = quick ? 1 : 3;
  for (let r = 0; r < rounds; r++) {
    for (const l of LEVERS) runChild({ kind: 'train', variant: 'cpu+native', config: 'small', steps: quick ? 4 : 9, lever: l.lever }, l.env);
  }
  const raw = rows.filter((x) => x.bench === 'native-levers-raw');
  const med = (lever: string) => median(raw.filter((x) => x.lever === lever).map((x) => x.step_ms_median as number));
  const base = med(LEVERS[0].lever);
  for (const l of LEVERS) {
    const ms = med(l.lever);
    if (!Number.isFinite(ms)) continue;
    emit({
      bench: 'native-levers',
      config: 'small',
      lever: l.lever,
      env: Object.entries(l.env).map(([k, v]) => `${k}=${v}`).join(' ') || '(defaults)',
      rounds: raw.filter((x) => x.lever === l.lever).length,
      step_ms_median: +ms.toFixed(1),
      tokens_per_s: +((1024 / ms) * 1000).toFixed(0),
      slowdown_vs_all_on: +(ms / base).toFixed(2),
    });
  }
}

/** Ratios: cpu+native against the others, and the share of the native sgemm peak reached in training. */
function summary(): void {
  const peak = rows.find((r) => r.bench === 'native-sgemm' && r.variant === 'cpu+native' && r.shape === '1024^3' && r.blas_threads === 1)?.gflops as number | undefined;
  for (const config of CONFIGS) {
    const tr = (variant: string) => rows.find((r) => r.bench === 'native-train' && r.config === config && r.variant === variant);
    const torch1 = rows.find((r) => r.bench === 'native-torch' && r.config === config && r.threads === 1);
    const torch2 = rows.find((r) => r.bench === 'native-torch' && r.config === config && r.threads === 2);
    const nat = tr('cpu+native');
    if (!nat) continue;
    const h2h = rows.find((r) => r.bench === 'native-h2h' && r.config === config);
    const ratio = (other: Record<string, unknown> | undefined, key: string) => (other ? +((nat[key] as number) / (other[key] as number)).toFixed(2) : undefined);
    emit({
      bench: 'native-summary',
      config,
      native_tokens_per_s: nat.tokens_per_s,
      vs_wasm: ratio(tr('wasm'), 'tokens_per_s'),
      vs_cpu_js: ratio(tr('cpu'), 'tokens_per_s'),
      vs_torch_1thread: ratio(torch1, 'tokens_per_s'),
      vs_torch_best_interleaved: h2h?.moecat_vs_torch_best,
      vs_torch_2threads: ratio(torch2, 'tokens_per_s'),
      vs_wasm_cpu_time: ratio(tr('wasm'), 'tokens_per_cpu_s'),
      vs_cpu_js_cpu_time: ratio(tr('cpu'), 'tokens_per_cpu_s'),
      sgemm_peak_gflops: peak,
      achieved_gflops: nat.achieved_gflops,
      share_of_sgemm_peak: peak ? +((nat.achieved_gflops as number) / peak).toFixed(3) : undefined,
      // The same FLOPs over the interleaved rounds' median step (steadier than one run's).
      share_of_sgemm_peak_interleaved: peak && h2h ? +(((nat.matmul_gflop_per_step as number) * 1e3) / (h2h.moecat_step_ms as number) / peak).toFixed(3) : undefined,
      torch_share_of_sgemm_peak: peak && torch1 ? +((torch1.achieved_gflops as number) / peak).toFixed(3) : undefined,
    });
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const ci = args.indexOf('--child');
  if (ci >= 0) {
    const task = JSON.parse(args[ci + 1]) as ChildTask;
    if (task.kind === 'sgemm') await childSgemm(task);
    else await childTrain(task);
    return;
  }
  const quick = args.includes('--quick');
  const ct = coreType(args);
  childEnv = ct ? { ...process.env, OPENBLAS_CORETYPE: ct } : process.env;
  const only = args.filter((a, i) => !a.startsWith('--') && args[i - 1] !== '--coretype');
  const want = (k: string) => only.length === 0 || only.includes(k);
  const native = loadNativeKernels({ register: false });
  const variants = VARIANTS.filter((v) => v !== 'cpu+native' || native.loaded);
  if (!native.loaded) emit({ bench: 'native-errors', task: 'load', reason: native.reason });
  if (want('sgemm')) for (const v of variants) runChild({ kind: 'sgemm', variant: v, quick });
  if (want('train')) {
    for (const config of CONFIGS) {
      for (const v of variants) {
        const slow = v === 'cpu';
        runChild({ kind: 'train', variant: v, config, steps: quick || slow ? 3 : 7 });
      }
    }
  }
  if (want('torch')) runTorch(quick);
  if (want('levers') && native.loaded) runLevers(quick);
  if (want('h2h') && native.loaded) runHeadToHead(quick);
  summary();
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);

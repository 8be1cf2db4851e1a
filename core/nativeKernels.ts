/**
 * Native kernels for tfjs' `cpu` backend (issue 14; TFJS-NOTES "Speed of the portable
 * backends"). An optional N-API addon (native/, built by `node native/build.js` when OpenBLAS is
 * installed) provides sgemm through OpenBLAS plus C loops for the element-wise, reduction and
 * data-movement kernels that dominate a training step on `cpu`. `loadNativeKernels()` registers
 * them in tfjs' kernel registry for backend `cpu`, replacing the JS kernels; every replacement
 * falls back to the original JS kernel for inputs it does not handle (other dtypes, complex
 * numbers, unusual attributes). When the addon file is absent it reports why and changes nothing.
 *
 * Numerics (see native/moecat_native.c): element-wise +, -, *, /, copies, gathers, scatters,
 * sums and softmax reproduce the JS kernels' bits (same operations, same order, double
 * accumulators where JS has them). Transcendentals (exp, log, sigmoid, tanh) round the same
 * double expression but libm and V8 may differ in the last double bit, so rarely 1 float ulp.
 * BatchMatMul sums in OpenBLAS' blocked order: within float32 rounding of the JS result, not
 * bitwise equal. Every kernel is deterministic run to run. OpenBLAS runs on one thread unless
 * asked (MOECAT_BLAS_THREADS): its threaded path sums in a different order, so the thread count
 * is part of a run's reproducibility key (see blasPolicy).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { BufferPool, PoolStats } from './bufferPool';
import { COMBINE_GRAD_KERNEL, COMBINE_KERNEL, EXPERTS_GRAD_KERNEL, EXPERTS_KERNEL, KernelHelpers, combineGradKernel, combineKernel, expertsGradKernel, expertsKernel } from './moeKernels';

type TensorInfo = tf.TensorInfo;
type KernelFunc = tf.KernelFunc;
type KernelArgs = Parameters<KernelFunc>[0];
type KernelOut = TensorInfo | TensorInfo[];

/** The addon's exports (native/moecat_native.c). */
export interface NativeAddon {
  setThreads(n: number): void;
  blasInfo(): { corename: string; threads: number; config: string };
  sgemm(a: Float32Array, b: Float32Array, c: Float32Array, batch: number, batchA: number, batchB: number, M: number, N: number, K: number, transA: number, transB: number, threads: number): void;
  binary(op: number, a: Float32Array, aStrides: Int32Array, b: Float32Array, bStrides: Int32Array, out: Float32Array, shape: Int32Array): void;
  unary(op: number, x: Float32Array, out: Float32Array): void;
  reduce(op: number, x: Float32Array, out: Float32Array, outer: number, inner: number): void;
  softmax(x: Float32Array, out: Float32Array, rows: number, cols: number): void;
  copy(src: Float32Array, srcOffset: number, srcStrides: Int32Array, dst: Float32Array, dstOffset: number, dstStrides: Int32Array, shape: Int32Array): void;
  transpose2d(src: Float32Array, dst: Float32Array, batch: number, rows: number, cols: number): void;
  gatherRows(x: Float32Array, idx: Int32Array, out: Float32Array, rowSize: number, nRows: number, outer: number): void;
  scatterAddRows(updates: Float32Array, idx: Int32Array, out: Float32Array, rowSize: number, nRows: number): void;
  /** glibc mallopt(M_MMAP_THRESHOLD / M_TRIM_THRESHOLD); false where libc is not glibc. */
  tuneMalloc?(mmapThreshold: number, trimThreshold: number): boolean;
  crossEntropy?(z: Float32Array, targets: Int32Array, weights: Float32Array, lse: Float32Array, rows: number, cols: number): number;
  crossEntropyGrad?(z: Float32Array, targets: Int32Array, weights: Float32Array, lse: Float32Array, dy: number, out: Float32Array, rows: number, cols: number): void;
  softmaxFused?(x: Float32Array, y: Float32Array, rows: number, cols: number): void;
  softmaxFusedGrad?(y: Float32Array, dy: Float32Array, dx: Float32Array, rows: number, cols: number): void;
  rmsNorm?(x: Float32Array, w: Float32Array, y: Float32Array, rinv: Float32Array, rows: number, cols: number, eps: number): void;
  rmsNormGrad?(x: Float32Array, w: Float32Array, rinv: Float32Array, dy: Float32Array, dx: Float32Array, dw: Float32Array, rows: number, cols: number): void;
  siluMul?(g: Float32Array, u: Float32Array, out: Float32Array, sig: Float32Array, n: number): void;
  siluMulGrad?(g: Float32Array, u: Float32Array, sig: Float32Array, da: Float32Array, dg: Float32Array, du: Float32Array, n: number): void;
  moeCombine?(src: Float32Array, slot: Int32Array, gates: Float32Array, out: Float32Array, T: number, K: number, d: number): void;
  moeCombineGrad?(src: Float32Array, slot: Int32Array, gates: Float32Array, dy: Float32Array, dsrc: Float32Array, dgates: Float32Array, T: number, K: number, d: number): void;
  /** One AdamW update over slices (trainer/adamw.ts); absent in addons built before it existed. */
  adamw?(params: Float32Array, grads: Float32Array, m: Float32Array, v: Float32Array, offsets: Int32Array, sizes: Int32Array, lrs: Float64Array, wds: Float64Array, b1: number, b2: number, c1: number, c2: number, eps: number, gradScale: number, threads: number): void;
}

export interface NativeLoadOptions {
  /** Path of the addon (default: native/build/Release/moecat_native.node at the repo root, or env MOECAT_NATIVE_ADDON). */
  addonPath?: string;
  /** Register the kernels (default true); false only loads and reports. */
  register?: boolean;
  /** Most OpenBLAS threads a matMul may use (default 1, env MOECAT_BLAS_THREADS): changes the bits of large products. */
  threads?: number;
  /** Use several OpenBLAS threads only for products of at least this many FLOPs (default 1e9, env MOECAT_BLAS_MT_MIN_FLOPS). */
  mtMinFlops?: number;
  /** Register only these kernels (default: all of NATIVE_KERNELS). */
  kernels?: string[];
  /** Size cap of the output-buffer pool in MiB (default a quarter of RAM, at most 4096; env MOECAT_POOL_MB); 0 turns it off. */
  poolMb?: number;
}

export interface NativeLoadResult {
  loaded: boolean;
  /** Why the addon is not in use (absent, disabled, failed to load). */
  reason?: string;
  /** Kernel names now served natively on `cpu` (empty when not registered). */
  kernels: string[];
  addonPath: string;
  /** OpenBLAS' selected core type, the most threads a matMul may use, and the size from which it does. */
  blas?: { corename: string; threads: number; mtMinFlops: number };
}

const ADDON_REL = path.join('native', 'build', 'Release', 'moecat_native.node');

/** The addon next to the compiled file (dist/core -> ../../native) or the source (core -> ../native). */
export function defaultAddonPath(): string {
  if (process.env.MOECAT_NATIVE_ADDON) return path.resolve(process.env.MOECAT_NATIVE_ADDON);
  const candidates = [path.resolve(__dirname, '..', '..', ADDON_REL), path.resolve(__dirname, '..', ADDON_REL)];
  return candidates.find((p) => fs.existsSync(p)) ?? candidates[0];
}

/**
 * OpenBLAS threading policy. Default: one thread, always. Two reasons, both measured:
 *  - bits: OpenBLAS 0.3.21's threaded sgemm sums some products in a different order than its
 *    single-threaded path (1 vs 2 threads differ in the last bits at 1024x192x2048), so a thread
 *    count that followed the machine's core count would break "same config + seed + backend,
 *    same bits" across machines. For a fixed thread count results are reproducible (tested).
 *  - speed: waking a second thread costs ~0.1 ms, far more on a busy 2-core machine; every
 *    matMul of configs/tiny and configs/small (< 1 GFLOP each) ran as fast or faster on one.
 * Opt in with `threads` / env MOECAT_BLAS_THREADS=n: products of at least `mtMinFlops` (default
 * 1e9, env MOECAT_BLAS_MT_MIN_FLOPS) then use n threads; that choice is part of a run's
 * reproducibility key, like the backend.
 */
const DEFAULT_MT_MIN_FLOPS = 1e9;
const blasPolicy = { maxThreads: 1, mtMinFlops: DEFAULT_MT_MIN_FLOPS };
/** OpenBLAS threads for a product of this many FLOPs: maxThreads from mtMinFlops, else 1. */
const threadsFor = (flops: number): number => (flops >= blasPolicy.mtMinFlops ? blasPolicy.maxThreads : 1);

/**
 * Output buffers of the native kernels come from a pool that recycles the buffers of disposed
 * tensors (core/bufferPool.ts). Size cap: env MOECAT_POOL_MB (default: a quarter of RAM, at most
 * 4 GiB); 0 turns it off. The pool holds about one step's peak of activations and gradients
 * (configs/small: 1.15 GB); a cap below that drops buffers and brings the GC back.
 */
const DEFAULT_POOL_MB = Math.min(4096, Math.floor(os.totalmem() / 4 / 2 ** 20));
let pool: BufferPool | null = null;
let detachPool: (() => void) | null = null;
const alloc = (n: number): Float32Array => (pool ? pool.take(n) : new Float32Array(n));
const allocZeroed = (n: number): Float32Array => (pool ? pool.takeZeroed(n) : new Float32Array(n));

/**
 * Copies a float32 tensor's values into dst at offset. On the cpu backend it reads the backend's
 * own array (one copy, no allocation: dataSync() would copy a pooled buffer first); elsewhere it
 * falls back to dataSync().
 */
export function readInto(t: tf.Tensor, dst: Float32Array, offset: number): void {
  if (t.dtype === 'float32' && tf.getBackend() === 'cpu') {
    const b = tf.backend() as unknown as CpuBackendLike & { data: { has(id: object): boolean } };
    if (b.data?.has?.(t.dataId)) {
      const v = f32(b, t);
      if (v && v.length === t.size) {
        dst.set(v, offset);
        return;
      }
    }
  }
  dst.set(t.dataSync() as Float32Array, offset);
}

/** Counters of the output-buffer pool, or null when it is off. */
export function nativePoolStats(): PoolStats | null {
  return pool?.snapshot() ?? null;
}

function attachPool(opts: NativeLoadOptions): void {
  if (pool) return;
  const envMb = Number(process.env.MOECAT_POOL_MB);
  const mb = opts.poolMb ?? (process.env.MOECAT_POOL_MB !== undefined && Number.isFinite(envMb) && envMb >= 0 ? envMb : DEFAULT_POOL_MB);
  if (!(mb > 0)) return;
  const backend = tf.findBackend('cpu') as unknown as Parameters<BufferPool['attach']>[0] | null;
  if (!backend || typeof backend.readSync !== 'function' || !backend.data) return;
  pool = new BufferPool(mb * 2 ** 20);
  detachPool = pool.attach(backend);
}

/**
 * Keeps large freed blocks mapped (native/moecat_native.c tuneMalloc): 1 GiB mmap threshold,
 * 2 GiB trim threshold. Once per process; env MOECAT_MALLOC_TUNE=0 leaves glibc's defaults.
 */
let mallocTuned = false;
function tuneMalloc(m: NativeAddon): void {
  if (mallocTuned || process.env.MOECAT_MALLOC_TUNE === '0' || !m.tuneMalloc) return;
  mallocTuned = m.tuneMalloc(2 ** 30, 2 ** 31 - 1);
}

let addon: NativeAddon | null = null;
let addonFrom = '';
const originals = new Map<string, tf.KernelConfig>();
/** Fused kernels (no tfjs original) registered on `cpu`. */
const fused = new Set<string>();

/** The loaded addon, or null. */
export function nativeAddon(): NativeAddon | null {
  return addon;
}

/** Names of the kernels currently served natively on `cpu` (replaced and fused ones). */
export function nativeKernelNames(): string[] {
  return [...originals.keys(), ...fused];
}

/**
 * OpenBLAS reads OPENBLAS_CORETYPE once, when the library loads. Debian's build misdetects
 * recent AVX-512 CPUs (Zen 4/5 come up as Haswell); SkylakeX kernels measured 2x faster there.
 */
function pickCoreType(): void {
  if (process.env.OPENBLAS_CORETYPE || process.platform !== 'linux' || process.arch !== 'x64') return;
  try {
    const flags = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1] ?? '';
    if (/\bavx512f\b/.test(flags) && /\bavx512bw\b/.test(flags) && /\bavx512vl\b/.test(flags)) process.env.OPENBLAS_CORETYPE = 'SkylakeX';
  } catch {
    /* leave OpenBLAS' own detection */
  }
}

function loadAddon(p: string): NativeAddon {
  if (addon && addonFrom === p) return addon;
  pickCoreType();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const m = require(p) as NativeAddon;
  addon = m;
  addonFrom = p;
  return m;
}

/**
 * Loads the addon and registers its kernels on `cpu`. Safe to call repeatedly; never throws:
 * a missing or broken addon gives `{ loaded: false, reason }` and leaves the JS kernels in place.
 */
export function loadNativeKernels(opts: NativeLoadOptions = {}): NativeLoadResult {
  const addonPath = opts.addonPath ? path.resolve(opts.addonPath) : defaultAddonPath();
  const fail = (reason: string): NativeLoadResult => ({ loaded: false, reason, kernels: [], addonPath });
  if (process.env.MOECAT_NATIVE === '0') return fail('disabled by MOECAT_NATIVE=0');
  if (!fs.existsSync(addonPath)) return fail(`addon not built: ${addonPath} does not exist (install libopenblas-dev, then run node native/build.js)`);
  let m: NativeAddon;
  try {
    m = loadAddon(addonPath);
  } catch (e) {
    return fail(`addon failed to load: ${(e as Error).message.split('\n')[0]}`);
  }
  const envThreads = Number(process.env.MOECAT_BLAS_THREADS);
  const threads = opts.threads ?? (Number.isInteger(envThreads) && envThreads > 0 ? envThreads : 1);
  blasPolicy.maxThreads = Number.isInteger(threads) && threads > 0 ? threads : 1;
  const mt = Number(process.env.MOECAT_BLAS_MT_MIN_FLOPS);
  blasPolicy.mtMinFlops = opts.mtMinFlops ?? (Number.isFinite(mt) && mt > 0 ? mt : DEFAULT_MT_MIN_FLOPS);
  m.setThreads(blasPolicy.maxThreads);
  const blas = { corename: m.blasInfo().corename, threads: blasPolicy.maxThreads, mtMinFlops: blasPolicy.mtMinFlops };
  if (opts.register === false) return { loaded: true, kernels: [], addonPath, blas };
  const wanted = opts.kernels ?? Object.keys(NATIVE_KERNELS);
  for (const name of wanted) {
    const make = NATIVE_KERNELS[name];
    if (!make) return fail(`unknown native kernel '${name}'`);
    if (!originals.has(name)) {
      const orig = tf.getKernel(name, 'cpu');
      if (!orig) continue; // this tfjs build has no JS kernel to replace
      originals.set(name, orig);
      tf.unregisterKernel(name, 'cpu');
    } else {
      tf.unregisterKernel(name, 'cpu');
    }
    tf.registerKernel({ kernelName: name, backendName: 'cpu', kernelFunc: make(m, originals.get(name)!.kernelFunc) });
  }
  for (const [name, make] of Object.entries(FUSED_KERNELS)) {
    if ((opts.kernels && !wanted.includes(name)) || process.env.MOECAT_NATIVE_FUSED === '0') continue;
    const f = make(m);
    if (!f || tf.getKernel(name, 'cpu')) continue;
    tf.registerKernel({ kernelName: name, backendName: 'cpu', kernelFunc: f });
    fused.add(name);
  }
  attachPool(opts);
  tuneMalloc(m);
  return { loaded: true, kernels: nativeKernelNames(), addonPath, blas };
}

/** Restores tfjs' JS kernels on `cpu` (the addon stays loaded). */
export function unloadNativeKernels(): void {
  for (const [name, orig] of originals) {
    tf.unregisterKernel(name, 'cpu');
    tf.registerKernel(orig);
  }
  originals.clear();
  for (const name of fused) tf.unregisterKernel(name, 'cpu');
  fused.clear();
  detachPool?.();
  detachPool = null;
  pool = null;
}

// ---------------------------------------------------------------------------------- helpers

interface CpuBackendLike {
  data: { get(dataId: object): { values?: unknown } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.BackendValues): TensorInfo;
}

function be(args: KernelArgs): CpuBackendLike {
  return args.backend as CpuBackendLike;
}

/** The float32 values of a tensor, or null when it is not a plain float32 tensor. */
function f32(b: CpuBackendLike, t: TensorInfo | undefined): Float32Array | null {
  if (!t || t.dtype !== 'float32') return null;
  const v = b.data.get(t.dataId)?.values;
  return v instanceof Float32Array ? v : null;
}

function i32(b: CpuBackendLike, t: TensorInfo | undefined): Int32Array | null {
  if (!t || t.dtype !== 'int32') return null;
  const v = b.data.get(t.dataId)?.values;
  return v instanceof Int32Array ? v : null;
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

function stridesOf(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/**
 * Drops unit dims and merges dims that are contiguous in every operand, so the C loops see the
 * fewest, longest rows. `strides` holds one stride array per operand.
 */
function collapse(shape: number[], strides: number[][]): { shape: number[]; strides: number[][] } {
  const sh: number[] = [];
  const st: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const k = sh.length - 1;
    if (k >= 0 && strides.every((s, o) => st[o][k] === s[d] * shape[d])) {
      sh[k] *= shape[d];
      strides.forEach((s, o) => (st[o][k] = s[d]));
    } else {
      sh.push(shape[d]);
      strides.forEach((s, o) => st[o].push(s[d]));
    }
  }
  if (sh.length === 0) return { shape: [1], strides: strides.map(() => [1]) };
  return { shape: sh, strides: st };
}

const I = (xs: number[]) => Int32Array.from(xs);

/** Strided copy of `shape` elements from src to dst (dims collapsed first). */
function copyStrided(m: NativeAddon, src: Float32Array, so: number, ss: number[], dst: Float32Array, dof: number, ds: number[], shape: number[]): void {
  if (size(shape) === 0) return;
  const c = collapse(shape, [ss, ds]);
  if (c.shape.length > 8) throw new Error('moecat native copy: rank > 8 after collapsing');
  m.copy(src, so, I(c.strides[0]), dst, dof, I(c.strides[1]), I(c.shape));
}

/** x permuted by perm into a new contiguous array. */
function transposeValues(m: NativeAddon, x: Float32Array, shape: number[], perm: number[]): { values: Float32Array; shape: number[] } {
  const outShape = perm.map((p) => shape[p]);
  const out = alloc(x.length);
  const xs = stridesOf(shape);
  const r = perm.length;
  // Fast path: swap of the last two axes with leading axes in place.
  if (r >= 2 && perm[r - 2] === r - 1 && perm[r - 1] === r - 2 && perm.slice(0, r - 2).every((p, i) => p === i)) {
    m.transpose2d(x, out, size(shape.slice(0, r - 2)), shape[r - 2], shape[r - 1]);
  } else {
    copyStrided(m, x, 0, perm.map((p) => xs[p]), out, 0, stridesOf(outShape), outShape);
  }
  return { values: out, shape: outShape };
}

// ---------------------------------------------------------------------------------- kernels

type Make = (m: NativeAddon, fallback: KernelFunc) => KernelFunc;

/** Wraps an implementation that returns null for inputs it leaves to the JS kernel. */
function kernel(impl: (m: NativeAddon, args: KernelArgs) => KernelOut | null): Make {
  return (m, fallback) => (args) => impl(m, args) ?? fallback(args);
}

const batchMatMul = kernel((m, args) => {
  const b = be(args);
  const { a: A, b: B } = args.inputs as { a: TensorInfo; b: TensorInfo };
  const av = f32(b, A);
  const bv = f32(b, B);
  if (!av || !bv) return null;
  const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
  const ra = A.shape.length;
  const rb = B.shape.length;
  const M = transposeA ? A.shape[ra - 1] : A.shape[ra - 2];
  const K = transposeA ? A.shape[ra - 2] : A.shape[ra - 1];
  const Kb = transposeB ? B.shape[rb - 1] : B.shape[rb - 2];
  const N = transposeB ? B.shape[rb - 2] : B.shape[rb - 1];
  if (K !== Kb) return null; // let the JS kernel raise its error
  const outer = tf.broadcast_util.assertAndGetBroadcastShape(A.shape.slice(0, -2), B.shape.slice(0, -2));
  const batchA = size(A.shape.slice(0, -2));
  const batchB = size(B.shape.slice(0, -2));
  const batch = Math.max(batchA, batchB);
  const out = alloc(batch * M * N);
  const threads = threadsFor(2 * M * N * K);
  if (batch > 0) m.sgemm(av, bv, out, batch, Math.max(1, batchA), Math.max(1, batchB), M, N, K, transposeA ? 1 : 0, transposeB ? 1 : 0, threads);
  return b.makeTensorInfo([...outer, M, N], 'float32', out);
});

const BIN = { Add: 0, Sub: 1, Multiply: 2, RealDiv: 3, SquaredDifference: 6 } as const;

function binaryKernel(op: number): Make {
  return kernel((m, args) => {
    const b = be(args);
    const { a: A, b: B } = args.inputs as { a: TensorInfo; b: TensorInfo };
    const av = f32(b, A);
    const bv = f32(b, B);
    if (!av || !bv) return null;
    const outShape = tf.broadcast_util.assertAndGetBroadcastShape(A.shape, B.shape);
    const n = size(outShape);
    const out = alloc(n);
    if (n === 0) return b.makeTensorInfo(outShape, 'float32', out);
    const R = outShape.length;
    const bstr = (shape: number[]) => {
      const s = stridesOf(shape);
      const off = R - shape.length;
      return outShape.map((_, d) => (d < off || shape[d - off] === 1 ? 0 : s[d - off]));
    };
    const c = collapse(outShape, [bstr(A.shape), bstr(B.shape)]);
    if (c.shape.length > 8) return null;
    m.binary(op, av, I(c.strides[0]), bv, I(c.strides[1]), out, I(c.shape));
    return b.makeTensorInfo(outShape, 'float32', out);
  });
}

const UN = { Exp: 0, Sigmoid: 1, Rsqrt: 2, Sqrt: 3, Log: 4, Neg: 5, Square: 6, Abs: 8, Tanh: 9 } as const;

function unaryKernel(op: number): Make {
  return kernel((m, args) => {
    const b = be(args);
    const { x } = args.inputs as { x: TensorInfo };
    const xv = f32(b, x);
    if (!xv) return null;
    const out = alloc(xv.length);
    m.unary(op, xv, out);
    return b.makeTensorInfo(x.shape.slice(), 'float32', out);
  });
}

const softmax = kernel((m, args) => {
  const b = be(args);
  const { logits } = args.inputs as { logits: TensorInfo };
  const xv = f32(b, logits);
  const r = logits.shape.length;
  const { dim } = args.attrs as unknown as { dim: number };
  if (!xv || r === 0 || !(dim === -1 || dim === r - 1)) return null;
  const cols = logits.shape[r - 1];
  const out = alloc(xv.length);
  if (cols > 0) m.softmax(xv, out, xv.length / cols, cols);
  return b.makeTensorInfo(logits.shape.slice(), 'float32', out);
});

const RED = { Sum: 0, Max: 1, Min: 2, Mean: 3 } as const;

/** Sum/Mean/Max/Min over any axes: transpose the axes innermost (as the JS kernels do), reduce rows. */
function reduceKernel(kind: keyof typeof RED): Make {
  return kernel((m, args) => {
    const b = be(args);
    const { x } = args.inputs as { x: TensorInfo };
    let xv = f32(b, x);
    if (!xv) return null;
    let scratch: Float32Array | null = null;
    const attrs = args.attrs as unknown as { axis?: number | number[] | null; reductionIndices?: number | number[] | null; keepDims: boolean };
    const axisAttr = kind === 'Max' ? attrs.reductionIndices : attrs.axis;
    const r = x.shape.length;
    // null/undefined means every axis (tfjs' parseAxisParam).
    const axes = tf.util.parseAxisParam(axisAttr as number | number[], x.shape);
    let shape = x.shape.slice();
    const perm = tf.backend_util.getAxesPermutation(axes, r);
    if (perm != null) {
      const t = transposeValues(m, xv, shape, perm);
      xv = scratch = t.values;
      shape = t.shape;
    }
    const inner = size(axes.map((a) => x.shape[a]));
    const [outShape] = tf.backend_util.computeOutAndReduceShapes(shape, tf.backend_util.getInnerMostAxes(axes.length, r));
    const outer = size(outShape);
    if (inner === 0 || (kind !== 'Sum' && kind !== 'Mean' && outer === 0)) {
      if (scratch) pool?.give(scratch);
      return null;
    }
    const out = alloc(outer);
    if (kind === 'Mean') {
      // JS Mean divides every element by the count in float32, then sums in double.
      const scaled = alloc(xv.length);
      m.binary(RED_DIV, xv, I([1]), Float32Array.of(inner), I([0]), scaled, I([xv.length]));
      m.reduce(RED.Sum, scaled, out, outer, inner);
      pool?.give(scaled);
    } else {
      m.reduce(RED[kind], xv, out, outer, inner);
    }
    if (scratch) pool?.give(scratch);
    const finalShape = attrs.keepDims ? tf.backend_util.expandShapeToKeepDim(outShape, axes) : outShape;
    return b.makeTensorInfo(finalShape, 'float32', out);
  });
}
const RED_DIV = BIN.RealDiv;

const transpose = kernel((m, args) => {
  const b = be(args);
  const { x } = args.inputs as { x: TensorInfo };
  const xv = f32(b, x);
  if (!xv) return null;
  const { perm } = args.attrs as unknown as { perm: number[] };
  const t = transposeValues(m, xv, x.shape, perm);
  return b.makeTensorInfo(t.shape, 'float32', t.values);
});

const slice = kernel((m, args) => {
  const b = be(args);
  const { x } = args.inputs as { x: TensorInfo };
  const xv = f32(b, x);
  if (!xv) return null;
  const { begin, size: sz } = args.attrs as unknown as { begin: number | number[]; size: number | number[] };
  const [bg, s] = tf.slice_util.parseSliceParams(x, begin, sz);
  tf.slice_util.assertParamsValid(x, bg, s);
  const out = alloc(size(s));
  const xs = stridesOf(x.shape);
  copyStrided(m, xv, bg.reduce((acc, v, i) => acc + v * xs[i], 0), xs, out, 0, stridesOf(s), s);
  return b.makeTensorInfo(s, 'float32', out);
});

const concat = kernel((m, args) => {
  const b = be(args);
  const inputs = Object.values(args.inputs) as TensorInfo[];
  if (inputs.length === 0) return null;
  const vals = inputs.map((t) => f32(b, t));
  if (vals.some((v) => v === null)) return null;
  const { axis } = args.attrs as unknown as { axis: number };
  const ax = tf.util.parseAxisParam(axis, inputs[0].shape)[0];
  const shapes = inputs.map((t) => t.shape);
  tf.backend_util.assertParamsConsistent(shapes, ax);
  const outShape = tf.backend_util.computeOutShape(shapes, ax);
  const out = alloc(size(outShape));
  const os = stridesOf(outShape);
  let at = 0;
  inputs.forEach((t, i) => {
    copyStrided(m, vals[i]!, 0, stridesOf(t.shape), out, at * os[ax], os, t.shape);
    at += t.shape[ax];
  });
  return b.makeTensorInfo(outShape, 'float32', out);
});

const splitV = kernel((m, args) => {
  const b = be(args);
  const { x } = args.inputs as { x: TensorInfo };
  const xv = f32(b, x);
  if (!xv) return null;
  const { numOrSizeSplits, axis } = args.attrs as unknown as { numOrSizeSplits: number | number[]; axis: number };
  const ax = tf.util.parseAxisParam(axis, x.shape)[0];
  const sizes = tf.backend_util.prepareSplitSize(x, numOrSizeSplits, ax);
  const xs = stridesOf(x.shape);
  let at = 0;
  return sizes.map((s) => {
    const shape = x.shape.slice();
    shape[ax] = s;
    const out = alloc(size(shape));
    copyStrided(m, xv, at * xs[ax], xs, out, 0, stridesOf(shape), shape);
    at += s;
    return b.makeTensorInfo(shape, 'float32', out);
  });
});

const padV2 = kernel((m, args) => {
  const b = be(args);
  const { x } = args.inputs as { x: TensorInfo };
  const xv = f32(b, x);
  if (!xv) return null;
  const { paddings, constantValue } = args.attrs as unknown as { paddings: [number, number][]; constantValue: number };
  const outShape = x.shape.map((d, i) => paddings[i][0] + d + paddings[i][1]);
  const out = alloc(size(outShape));
  out.fill(constantValue);
  const os = stridesOf(outShape);
  copyStrided(m, xv, 0, stridesOf(x.shape), out, paddings.reduce((acc, p, i) => acc + p[0] * os[i], 0), os, x.shape);
  return b.makeTensorInfo(outShape, 'float32', out);
});

const tile = kernel((m, args) => {
  const b = be(args);
  const { x } = args.inputs as { x: TensorInfo };
  const xv = f32(b, x);
  if (!xv) return null;
  const { reps } = args.attrs as unknown as { reps: number[] };
  const outShape = x.shape.map((d, i) => d * reps[i]);
  const out = alloc(size(outShape));
  if (out.length === 0) return b.makeTensorInfo(outShape, 'float32', out);
  // One strided copy over [reps..., shape...] dims: rep dim i steps by shape[i] output rows.
  const os = stridesOf(outShape);
  const xs = stridesOf(x.shape);
  const dims = [...reps, ...x.shape];
  const srcStrides = [...reps.map(() => 0), ...xs];
  const dstStrides = [...os.map((s, i) => s * x.shape[i]), ...os];
  if (collapse(dims, [srcStrides, dstStrides]).shape.length > 8) return null;
  copyStrided(m, xv, 0, srcStrides, out, 0, dstStrides, dims);
  return b.makeTensorInfo(outShape, 'float32', out);
});

const gatherV2 = kernel((m, args) => {
  const b = be(args);
  const { x, indices } = args.inputs as { x: TensorInfo; indices: TensorInfo };
  const xv = f32(b, x);
  const iv = i32(b, indices);
  const { axis, batchDims } = args.attrs as unknown as { axis: number; batchDims?: number };
  if (!xv || !iv || (batchDims ?? 0) !== 0) return null;
  const ax = tf.util.parseAxisParam(axis, x.shape)[0];
  const dim = x.shape[ax];
  for (let i = 0; i < iv.length; i++) {
    if (!(iv[i] >= 0 && iv[i] <= dim - 1)) throw new Error(`GatherV2: the index value ${iv[i]} is not in [0, ${dim - 1}]`);
  }
  const outer = size(x.shape.slice(0, ax));
  const sliceSize = size(x.shape.slice(ax + 1));
  const outShape = [...x.shape.slice(0, ax), ...indices.shape, ...x.shape.slice(ax + 1)];
  const out = alloc(size(outShape));
  if (out.length > 0) m.gatherRows(xv, iv, out, sliceSize, dim, outer);
  return b.makeTensorInfo(outShape, 'float32', out);
});

const scatterNd = kernel((m, args) => {
  const b = be(args);
  const { indices, updates } = args.inputs as { indices: TensorInfo; updates: TensorInfo };
  const uv = f32(b, updates);
  const iv = i32(b, indices);
  if (!uv || !iv) return null;
  const { shape } = args.attrs as unknown as { shape: number[] };
  const { sliceRank, numUpdates, sliceSize, strides, outputSize } = tf.backend_util.calculateShapes(updates, indices, shape);
  const out = allocZeroed(outputSize);
  if (outputSize === 0 || numUpdates === 0 || sliceSize === 0) return b.makeTensorInfo(shape, 'float32', out);
  const rows = new Int32Array(numUpdates);
  const nRows = outputSize / sliceSize;
  for (let i = 0; i < numUpdates; i++) {
    let flat = 0;
    for (let j = 0; j < sliceRank; j++) flat += iv[i * sliceRank + j] * strides[j];
    if (flat < 0 || flat >= nRows) {
      const index = Array.from(iv.subarray(i * sliceRank, (i + 1) * sliceRank));
      throw new Error(`Invalid indices: ${index} does not index into ${shape}`);
    }
    rows[i] = flat;
  }
  m.scatterAddRows(uv, rows, out, sliceSize, nRows);
  return b.makeTensorInfo(shape, 'float32', out);
});

/** Every kernel this module can replace on `cpu`, by tfjs kernel name. */
export const NATIVE_KERNELS: Record<string, Make> = {
  BatchMatMul: batchMatMul,
  ...Object.fromEntries(Object.entries(BIN).map(([k, op]) => [k, binaryKernel(op)])),
  ...Object.fromEntries(Object.entries(UN).map(([k, op]) => [k, unaryKernel(op)])),
  Softmax: softmax,
  Sum: reduceKernel('Sum'),
  Mean: reduceKernel('Mean'),
  Max: reduceKernel('Max'),
  Min: reduceKernel('Min'),
  Transpose: transpose,
  Slice: slice,
  Concat: concat,
  SplitV: splitV,
  PadV2: padV2,
  Tile: tile,
  GatherV2: gatherV2,
  ScatterNd: scatterNd,
};

// ---------------------------------------------------------------------------------- fused kernels

/** Kernel names of the fused ops model/ops.ts calls when the current backend has them. */
export const CE_KERNEL = 'MoecatCrossEntropy';
export const CE_GRAD_KERNEL = 'MoecatCrossEntropyGrad';

/**
 * Fused weighted cross-entropy (model/ops.ts weightedCrossEntropy): inputs logits [T, V],
 * targets int32 [T], weights [T]; outputs the scalar loss and the row log-sum-exp [T] that the
 * gradient kernel reuses. Replaces oneHot + logSumExp + mul + sum + softmax + sub + 2 mul
 * (two [T, V] one-hot fills among them) with two passes over the logits.
 */
const crossEntropyKernel = (m: NativeAddon): KernelFunc | null =>
  m.crossEntropy
    ? (args) => {
        const b = be(args);
        const { logits, targets, weights } = args.inputs as { logits: TensorInfo; targets: TensorInfo; weights: TensorInfo };
        const z = f32(b, logits);
        const y = i32(b, targets);
        const w = f32(b, weights);
        if (!z || !y || !w) throw new Error(`${CE_KERNEL}: expects float32 logits, int32 targets, float32 weights`);
        const [T, V] = logits.shape;
        const lse = alloc(T);
        const total = m.crossEntropy!(z, y, w, lse, T, V);
        return [b.makeTensorInfo([], 'float32', Float32Array.of(total)), b.makeTensorInfo([T], 'float32', lse)];
      }
    : null;

const crossEntropyGradKernel = (m: NativeAddon): KernelFunc | null =>
  m.crossEntropyGrad
    ? (args) => {
        const b = be(args);
        const { logits, targets, weights, lse, dy } = args.inputs as Record<string, TensorInfo>;
        const z = f32(b, logits);
        const y = i32(b, targets);
        const w = f32(b, weights);
        const l = f32(b, lse);
        const d = f32(b, dy);
        if (!z || !y || !w || !l || !d) throw new Error(`${CE_GRAD_KERNEL}: bad input dtypes`);
        const [T, V] = logits.shape;
        const out = alloc(T * V);
        m.crossEntropyGrad!(z, y, w, l, d[0], out, T, V);
        return b.makeTensorInfo([T, V], 'float32', out);
      }
    : null;

export const SOFTMAX_KERNEL = 'MoecatSoftmax';
export const SOFTMAX_GRAD_KERNEL = 'MoecatSoftmaxGrad';

/** Softmax over the last axis with the fast exp (attention); the gradient kernel takes y and dy. */
const softmaxFusedKernel = (m: NativeAddon): KernelFunc | null =>
  m.softmaxFused
    ? (args) => {
        const b = be(args);
        const { x } = args.inputs as { x: TensorInfo };
        const xv = f32(b, x);
        if (!xv) throw new Error(`${SOFTMAX_KERNEL}: expects float32`);
        const d = lastDim(x);
        const y = alloc(xv.length);
        if (xv.length > 0) m.softmaxFused!(xv, y, xv.length / d, d);
        return b.makeTensorInfo(x.shape.slice(), 'float32', y);
      }
    : null;

const softmaxFusedGradKernel = (m: NativeAddon): KernelFunc | null =>
  m.softmaxFusedGrad
    ? (args) => {
        const b = be(args);
        const { y, dy } = args.inputs as { y: TensorInfo; dy: TensorInfo };
        const [yv, gv] = [f32(b, y), f32(b, dy)];
        if (!yv || !gv) throw new Error(`${SOFTMAX_GRAD_KERNEL}: expects float32`);
        const d = lastDim(y);
        const dx = alloc(yv.length);
        if (yv.length > 0) m.softmaxFusedGrad!(yv, gv, dx, yv.length / d, d);
        return b.makeTensorInfo(y.shape.slice(), 'float32', dx);
      }
    : null;

export const RMS_KERNEL = 'MoecatRmsNorm';
export const RMS_GRAD_KERNEL = 'MoecatRmsNormGrad';
export const SILU_MUL_KERNEL = 'MoecatSiluMul';
export const SILU_MUL_GRAD_KERNEL = 'MoecatSiluMulGrad';
export { COMBINE_GRAD_KERNEL, COMBINE_KERNEL, EXPERTS_GRAD_KERNEL, EXPERTS_KERNEL };

const lastDim = (t: TensorInfo) => t.shape[t.shape.length - 1];

/** RMSNorm over the last axis: inputs x, w [d]; attr eps; outputs y and 1/rms per row. */
const rmsNormKernel = (m: NativeAddon): KernelFunc | null =>
  m.rmsNorm
    ? (args) => {
        const b = be(args);
        const { x, w } = args.inputs as { x: TensorInfo; w: TensorInfo };
        const xv = f32(b, x);
        const wv = f32(b, w);
        const d = lastDim(x);
        if (!xv || !wv || wv.length !== d) throw new Error(`${RMS_KERNEL}: expects float32 x [..., d] and w [d]`);
        const rows = xv.length / d;
        const y = alloc(xv.length);
        const rinv = alloc(rows);
        m.rmsNorm!(xv, wv, y, rinv, rows, d, (args.attrs as unknown as { eps: number }).eps);
        return [b.makeTensorInfo(x.shape.slice(), 'float32', y), b.makeTensorInfo([rows], 'float32', rinv)];
      }
    : null;

const rmsNormGradKernel = (m: NativeAddon): KernelFunc | null =>
  m.rmsNormGrad
    ? (args) => {
        const b = be(args);
        const { x, w, rinv, dy } = args.inputs as Record<string, TensorInfo>;
        const [xv, wv, rv, gv] = [f32(b, x), f32(b, w), f32(b, rinv), f32(b, dy)];
        if (!xv || !wv || !rv || !gv) throw new Error(`${RMS_GRAD_KERNEL}: bad input dtypes`);
        const d = lastDim(x);
        const dx = alloc(xv.length);
        const dw = alloc(d);
        m.rmsNormGrad!(xv, wv, rv, gv, dx, dw, xv.length / d, d);
        return [b.makeTensorInfo(x.shape.slice(), 'float32', dx), b.makeTensorInfo([d], 'float32', dw)];
      }
    : null;

/** silu(g) * u, the SwiGLU activation: inputs g, u of one shape; outputs it and sigmoid(g). */
const siluMulKernel = (m: NativeAddon): KernelFunc | null =>
  m.siluMul
    ? (args) => {
        const b = be(args);
        const { g, u } = args.inputs as { g: TensorInfo; u: TensorInfo };
        const [gv, uv] = [f32(b, g), f32(b, u)];
        if (!gv || !uv || gv.length !== uv.length) throw new Error(`${SILU_MUL_KERNEL}: expects two float32 tensors of one shape`);
        const out = alloc(gv.length);
        const sig = alloc(gv.length);
        m.siluMul!(gv, uv, out, sig, gv.length);
        return [b.makeTensorInfo(g.shape.slice(), 'float32', out), b.makeTensorInfo(g.shape.slice(), 'float32', sig)];
      }
    : null;

const siluMulGradKernel = (m: NativeAddon): KernelFunc | null =>
  m.siluMulGrad
    ? (args) => {
        const b = be(args);
        const { g, u, sig, dy } = args.inputs as Record<string, TensorInfo>;
        const [gv, uv, sv, av] = [f32(b, g), f32(b, u), f32(b, sig), f32(b, dy)];
        if (!gv || !uv || !sv || !av) throw new Error(`${SILU_MUL_GRAD_KERNEL}: bad input dtypes`);
        const dg = alloc(gv.length);
        const du = alloc(gv.length);
        m.siluMulGrad!(gv, uv, sv, av, dg, du, gv.length);
        return [b.makeTensorInfo(g.shape.slice(), 'float32', dg), b.makeTensorInfo(g.shape.slice(), 'float32', du)];
      }
    : null;

const helpers: KernelHelpers = { alloc, allocZeroed, f32, i32, threadsFor, release: (a) => pool?.give(a) };

/** Names of the fused kernels (registered under new names, not replacing tfjs kernels). */
export const FUSED_KERNEL_NAMES = [
  CE_KERNEL,
  CE_GRAD_KERNEL,
  SOFTMAX_KERNEL,
  SOFTMAX_GRAD_KERNEL,
  RMS_KERNEL,
  RMS_GRAD_KERNEL,
  SILU_MUL_KERNEL,
  SILU_MUL_GRAD_KERNEL,
  EXPERTS_KERNEL,
  EXPERTS_GRAD_KERNEL,
  COMBINE_KERNEL,
  COMBINE_GRAD_KERNEL,
];

const FUSED_KERNELS: Record<string, (m: NativeAddon) => KernelFunc | null> = {
  [CE_KERNEL]: crossEntropyKernel,
  [CE_GRAD_KERNEL]: crossEntropyGradKernel,
  [SOFTMAX_KERNEL]: softmaxFusedKernel,
  [SOFTMAX_GRAD_KERNEL]: softmaxFusedGradKernel,
  [RMS_KERNEL]: rmsNormKernel,
  [RMS_GRAD_KERNEL]: rmsNormGradKernel,
  [SILU_MUL_KERNEL]: siluMulKernel,
  [SILU_MUL_GRAD_KERNEL]: siluMulGradKernel,
  [EXPERTS_KERNEL]: (m) => expertsKernel(m, helpers),
  [EXPERTS_GRAD_KERNEL]: (m) => expertsGradKernel(m, helpers),
  [COMBINE_KERNEL]: (m) => combineKernel(m, helpers),
  [COMBINE_GRAD_KERNEL]: (m) => combineGradKernel(m, helpers),
};

/**
 * Native kernels for tfjs' `cpu` backend (issue 14; TFJS-NOTES "Speed of the portable
 * backends"): loading the addon (native/, built at `npm install` by `node native/build.js`) and
 * registering its kernels in tfjs' kernel registry for backend `cpu`. Replacements fall back
 * to the original JS kernel for inputs they do not handle (other dtypes, complex numbers,
 * unusual attributes). When the addon file is absent it reports why and changes nothing.
 *
 * The kernel families live beside this file (matmul, elementwise, reduce, movement, fused);
 * policy.ts sets threads and the GEMM variant; buffers.ts recycles output buffers. Kernels
 * that serve one part of the model register themselves with registerFusedKernel (the MoE
 * kernels: model/moe/nativeKernels.ts), so core imports nothing from model/.
 *
 * Numerics (native/moecat_native.c): element-wise +, -, *, /, copies, gathers, scatters, sums
 * and softmax reproduce the JS kernels' bits. Transcendentals round the same double
 * expression, but libm and V8 may differ in the last double bit, so rarely 1 float ulp.
 * BatchMatMul follows moecat's GEMM order (one fused multiply-add chain over k per element):
 * within float32 rounding of the JS result, and the same bits on every machine, variant and
 * thread count.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { defaultAddonPath, GemmInfo, NativeAddon, requireAddon } from './addon';
import { attachPool, DEFAULT_POOL_MB, detachBufferPool } from './buffers';
import { BIN, binaryKernel, UN, unaryKernel } from './elementwise';
import * as fusedK from './fused';
import { batchMatMul } from './matmul';
import { concat, gatherV2, padV2, scatterNd, slice, splitV, tile, transpose } from './movement';
import { applyPolicy, NativePolicy } from './policy';
import { reduceKernel, softmax } from './reduce';
import { Make } from './tensors';

export interface NativeLoadOptions extends NativePolicy {
  /** When set, do not load the addon; the string is the reason reported. */
  disabled?: string;
  /** Path of the addon (default: native/build/Release/moecat_native.node at the repo root). */
  addonPath?: string;
  /** Register the kernels (default true); false only loads, applies the policy and reports. */
  register?: boolean;
  /** Register only these kernels (default: all of NATIVE_KERNELS and the fused ones). */
  kernels?: string[];
  /** Size cap of the output-buffer pool in MiB (default a quarter of RAM, at most 4096); 0 turns it off. */
  poolMb?: number;
  /** Register the fused kernels (default true). */
  fused?: boolean;
}

export interface NativeLoadResult {
  loaded: boolean;
  /** Why the addon is not in use (absent, disabled, failed to load, variant not runnable). */
  reason?: string;
  /** True when the caller asked for something this machine cannot do (a forced GEMM variant): an error, not a fallback. */
  fatal?: boolean;
  /** Kernel names now served natively on `cpu` (empty when not registered). */
  kernels: string[];
  addonPath: string;
  /** The GEMM variant in use and the pool's thread count. */
  gemm?: GemmInfo;
}

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

export type MakeFused = (m: NativeAddon) => tf.KernelFunc;

/** Fused kernels (new names, no tfjs original): the ones here plus those registered by model/. */
const FUSED_KERNELS = new Map<string, MakeFused>([
  [fusedK.CE_KERNEL, fusedK.crossEntropyKernel],
  [fusedK.CE_GRAD_KERNEL, fusedK.crossEntropyGradKernel],
  [fusedK.SOFTMAX_KERNEL, fusedK.softmaxFusedKernel],
  [fusedK.SOFTMAX_GRAD_KERNEL, fusedK.softmaxFusedGradKernel],
  [fusedK.RMS_KERNEL, fusedK.rmsNormKernel],
  [fusedK.RMS_GRAD_KERNEL, fusedK.rmsNormGradKernel],
  [fusedK.SILU_MUL_KERNEL, fusedK.siluMulKernel],
  [fusedK.SILU_MUL_GRAD_KERNEL, fusedK.siluMulGradKernel],
]);

/** Names of the fused kernels known so far (built-in and registered). */
export function fusedKernelNames(): string[] {
  return [...FUSED_KERNELS.keys()];
}

const originals = new Map<string, tf.KernelConfig>();
/** Fused kernels registered on `cpu`. */
const fused = new Set<string>();
/** What the last successful registering load asked for (so late registrations follow it). */
let active: { m: NativeAddon; wanted: string[] | null; fused: boolean } | null = null;

function registerFused(m: NativeAddon, name: string, make: MakeFused): void {
  if (fused.has(name) || tf.getKernel(name, 'cpu')) return;
  tf.registerKernel({ kernelName: name, backendName: 'cpu', kernelFunc: make(m) });
  fused.add(name);
}

/**
 * Adds a fused kernel served by the addon (model/ parts register theirs at import). It is
 * registered on `cpu` now when the native kernels are loaded, else at the next load.
 */
export function registerFusedKernel(name: string, make: MakeFused): void {
  FUSED_KERNELS.set(name, make);
  if (active && active.fused && (!active.wanted || active.wanted.includes(name))) registerFused(active.m, name, make);
}

/** Names of the kernels currently served natively on `cpu` (replaced and fused ones). */
export function nativeKernelNames(): string[] {
  return [...originals.keys(), ...fused];
}

/**
 * Loads the addon, applies the policy (threads, GEMM variant) and registers its kernels on
 * `cpu`. Safe to call repeatedly (each call applies its own policy); never throws: a missing or
 * broken addon gives `{ loaded: false, reason }` and leaves the JS kernels in place.
 */
export function loadNativeKernels(opts: NativeLoadOptions = {}): NativeLoadResult {
  const addonPath = opts.addonPath ? path.resolve(opts.addonPath) : defaultAddonPath();
  const fail = (reason: string, fatal = false): NativeLoadResult => ({ loaded: false, reason, kernels: [], addonPath, ...(fatal ? { fatal } : {}) });
  if (opts.disabled) return fail(opts.disabled);
  if (!fs.existsSync(addonPath)) return fail(`addon not built: ${addonPath} does not exist (a C compiler is needed; run node native/build.js)`);
  let m: NativeAddon;
  try {
    m = requireAddon(addonPath);
  } catch (e) {
    return fail(`addon failed to load: ${(e as Error).message.split('\n')[0]}`);
  }
  const gemm = applyPolicy(m, opts);
  if (typeof gemm === 'string') return fail(gemm, true);
  if (opts.register === false) return { loaded: true, kernels: [], addonPath, gemm };
  const wanted = opts.kernels ?? Object.keys(NATIVE_KERNELS);
  for (const name of wanted) {
    const make = NATIVE_KERNELS[name];
    if (!make) {
      if (FUSED_KERNELS.has(name)) continue;
      return fail(`unknown native kernel '${name}'`);
    }
    if (!originals.has(name)) {
      const orig = tf.getKernel(name, 'cpu');
      if (!orig) continue; // this tfjs build has no JS kernel to replace
      originals.set(name, orig);
    }
    tf.unregisterKernel(name, 'cpu');
    tf.registerKernel({ kernelName: name, backendName: 'cpu', kernelFunc: make(m, originals.get(name)!.kernelFunc) });
  }
  const useFused = opts.fused !== false;
  active = { m, wanted: opts.kernels ?? null, fused: useFused };
  if (useFused) for (const [name, make] of FUSED_KERNELS) if (!opts.kernels || wanted.includes(name)) registerFused(m, name, make);
  attachPool(opts.poolMb ?? DEFAULT_POOL_MB);
  return { loaded: true, kernels: nativeKernelNames(), addonPath, gemm };
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
  active = null;
  detachBufferPool();
}

export { nativeAddon, defaultAddonPath, GEMM_ISAS } from './addon';
export type { GemmInfo, GemmIsa, NativeAddon } from './addon';
export { nativePoolStats, readInto } from './buffers';
export { CE_GRAD_KERNEL, CE_KERNEL, RMS_GRAD_KERNEL, RMS_KERNEL, SILU_MUL_GRAD_KERNEL, SILU_MUL_KERNEL, SOFTMAX_GRAD_KERNEL, SOFTMAX_KERNEL } from './fused';
export { nativeAdamw } from './policy';
export type { NativePolicy } from './policy';

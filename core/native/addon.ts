/**
 * The native addon (native/moecat_native.c): its exports, where it lives, and loading it once
 * per process. Nothing here reads the environment: core/backend.ts and cli/ pass the path.
 */
import * as fs from 'fs';
import * as path from 'path';

/** The GEMM variants (native/gemm.h); all give the same bits. */
export const GEMM_ISAS = ['scalar', 'avx2', 'avx512'] as const;
export type GemmIsa = (typeof GEMM_ISAS)[number];

/** The GEMM variant in use, the best this CPU runs, those it runs, and the pool's threads. */
export interface GemmInfo {
  isa: GemmIsa;
  best: GemmIsa;
  supported: GemmIsa[];
  threads: number;
  cores: number;
}

/** The addon's exports. */
export interface NativeAddon {
  /** The pool's thread count for later calls (n < 1: all cores). Never changes a bit. */
  setThreads(n: number): void;
  /** Selects a GEMM variant; false when this CPU lacks it (nothing changes). */
  setIsa(isa: GemmIsa): boolean;
  gemmInfo(): GemmInfo;
  /** Step profile (native/pool.h): CPU ms of the calling thread in jobs more threads would split, since on = 1. */
  poolProfile(on: number): { cpuMs: number; jobs: number };
  /** C[bi] = op(A[bi % batchA])·op(B[bi % batchB]); threads < 1: the pool's count. */
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
  tuneMalloc(mmapThreshold: number, trimThreshold: number): boolean;
  crossEntropy(z: Float32Array, targets: Int32Array, weights: Float32Array, lse: Float32Array, rows: number, cols: number): number;
  crossEntropyGrad(z: Float32Array, targets: Int32Array, weights: Float32Array, lse: Float32Array, dy: number, out: Float32Array, rows: number, cols: number): void;
  softmaxFused(x: Float32Array, y: Float32Array, rows: number, cols: number): void;
  softmaxFusedGrad(y: Float32Array, dy: Float32Array, dx: Float32Array, rows: number, cols: number): void;
  rmsNorm(x: Float32Array, w: Float32Array, y: Float32Array, rinv: Float32Array, rows: number, cols: number, eps: number): void;
  rmsNormGrad(x: Float32Array, w: Float32Array, rinv: Float32Array, dy: Float32Array, dx: Float32Array, dw: Float32Array, rows: number, cols: number): void;
  siluMul(g: Float32Array, u: Float32Array, out: Float32Array, sig: Float32Array, n: number): void;
  siluMulGrad(g: Float32Array, u: Float32Array, sig: Float32Array, da: Float32Array, dg: Float32Array, du: Float32Array, n: number): void;
  /** All FFN experts of a layer (native/experts.c): ws = gate, up, down of expert 0, 1, ...; offsets [N+1]. */
  expertsForward(x: Float32Array, ws: Float32Array[], offsets: Int32Array, y: Float32Array, g: Float32Array, u: Float32Array, sig: Float32Array, a: Float32Array, d: number, hid: number): void;
  expertsBackward(x: Float32Array, ws: Float32Array[], offsets: Int32Array, g: Float32Array, u: Float32Array, sig: Float32Array, a: Float32Array, dy: Float32Array, dx: Float32Array, dws: Float32Array[], da: Float32Array, dg: Float32Array, du: Float32Array, dxu: Float32Array, d: number, hid: number): void;
  moeCombine(src: Float32Array, slot: Int32Array, gates: Float32Array, out: Float32Array, T: number, K: number, d: number): void;
  moeCombineGrad(src: Float32Array, slot: Int32Array, gates: Float32Array, dy: Float32Array, dsrc: Float32Array, dgates: Float32Array, T: number, K: number, d: number): void;
  /** One AdamW update over slices (trainer/adamw.ts); threads < 1: the pool's count. */
  adamw(params: Float32Array, grads: Float32Array, m: Float32Array, v: Float32Array, offsets: Int32Array, sizes: Int32Array, lrs: Float64Array, wds: Float64Array, b1: number, b2: number, c1: number, c2: number, eps: number, gradScale: number, threads: number): void;
}

const ADDON_REL = path.join('native', 'build', 'Release', 'moecat_native.node');

/** The addon next to the compiled file (dist/core/native -> ../../../native) or the source (core/native -> ../../native). */
export function defaultAddonPath(): string {
  const candidates = [path.resolve(__dirname, '..', '..', '..', ADDON_REL), path.resolve(__dirname, '..', '..', ADDON_REL)];
  return candidates.find((p) => fs.existsSync(p)) ?? candidates[0];
}

let addon: NativeAddon | null = null;
let addonFrom = '';

/** Loads the addon at p (once; the same path again returns the loaded module). Throws when it cannot be loaded. */
export function requireAddon(p: string): NativeAddon {
  if (addon && addonFrom === p) return addon;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const m = require(p) as NativeAddon;
  if (typeof m.gemmInfo !== 'function' || typeof m.sgemm !== 'function') throw new Error(`${p} is an addon from an older build (no gemmInfo); rebuild it with node native/build.js`);
  addon = m;
  addonFrom = p;
  return m;
}

/** The loaded addon, or null. */
export function nativeAddon(): NativeAddon | null {
  return addon;
}

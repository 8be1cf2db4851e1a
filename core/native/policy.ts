/**
 * How the addon runs: the pool's thread count, the GEMM variant, glibc's malloc thresholds,
 * and whether AdamW runs in C. None of these changes a bit of any result (threads split output
 * tiles or element ranges; the GEMM variants agree by construction; AdamW in C repeats the JS
 * loop's expressions). Values come typed from the caller: core/backend.ts reads the environment,
 * cli/ the flags and config.
 */
import { GemmInfo, GemmIsa, NativeAddon, nativeAddon } from './addon';

export interface NativePolicy {
  /** Pool threads for products, AdamW and the other threaded kernels (default: all cores). */
  threads?: number;
  /** Force a GEMM variant (default: the fastest this CPU runs). */
  isa?: GemmIsa;
  /** Keep large freed blocks mapped (glibc mallopt; default true). */
  mallocTune?: boolean;
  /** AdamW in C (default true); false runs the JS loop (same bits). */
  adamw?: boolean;
}

let adamwInC = true;
let mallocTuned = false;

/**
 * Applies the policy to the loaded addon. Returns the GEMM state, or a reason string when the
 * forced variant cannot run on this CPU (nothing is changed then).
 */
export function applyPolicy(m: NativeAddon, p: NativePolicy): GemmInfo | string {
  const info = m.gemmInfo();
  const isa = p.isa ?? info.best;
  if (!m.setIsa(isa)) return `this CPU cannot run the ${isa} GEMM variant (it runs: ${info.supported.join(', ')})`;
  m.setThreads(p.threads !== undefined && Number.isInteger(p.threads) && p.threads > 0 ? p.threads : 0);
  adamwInC = p.adamw ?? true;
  // 1 GiB mmap threshold, 2 GiB trim threshold: a training step frees and reallocates the same
  // large ArrayBuffers every step, and each fresh mmap page-faults afresh (10% of a small step).
  if (p.mallocTune !== false && !mallocTuned) mallocTuned = m.tuneMalloc(2 ** 30, 2 ** 31 - 1);
  return m.gemmInfo();
}

/** The addon when AdamW should run in C, else null (trainer/adamw.ts then runs the JS loop). */
export function nativeAdamw(): NativeAddon | null {
  return adamwInC ? nativeAddon() : null;
}

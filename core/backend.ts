/**
 * Compute-backend selection (DESIGN.md section 1; TFJS-NOTES; GPU-NOTES). Order:
 * tensorflow-gpu > webgpu (hardware adapter only) > tensorflow (libtensorflow CPU) > cpu-native
 * > wasm > cpu. `webgpu` (Dawn) takes a software adapter only when named (core/webgpu/).
 * The tfjs-node packages are optional
 * dependencies whose install downloads libtensorflow; where that failed they are simply absent
 * and we fall through. A forced backend that cannot load is an error, never a silent fallback.
 */
import * as tf from '@tensorflow/tfjs';
import { BackendError, errorMessage } from './errors';
import { installWasmGradients } from './wasmGradients';
import { GEMM_ISAS, GemmIsa, loadNativeKernels, NativeLoadOptions, NativeLoadResult } from './native';
import { AdapterSummary, describeAdapter, loadWebgpuBackend } from './webgpu';

/**
 * `cpu-native` is tfjs' cpu backend with the hot kernels replaced by the N-API addon (native/:
 * moecat's own GEMM and thread pool, no BLAS library); it loads where the addon was built (any
 * C compiler). `cpu` is the pure-JS backend.
 */
export const BACKENDS = ['tensorflow-gpu', 'webgpu', 'tensorflow', 'cpu-native', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKENDS)[number];
export type BackendChoice = BackendName | 'auto';

export interface BackendInfo {
  name: BackendName;
  /** tfjs' own name for the active backend (`tensorflow`, `wasm`, `cpu`). */
  tfBackend: string;
  /** Why earlier candidates were skipped (empty when the first choice loaded). */
  skipped: { name: BackendName; reason: string }[];
  /** The native kernel set on `cpu-native` (GEMM variant, threads, kernel names). */
  native?: NativeLoadResult;
  /** The WebGPU adapter on `webgpu` (vendor, architecture, limits). */
  adapter?: AdapterSummary;
}

let native: NativeLoadResult | undefined;
/** The native options of the active backend (environment merged with the caller's). */
let nativeOpts: NativeLoadOptions = {};

/** What callers (cli/) may set on the native kernels; everything else comes from the environment. */
export interface BackendOptions {
  /** Pool threads of the native kernels (default: MOECAT_THREADS, else all cores). Never changes a bit. */
  threads?: number;
}

const positiveInt = (v: string): number | null => (/^[1-9][0-9]*$/.test(v) ? Number(v) : null);

/**
 * The native kernels' options from the environment (the only place in core/ that reads it):
 *   MOECAT_NATIVE=0          do not load the addon
 *   MOECAT_NATIVE_ADDON=path load the addon from elsewhere
 *   MOECAT_ISA=scalar|avx2|avx512  force a GEMM variant (all give the same bits; for tests)
 *   MOECAT_THREADS=n         pool threads (default all cores; never changes a bit)
 *   MOECAT_POOL_MB=n         output-buffer pool cap in MiB (0: off)
 *   MOECAT_MALLOC_TUNE=0, MOECAT_NATIVE_FUSED=0, MOECAT_NATIVE_ADAMW=0  switch a lever off
 * A malformed value is an error naming the variable.
 */
export function nativeOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): NativeLoadOptions {
  const o: NativeLoadOptions = {};
  if (env.MOECAT_NATIVE === '0') o.disabled = 'disabled by MOECAT_NATIVE=0';
  if (env.MOECAT_NATIVE_ADDON) o.addonPath = env.MOECAT_NATIVE_ADDON;
  if (env.MOECAT_ISA !== undefined && env.MOECAT_ISA !== '') {
    if (!(GEMM_ISAS as readonly string[]).includes(env.MOECAT_ISA)) {
      throw new BackendError(`unknown GEMM variant '${env.MOECAT_ISA}'`, { where: 'MOECAT_ISA', hint: `use one of ${GEMM_ISAS.join(', ')}, or unset it for the fastest` });
    }
    o.isa = env.MOECAT_ISA as GemmIsa;
  }
  if (env.MOECAT_THREADS !== undefined && env.MOECAT_THREADS !== '') {
    const n = positiveInt(env.MOECAT_THREADS);
    if (n === null) throw new BackendError(`'${env.MOECAT_THREADS}' is not a thread count`, { where: 'MOECAT_THREADS', hint: 'use a positive integer, or unset it for all cores' });
    o.threads = n;
  }
  if (env.MOECAT_POOL_MB !== undefined && env.MOECAT_POOL_MB !== '') {
    const n = env.MOECAT_POOL_MB === '0' ? 0 : positiveInt(env.MOECAT_POOL_MB);
    if (n === null) throw new BackendError(`'${env.MOECAT_POOL_MB}' is not a size in MiB`, { where: 'MOECAT_POOL_MB', hint: 'use a non-negative integer (0 turns the pool off)' });
    o.poolMb = n;
  }
  if (env.MOECAT_MALLOC_TUNE === '0') o.mallocTune = false;
  if (env.MOECAT_NATIVE_FUSED === '0') o.fused = false;
  if (env.MOECAT_NATIVE_ADAMW === '0') o.adamw = false;
  return o;
}

function checkOptions(opts: BackendOptions): void {
  if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 1)) {
    throw new BackendError(`'${opts.threads}' is not a thread count`, { where: '--threads', hint: 'use a positive integer, or leave it out for all cores' });
  }
}
let adapter: AdapterSummary | undefined;

let active: BackendInfo | null = null;

function tryRequire(mod: string): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require(mod);
}

async function load(name: BackendName, forced: boolean): Promise<void> {
  switch (name) {
    case 'webgpu':
      adapter = await loadWebgpuBackend({ allowSoftware: forced });
      return;
    case 'tensorflow-gpu':
      // The TF runtime reads these once, at load (TFJS-NOTES "Installing").
      process.env.TF_DETERMINISTIC_OPS = '1';
      process.env.TF_CUDNN_DETERMINISTIC = '1';
      tryRequire('@tensorflow/tfjs-node-gpu');
      if (!(await tf.setBackend('tensorflow'))) throw new Error('tfjs-node-gpu loaded but the tensorflow backend did not initialise');
      return;
    case 'tensorflow':
      process.env.TF_DETERMINISTIC_OPS = '1';
      tryRequire('@tensorflow/tfjs-node');
      if (!(await tf.setBackend('tensorflow'))) throw new Error('tfjs-node loaded but the tensorflow backend did not initialise');
      return;
    case 'wasm':
      tryRequire('@tensorflow/tfjs-backend-wasm');
      if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend did not initialise');
      installWasmGradients();
      return;
    case 'cpu-native': {
      const probe = loadNativeKernels({ ...nativeOpts, register: false });
      if (probe.fatal) throw new BackendError(`cpu-native: ${probe.reason}`, { where: 'MOECAT_ISA', hint: 'unset it, or pick a variant this CPU runs' });
      if (!probe.loaded) throw new Error(probe.reason ?? 'native kernels unavailable');
      if (!(await tf.setBackend('cpu'))) throw new Error('the cpu backend did not initialise');
      native = loadNativeKernels(nativeOpts);
      if (!native.loaded) throw new Error(native.reason ?? 'native kernels failed to register');
      return;
    }
    case 'cpu':
      if (!(await tf.setBackend('cpu'))) throw new Error('the cpu backend did not initialise');
      return;
  }
}

/**
 * Selects and initialises a backend. `auto` tries each in order; a named backend must load.
 * Calling again with the same choice returns the active backend.
 */
export async function selectBackend(choice: BackendChoice = 'auto', opts: BackendOptions = {}): Promise<BackendInfo> {
  if (!(choice === 'auto' || (BACKENDS as readonly string[]).includes(choice))) {
    throw new BackendError(`unknown backend '${choice}'`, { where: '--backend', hint: `choose one of auto, ${BACKENDS.join(', ')}` });
  }
  checkOptions(opts);
  nativeOpts = { ...nativeOptionsFromEnv(), ...(opts.threads !== undefined ? { threads: opts.threads } : {}) };
  if (active && (choice === 'auto' || choice === active.name)) {
    if (active.name === 'cpu-native') active.native = native = loadNativeKernels(nativeOpts); // new threads apply
    return active;
  }
  // PROD silences tfjs' console advice (e.g. "install tfjs-node") and skips debug-only checks.
  tf.env().set('PROD', true);
  const candidates: BackendName[] = choice === 'auto' ? [...BACKENDS] : [choice];
  const skipped: { name: BackendName; reason: string }[] = [];
  for (const name of candidates) {
    try {
      await load(name, choice !== 'auto');
      await tf.ready();
      active = { name, tfBackend: tf.getBackend(), skipped, ...(name === 'cpu-native' ? { native } : {}), ...(name === 'webgpu' ? { adapter } : {}) };
      return active;
    } catch (e) {
      if (e instanceof BackendError || choice !== 'auto') {
        if (e instanceof BackendError) throw e;
        throw new BackendError(`backend '${name}' could not be loaded: ${errorMessage(e).split('\n')[0]}`, {
          where: '--backend',
          hint: name.startsWith('tensorflow')
            ? 'its package downloads libtensorflow at install time; reinstall with network access, or use --backend wasm'
            : name === 'webgpu'
              ? 'install the optional packages webgpu and @tensorflow/tfjs-backend-webgpu and a Vulkan driver (scripts/webgpu/software-adapter.sh), or use --backend auto'
              : 'use --backend auto to pick the fastest backend that loads',
        });
      }
      skipped.push({ name, reason: errorMessage(e).split('\n')[0] });
    }
  }
  throw new BackendError('no compute backend could be loaded', { hint: skipped.map((s) => `${s.name}: ${s.reason}`).join('; ') });
}

export function activeBackend(): BackendInfo | null {
  return active;
}

/** One start-up line naming the backend and why faster ones were skipped. */
export function describeBackend(info: BackendInfo): string {
  // Reasons in full: the end of a reason is usually the hint that fixes it.
  const why = info.skipped.map((s) => `${s.name} unavailable (${s.reason})`).join('; ');
  const g = info.native?.gemm;
  const threads = g ? `${g.threads} thread${g.threads === 1 ? '' : 's'}` : '? threads';
  const nat = info.native?.loaded
    ? ` (moecat GEMM ${g?.isa ?? '?'}, ${threads}, ${info.native.kernels.length} native kernels)`
    : info.adapter
      ? ` on ${describeAdapter(info.adapter)}`
      : '';
  return `backend: ${info.name}${nat}${why ? ` [${why}]` : ''}`;
}

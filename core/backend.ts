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
import { loadNativeKernels, NativeLoadResult } from './nativeKernels';
import { AdapterSummary, describeAdapter, loadWebgpuBackend } from './webgpu';

/**
 * `cpu-native` is tfjs' cpu backend with the hot kernels replaced by the OpenBLAS-backed N-API
 * addon (native/); it loads only where the addon was built. `cpu` is the pure-JS backend.
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
  /** The native kernel set on `cpu-native` (OpenBLAS core, kernel names). */
  native?: NativeLoadResult;
  /** The WebGPU adapter on `webgpu` (vendor, architecture, limits). */
  adapter?: AdapterSummary;
}

let native: NativeLoadResult | undefined;
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
      const probe = loadNativeKernels({ register: false });
      if (!probe.loaded) throw new Error(probe.reason ?? 'native kernels unavailable');
      if (!(await tf.setBackend('cpu'))) throw new Error('the cpu backend did not initialise');
      native = loadNativeKernels();
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
export async function selectBackend(choice: BackendChoice = 'auto'): Promise<BackendInfo> {
  if (!(choice === 'auto' || (BACKENDS as readonly string[]).includes(choice))) {
    throw new BackendError(`unknown backend '${choice}'`, { where: '--backend', hint: `choose one of auto, ${BACKENDS.join(', ')}` });
  }
  if (active && (choice === 'auto' || choice === active.name)) return active;
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
      if (choice !== 'auto') {
        throw new BackendError(`backend '${name}' could not be loaded: ${errorMessage(e).split('\n')[0]}`, {
          where: '--backend',
          hint: name.startsWith('tensorflow')
            ? 'its package downloads libtensorflow at install time; reinstall with network access, or use --backend wasm'
            : name === 'webgpu'
              ? 'install the optional packages webgpu and @tensorflow/tfjs-backend-webgpu and a Vulkan driver (scripts/webgpu/software-adapter.sh), or use --backend auto'
              : 'use --backend auto to pick the fastest backend that loads',
        });
      }
      skipped.push({ name, reason: errorMessage(e).split('\n')[0].slice(0, 160) });
    }
  }
  throw new BackendError('no compute backend could be loaded', { hint: skipped.map((s) => `${s.name}: ${s.reason}`).join('; ') });
}

export function activeBackend(): BackendInfo | null {
  return active;
}

/** One start-up line naming the backend and why faster ones were skipped. */
export function describeBackend(info: BackendInfo): string {
  const why = info.skipped.map((s) => `${s.name} unavailable (${s.reason.slice(0, 80)})`).join('; ');
  const nat = info.native?.loaded
    ? ` (OpenBLAS ${info.native.blas?.corename ?? ''}, ${info.native.kernels.length} native kernels)`
    : info.adapter
      ? ` on ${describeAdapter(info.adapter)}`
      : '';
  return `backend: ${info.name}${nat}${why ? ` [${why}]` : ''}`;
}

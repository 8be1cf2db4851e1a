/**
 * The `webgpu` backend: tfjs-backend-webgpu on Dawn (npm `webgpu`), both optional dependencies.
 * We create the adapter and device ourselves (so we can name the adapter and refuse a software
 * one unless forced), then hand them to tfjs' WebGPUBackend with three changes that make a
 * training step deterministic and possible under Node: synchronous reads (syncRead.ts),
 * row-list sums instead of float-atomic kernels (segmentKernels.ts, matmulGuard.ts), and a
 * dispatch tracer that refuses any atomic program left (trace.ts).
 */
import * as fs from 'fs';
import * as tf from '@tensorflow/tfjs';
import { AdapterSummary, loadDawn, summarizeAdapter } from './dawn';
import { installSyncRead } from './syncRead';
import { registerDeterministicKernels } from './segmentKernels';
import { installMatMulGuard } from './matmulGuard';
import { installProgramTrace } from './trace';
import { registerFusedKernels } from './fusedKernels';
import { registerExpertKernels } from './expertKernels';
import { registerRopeKernels } from './ropeKernels';
import { registerSdpaKernels } from './sdpaKernels';
import { GpuAdapter } from './gpuTypes';
import { webgpuBackendInternals } from '../tfjsInternals';

export { describeAdapter } from './dawn';
export type { AdapterSummary } from './dawn';

interface WebgpuPackage {
  WebGPUBackend: new (device: unknown, adapterInfo?: unknown) => tf.KernelBackend;
}

let adapterSummary: AdapterSummary | null = null;
let registered = false;

/** Dawn's entry object; a missing or unloadable package is one clear error. */
function requireDawn(): ReturnType<typeof loadDawn> {
  try {
    return loadDawn();
  } catch (e) {
    throw new Error(`the optional package 'webgpu' (Dawn) is not installed or does not load here: ${String((e as Error).message ?? e).split('\n')[0]}`);
  }
}

/**
 * Finds Dawn's adapter and says what it is. Throws when the packages are missing or no adapter
 * is found (no driver, or a Vulkan driver Dawn refuses, such as Mesa < 25 lavapipe).
 */
export async function probeAdapter(): Promise<{ adapter: GpuAdapter; summary: AdapterSummary }> {
  const gpu = requireDawn();
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    throw new Error('Dawn found no WebGPU adapter (no Vulkan driver, or one Dawn refuses; for a software driver run scripts/webgpu/software-adapter.sh)');
  }
  return { adapter, summary: summarizeAdapter(adapter) };
}

/**
 * Whether this machine has a GPU device node. On Linux a hardware adapter needs /dev/dri/renderD*
 * (Mesa, AMD, Intel, NVIDIA's open driver) or /dev/nvidia* (NVIDIA); elsewhere we cannot tell
 * cheaply and say yes.
 */
export function hasGpuDeviceNode(): boolean {
  if (process.platform !== 'linux') return true;
  const has = (dir: string, re: RegExp): boolean => {
    try {
      return fs.readdirSync(dir).some((n) => re.test(n));
    } catch {
      return false;
    }
  };
  return has('/dev/dri', /^renderD\d+$/) || has('/dev', /^nvidia\d+$/);
}

/**
 * Registers and activates the tfjs `webgpu` backend. `allowSoftware` is true only when the user
 * named the backend: auto-selection must not pick a CPU rasteriser over the native CPU path.
 */
export async function loadWebgpuBackend(opts: { allowSoftware: boolean }): Promise<AdapterSummary> {
  if (!registered && !opts.allowSoftware && !hasGpuDeviceNode()) {
    requireDawn(); // a missing package is still what a user should hear first
    // Without a GPU device node only a software adapter can exist; asking Dawn for it would
    // print its driver warnings on every start-up of every command.
    throw new Error('no GPU device node (/dev/dri/renderD*, /dev/nvidia*): no hardware adapter (--backend webgpu forces a software one)');
  }
  if (!registered) {
    const { adapter, summary } = await probeAdapter();
    if (summary.software && !opts.allowSoftware) {
      throw new Error(`only a software adapter (--backend webgpu forces it): ${summary.description || summary.device}`);
    }
    let pkg: WebgpuPackage;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      pkg = require('@tensorflow/tfjs-backend-webgpu') as WebgpuPackage;
    } catch (e) {
      throw new Error(`the optional package '@tensorflow/tfjs-backend-webgpu' is not installed: ${String((e as Error).message ?? e).split('\n')[0]}`);
    }
    const l = adapter.limits;
    const requiredFeatures = adapter.features.has('timestamp-query') ? ['timestamp-query'] : [];
    const device = await adapter.requestDevice({
      requiredFeatures,
      requiredLimits: {
        maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
        maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
        maxBufferSize: l.maxBufferSize,
        maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
        maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
        // The experts kernels pack 3N weights with one program per this many bindings, less one.
        maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      },
    });
    const backend = new pkg.WebGPUBackend(device, adapter.info);
    const internals = webgpuBackendInternals(backend);
    installSyncRead(internals);
    installProgramTrace(internals);
    registerDeterministicKernels();
    installMatMulGuard();
    registerFusedKernels();
    registerExpertKernels();
    registerRopeKernels();
    registerSdpaKernels();
    // Small tensors that already live on the host run there (tfjs' default); keep it explicit.
    tf.env().set('WEBGPU_CPU_FORWARD', true);
    // The package registers its own factory on import when navigator.gpu exists; ours replaces it.
    if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
    if (!tf.registerBackend('webgpu', () => backend, 1)) throw new Error('could not register the webgpu backend');
    adapterSummary = summary;
    registered = true;
  } else if (adapterSummary!.software && !opts.allowSoftware) {
    throw new Error(`only a software adapter (--backend webgpu forces it): ${adapterSummary!.description}`);
  }
  if (!(await tf.setBackend('webgpu'))) throw new Error('the webgpu backend did not initialise');
  return adapterSummary!;
}

export function webgpuAdapter(): AdapterSummary | null {
  return adapterSummary;
}


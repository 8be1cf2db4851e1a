/**
 * Loading Dawn (npm `webgpu`, an optional dependency) and describing its adapter.
 *
 * Dawn's Node binding completes GPU work (buffer maps, device requests) on a tick it schedules
 * through the global `setImmediate`. `installDawnTickCapture` runs before the binding loads and
 * remembers those ticks (native functions) separately from everyone else's, so a synchronous
 * read can run Dawn's ticks itself without letting any other callback run (see syncRead.ts).
 */

import { promisify } from 'util';
import { Gpu, GpuAdapter } from './gpuTypes';

/** The parts of Dawn's binding we use. */
export interface DawnModule {
  create(options: string[]): Gpu;
  globals: Record<string, unknown>;
}

export interface AdapterSummary {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** Software rasterisers (llvmpipe/lavapipe, SwiftShader) and Dawn's fallback adapters. */
  software: boolean;
  limits: { maxStorageBufferBindingSize: number; maxBufferSize: number; maxComputeWorkgroupStorageSize: number; maxComputeInvocationsPerWorkgroup: number };
}

const SOFTWARE_NAMES = /llvmpipe|lavapipe|swiftshader|softpipe|software|warp|basic render/i;

/** Ticks Dawn queued through setImmediate that have not run yet. */
const pendingDawnTicks = new Set<() => void>();
let captureInstalled = false;

/**
 * Dawn's tick is an anonymous function made by N-API: native source text, an empty name and
 * its own `prototype`. Bound JS functions (also "[native code]") are named "bound ..." and have
 * no `prototype`; built-ins such as Math.random have names. Those run from the loop as usual.
 */
function isDawnTick(fn: unknown): boolean {
  return (
    typeof fn === 'function' &&
    fn.name === '' &&
    Object.prototype.hasOwnProperty.call(fn, 'prototype') &&
    /\{\s*\[native code\]\s*\}$/.test(Function.prototype.toString.call(fn))
  );
}

/**
 * Wraps the global setImmediate once. Only Dawn's ticks (Node's own code does not go through
 * the global) are tracked; each still runs from the event loop as before unless
 * `runPendingDawnTicks` ran it first.
 */
export function installDawnTickCapture(): void {
  if (captureInstalled) return;
  captureInstalled = true;
  // Node's setImmediate carries its promisified form under util.promisify.custom.
  const real: typeof setImmediate & { [promisify.custom]?: unknown } = globalThis.setImmediate;
  const wrapped = function (cb: (...a: unknown[]) => void, ...args: unknown[]) {
    if (args.length === 0 && isDawnTick(cb)) {
      const tick = cb as () => void;
      pendingDawnTicks.add(tick);
      return real(() => {
        if (pendingDawnTicks.delete(tick)) tick();
      });
    }
    return real(cb, ...args);
  };
  Object.assign(wrapped, real);
  // util.promisify(setImmediate) keeps resolving with the given value.
  Object.defineProperty(wrapped, promisify.custom, { value: real[promisify.custom] });
  globalThis.setImmediate = wrapped as typeof setImmediate;
}

/** Runs the Dawn ticks queued so far (not the ones they queue); returns how many ran. */
export function runPendingDawnTicks(): number {
  if (pendingDawnTicks.size === 0) return 0;
  const ticks = [...pendingDawnTicks];
  pendingDawnTicks.clear();
  for (const t of ticks) t();
  return ticks.length;
}

let dawn: DawnModule | null = null;
let gpu: Gpu | null = null;

/** Loads the binding and exposes its globals (GPUBufferUsage, GPUMapMode, ...). Throws if absent. */
export function loadDawn(): Gpu {
  if (gpu) return gpu;
  installDawnTickCapture();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  dawn = require('webgpu') as DawnModule;
  for (const [k, v] of Object.entries(dawn.globals)) {
    if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  gpu = dawn.create([]);
  // tfjs' WebGPUBackend checks navigator.gpu (Node 20 has no navigator; later Nodes have one).
  const g = globalThis as { navigator?: { gpu?: unknown } };
  if (!g.navigator) Object.defineProperty(globalThis, 'navigator', { value: {}, configurable: true, writable: true });
  if (!g.navigator!.gpu) Object.defineProperty(g.navigator!, 'gpu', { value: gpu, configurable: true });
  return gpu;
}

export function summarizeAdapter(adapter: GpuAdapter): AdapterSummary {
  const info = adapter.info;
  const vendor = info?.vendor ?? '';
  const architecture = info?.architecture ?? '';
  const device = info?.device ?? '';
  const description = info?.description ?? '';
  const fallback = Boolean(info?.isFallbackAdapter);
  const software = fallback || SOFTWARE_NAMES.test([vendor, architecture, device, description].join(' '));
  const l = adapter.limits;
  return {
    vendor,
    architecture,
    device,
    description,
    software,
    limits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    },
  };
}

/** `llvmpipe: Mesa 25.0.7 (mesa/llvmpipe-..., software), storage 128 MiB, ...` */
export function describeAdapter(a: AdapterSummary): string {
  const mib = (n: number) => `${Math.round(n / 1048576)} MiB`;
  const name = a.description || a.device || 'unknown adapter';
  return (
    `${name} (vendor ${a.vendor || '?'}, architecture ${a.architecture || '?'}, ${a.software ? 'software' : 'hardware'}; ` +
    `limits: storage binding ${mib(a.limits.maxStorageBufferBindingSize)}, buffer ${mib(a.limits.maxBufferSize)}, ` +
    `workgroup storage ${a.limits.maxComputeWorkgroupStorageSize} B, ${a.limits.maxComputeInvocationsPerWorkgroup} invocations)`
  );
}

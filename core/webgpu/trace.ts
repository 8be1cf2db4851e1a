/**
 * What a step runs on the GPU: every WebGPU program the backend dispatches passes through
 * `runWebGPUProgram`. We record program names (for the kernel-count report and the determinism
 * spec) and refuse, by default, any program that accumulates with float atomics: tfjs marks
 * those `atomic = true`, and their WGSL says `atomic`. Refusing is cheap (one lookup per
 * program kind) and turns a silent loss of determinism into a clear error naming the kernel.
 */
import { BackendError } from '../errors';

interface Program {
  shaderKey?: string;
  atomic?: boolean;
  getUserCode(): string;
  constructor: { name: string };
}

interface TraceTarget {
  runWebGPUProgram(program: Program, ...rest: unknown[]): unknown;
}

export interface ProgramTrace {
  /** Dispatches per program name, in first-seen order. */
  counts: Map<string, number>;
  /** Names of programs that use atomics (empty on a deterministic step). */
  atomic: Set<string>;
}

const atomicByKind = new Map<string, boolean>();
let tracing: ProgramTrace | null = null;
let refuseAtomics = true;
export const programCounter = { dispatches: 0 };

function programName(p: Program): string {
  return p.shaderKey ? `${p.constructor.name}:${p.shaderKey.split(/[_\s]/)[0]}` : p.constructor.name;
}

function usesAtomics(p: Program): boolean {
  const kind = `${p.constructor.name}|${p.shaderKey ?? ''}`;
  let atomic = atomicByKind.get(kind);
  if (atomic === undefined) {
    atomic = p.atomic === true || /\batomic/.test(p.getUserCode());
    atomicByKind.set(kind, atomic);
  }
  return atomic;
}

export function installProgramTrace(backend: TraceTarget): void {
  const run = backend.runWebGPUProgram.bind(backend);
  backend.runWebGPUProgram = (program: Program, ...rest: unknown[]) => {
    programCounter.dispatches++;
    const name = programName(program);
    const atomic = usesAtomics(program);
    if (tracing) {
      tracing.counts.set(name, (tracing.counts.get(name) ?? 0) + 1);
      if (atomic) tracing.atomic.add(name);
    }
    if (atomic && refuseAtomics) {
      throw new BackendError(`webgpu: kernel ${name} accumulates with float atomics, so its result depends on thread timing`, {
        hint: 'moecat replaces such kernels (core/webgpu/segmentKernels.ts); report the op that reached it',
      });
    }
    return run(program, ...rest);
  };
}

/**
 * Starts recording every program dispatched until `stop()`; with `allowAtomics` atomic programs
 * are recorded and run instead of refused (the determinism spec uses this to see them).
 */
export function startProgramTrace(opts: { allowAtomics?: boolean } = {}): { trace: ProgramTrace; stop: () => ProgramTrace } {
  const trace: ProgramTrace = { counts: new Map(), atomic: new Set() };
  const prevTrace = tracing;
  const prevRefuse = refuseAtomics;
  tracing = trace;
  if (opts.allowAtomics) refuseAtomics = false;
  return {
    trace,
    stop: () => {
      tracing = prevTrace;
      refuseAtomics = prevRefuse;
      return trace;
    },
  };
}

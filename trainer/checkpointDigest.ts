/**
 * What a training checkpoint holds, reduced to comparable digests per file, from two sources:
 * the files as loaded (trainer/checkpointing) and a live Trainer (what those files should hold
 * at its step). `moecat audit` compares the two for every checkpoint in its range, so a
 * checkpoint whose files were altered and re-checksummed is still caught, naming the file.
 */
import { createHash } from 'crypto';
import { LoadedTraining, recomputableState } from './checkpointing';
import { Trainer } from './trainer';

/** Keys of state.json that a recomputation reproduces (backend, world size, lineage are not recomputed). */
export const RECOMPUTED_STATE_KEYS = [
  'step', 'data_step', 'tokens', 'seed', 'adam_t', 'expert_biases', 'skipped_data_steps',
  'spikes', 'spike_detector', 'balance_scale', 'data', 'param_hash',
] as const satisfies readonly (keyof ReturnType<typeof recomputableState>)[];

export interface CheckpointDigest {
  /** Weights and expert biases (model.safetensors). */
  model: string;
  /** Adam moments and step count (optimizer.safetensors). */
  optimizer: string;
  /** The recomputable keys of state.json, each as canonical JSON. */
  state: Record<string, string>;
}

function digest(parts: (Float32Array | string | number)[]): string {
  const h = createHash('sha256');
  for (const p of parts) {
    if (typeof p === 'string' || typeof p === 'number') h.update(`${typeof p}:${String(p)};`);
    else {
      h.update(`f32:${p.length};`);
      h.update(new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
    }
  }
  return h.digest('hex');
}

function stateDigest(o: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  // Through JSON, so float32 values compare exactly as they were written.
  for (const k of RECOMPUTED_STATE_KEYS) out[k] = JSON.stringify(o[k] === undefined ? null : JSON.parse(JSON.stringify(o[k])));
  return out;
}

/** Digests of a checkpoint as loaded from its files. */
export function digestOfLoaded(ck: LoadedTraining): CheckpointDigest {
  const s = ck.state;
  return {
    model: digest([s.params, ...s.biases]),
    optimizer: digest([s.opt.m, s.opt.v, s.opt.t]),
    state: stateDigest(ck.saved as Record<string, unknown>),
  };
}

/** Digests of what a checkpoint of this trainer, saved now, would hold. */
export function digestOfTrainer(t: Trainer): CheckpointDigest {
  const s = t.checkpointState();
  return {
    model: digest([s.params, ...s.biases]),
    optimizer: digest([s.opt.m, s.opt.v, s.opt.t]),
    state: stateDigest(recomputableState(s, { seed: t.cfg.seed, data: t.data.state(), paramHash: t.paramHash() })),
  };
}

/** The first file (and state key) where two digests differ, or null. */
export function firstDifference(want: CheckpointDigest, got: CheckpointDigest): { file: string; key?: string; expected: string; got: string } | null {
  if (want.model !== got.model) return { file: 'model.safetensors', expected: want.model, got: got.model };
  if (want.optimizer !== got.optimizer) return { file: 'optimizer.safetensors', expected: want.optimizer, got: got.optimizer };
  for (const k of RECOMPUTED_STATE_KEYS) {
    if (want.state[k] !== got.state[k]) return { file: 'state.json', key: k, expected: clip(want.state[k]), got: clip(got.state[k]) };
  }
  return null;
}

function clip(s: string): string {
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

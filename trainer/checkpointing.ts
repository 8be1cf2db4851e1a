/**
 * What a training checkpoint holds (DESIGN.md section 6) and how a TrainerState is saved and
 * restored through core/checkpoint (atomic directories, sha256 of every file, `latest`).
 *   model.safetensors      weights in HF names/layout + expert biases
 *   optimizer.safetensors  flat AdamW moments `exp_avg`, `exp_avg_sq` (spec order, our layout)
 *   state.json             step, tokens, Adam t, expert biases, data-loader state, world size
 * A sharded run (parallel.shard: optimizer, W > 1) writes optimizer-rank-*-of-*.safetensors
 * instead of optimizer.safetensors, indexed by state.json `optimizer_shards` (shardedCheckpoint.ts).
 *   config.yaml            the resolved training config
 *   tokenizer.json         the tokenizer of the data (when the data has one)
 */
import YAML from 'yaml';
import { loadCheckpoint, writeCheckpoint } from '../core/checkpoint';
import { decodeSafetensors, encodeSafetensors } from '../core/safetensors';
import { CheckpointError } from '../core/errors';
import { flatLayout, flatten, FlatLayout, views } from '../model/flatParams';
import { paramHash, paramSpecs } from '../model/params';
import { decodeModelWeights, encodeModelWeights } from '../model/weights';
import { parseTrainConfig, TrainConfig } from './config';
import { TrainerState, Trainer } from './trainer';
import { AdamWState, newAdamWState } from './adamw';
import { assembleOptimizerShards } from './shardedCheckpoint';

export const FORMAT_VERSION = 1;

export interface SavedState {
  step: number;
  tokens: number;
  seed: number;
  adam_t: number;
  expert_biases: number[][];
  data: unknown;
  world_size: number;
  backend: string;
  param_hash: string;
  data_step?: number;
  skipped_data_steps?: number[];
  spikes?: unknown[];
  spike_detector?: { loss: number[]; grad: number[] };
  balance_scale?: number;
  lineage?: { parent?: string; parent_step?: number; parent_param_hash?: string };
  [k: string]: unknown;
}

/** What a checkpoint records beside the TrainerState. */
export interface CheckpointContext {
  rawConfig: unknown;
  tokenizerJson: string | null;
  seed: number;
  /** Data-loader state. */
  data: unknown;
  worldSize: number;
  backend: string;
  paramHash: string;
  /** Keys appended to state.json (lineage, growth, run extras). */
  state?: Record<string, unknown>;
  /** false: leave out optimizer.safetensors (a sharded checkpoint adds the ranks' shards). */
  withOptimizer?: boolean;
}

/**
 * The one assembler of a training checkpoint's file set and state.json (the trainer's saves
 * and model growth both write through it); `writeCheckpoint` makes it atomic.
 */
export function assembleCheckpoint(layout: FlatLayout, s: TrainerState, o: CheckpointContext): { files: Record<string, Buffer | string>; state: SavedState } {
  const files: Record<string, Buffer | string> = {
    'model.safetensors': encodeModelWeights(layout.specs, views(layout, s.params), s.biases, { step: String(s.step) }),
    'config.yaml': YAML.stringify(o.rawConfig),
  };
  if (o.withOptimizer !== false) {
    files['optimizer.safetensors'] = encodeSafetensors(
      new Map([
        ['exp_avg', { dtype: 'F32' as const, shape: [layout.total], data: s.opt.m }],
        ['exp_avg_sq', { dtype: 'F32' as const, shape: [layout.total], data: s.opt.v }],
      ]),
      { adam_t: String(s.opt.t), layout: 'moecat-flat-spec-order' },
    );
  }
  if (o.tokenizerJson) files['tokenizer.json'] = o.tokenizerJson;
  // param_hash after backend, where state.json has always had it.
  const { param_hash, ...recomputed } = recomputableState(s, o);
  const state: SavedState = {
    ...recomputed,
    world_size: o.worldSize,
    backend: o.backend,
    param_hash,
    trainer_format: FORMAT_VERSION,
    ...(o.state ?? {}),
  };
  return { files, state };
}

/**
 * The keys of state.json that follow from the training state alone, so a recomputation
 * reproduces them (trainer/checkpointDigest compares them for `moecat audit`).
 */
export function recomputableState(s: TrainerState, o: Pick<CheckpointContext, 'seed' | 'data' | 'paramHash'>) {
  return {
    step: s.step,
    data_step: s.dataStep,
    tokens: s.tokens,
    seed: o.seed,
    adam_t: s.opt.t,
    expert_biases: s.biases.map((b) => Array.from(b)),
    skipped_data_steps: s.skipped,
    spikes: s.spikes,
    spike_detector: s.detector,
    balance_scale: s.balanceScale,
    data: o.data,
    param_hash: o.paramHash,
  };
}

export function saveTrainerCheckpoint(
  runDir: string,
  trainer: Trainer,
  extras: { rawConfig: unknown; backend: string; keepLast: number; tokenizerJson: string | null; state?: Record<string, unknown> },
  /** The state to save (default trainer.checkpointState()); sharded runs pass checkpointStateGathered() or, with sharded experts, rank 0's checkpointStateAtRoot(). */
  saveState: TrainerState = trainer.checkpointState(),
): string {
  const s = saveState;
  const { files, state } = assembleCheckpoint(trainer.layout, s, {
    rawConfig: extras.rawConfig,
    tokenizerJson: extras.tokenizerJson,
    seed: trainer.cfg.seed,
    data: trainer.data.state(),
    worldSize: trainer.dp.worldSize,
    backend: extras.backend,
    paramHash: paramHash(trainer.layout.specs, views(trainer.layout, s.params)),
    state: extras.state,
  });
  return writeCheckpoint(runDir, s.step, files, state, { keepLast: extras.keepLast });
}

export interface LoadedTraining {
  dir: string;
  config: TrainConfig;
  rawConfig: Record<string, unknown>;
  state: TrainerState;
  saved: SavedState;
  tokenizerJson: string | null;
}

/** Loads and verifies a checkpoint (dir, `latest` link or run dir) into a TrainerState. */
export function loadTrainerCheckpoint(pathLike: string, opts: { withOptimizer?: boolean } = {}): LoadedTraining {
  const ck = loadCheckpoint(pathLike);
  const need = (name: string): Buffer => {
    const b = ck.files.get(name);
    if (!b) throw new CheckpointError(`missing file ${name}`, { where: ck.dir });
    return b;
  };
  const rawConfig = YAML.parse(need('config.yaml').toString('utf8')) as Record<string, unknown>;
  const config = parseTrainConfig(rawConfig, `${ck.dir}/config.yaml`);
  const { values, biases } = decodeModelWeights(need('model.safetensors'), config.model, `${ck.dir}/model.safetensors`);
  const layout = flatLayout(paramSpecs(config.model));
  const params = flatten(layout, values);
  const saved = ck.state as SavedState;
  const opt: AdamWState = newAdamWState(layout.total);
  if (opts.withOptimizer !== false && saved.optimizer_shards !== undefined) {
    const full = assembleOptimizerShards(saved.optimizer_shards, ck.files, layout.total, ck.dir);
    opt.m = full.m;
    opt.v = full.v;
    opt.t = full.t;
  } else if (opts.withOptimizer !== false) {
    const o = decodeSafetensors(need('optimizer.safetensors'), `${ck.dir}/optimizer.safetensors`);
    const m = o.tensors.get('exp_avg');
    const v = o.tensors.get('exp_avg_sq');
    if (!m || !v || m.data.length !== layout.total || v.data.length !== layout.total) {
      throw new CheckpointError('optimizer state does not match the model size', { where: `${ck.dir}/optimizer.safetensors` });
    }
    opt.m = m.data as Float32Array;
    opt.v = v.data as Float32Array;
    opt.t = Number(o.metadata.adam_t ?? saved.adam_t);
  }
  const tok = ck.files.get('tokenizer.json');
  return {
    dir: ck.dir,
    config,
    rawConfig,
    saved,
    tokenizerJson: tok ? tok.toString('utf8') : null,
    state: {
      step: saved.step,
      dataStep: saved.data_step ?? saved.step,
      tokens: saved.tokens,
      params,
      opt,
      biases,
      skipped: saved.skipped_data_steps ?? [],
      spikes: (saved.spikes ?? []) as TrainerState['spikes'],
      detector: saved.spike_detector ?? { loss: [], grad: [] },
      balanceScale: saved.balance_scale ?? 1,
    },
  };
}

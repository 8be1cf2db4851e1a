/**
 * Model growth by layer stacking (DESIGN.md section 3): a trained L-layer checkpoint becomes an
 * L·r-layer one whose layer j is a copy of layer (j mod L), i.e. the order [1..L, 1..L, ...].
 * Embeddings, final norm and lm_head are copied; expert biases are stacked with their layers.
 *
 * What carries over: step, data step, token count, skipped batches, spike history, the balance
 * scale and the data-loader state, so the LR schedule (a pure function of the step and the
 * target config's train.steps) continues where it was. Optimizer state is an option:
 *   stack  Adam moments m, v stacked with the same layer mapping, Adam t kept (bias corrections
 *          continue); the grown model keeps each copy's per-weight step sizes.
 *   reset  m = v = 0 and Adam t = 0 (bias corrections restart); the LR schedule still continues.
 * The spike detector's window is cleared: stacking changes the function, so the grown model's
 * first losses are not comparable with the window the small model left.
 */
import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';
import { CheckpointError, ConfigError } from '../core/errors';
import { latestCheckpoint, writeCheckpoint } from '../core/checkpoint';
import { flatLayout, FlatLayout, views } from '../model/flatParams';
import { numel, paramHash, paramSpecs } from '../model/params';
import { applyOverrides, parseTrainConfig, TrainConfig } from './config';
import { assembleCheckpoint, loadTrainerCheckpoint } from './checkpointing';
import { readMetrics } from './metrics';
import { TrainerState } from './trainer';

export type GrowOptimizer = 'stack' | 'reset';

const LAYER = /^model\.layers\.(\d+)\.(.+)$/;

/** The source layer of grown layer j: the stack [0..L-1, 0..L-1, ...]. */
export function sourceLayer(j: number, L: number): number {
  return j % L;
}

/** The small model's parameter name that grown parameter `name` is copied from. */
export function sourceName(name: string, L: number): string {
  const m = LAYER.exec(name);
  return m ? `model.layers.${sourceLayer(Number(m[1]), L)}.${m[2]}` : name;
}

/** Copies a flat buffer laid out for the small model into the grown layout by the stacking map. */
export function stackFlat(small: FlatLayout, grown: FlatLayout, src: Float32Array, L: number): Float32Array {
  const out = new Float32Array(grown.total);
  for (const s of grown.specs) {
    const from = sourceName(s.name, L);
    const o = small.offsets.get(from);
    if (o === undefined) throw new CheckpointError(`grown parameter ${s.name} has no source ${from}`);
    const n = numel(s.shape);
    out.set(src.subarray(o, o + n), grown.offsets.get(s.name)!);
  }
  return out;
}

/** The grown TrainerState from a loaded small one. */
export function growState(small: TrainConfig, grown: TrainConfig, st: TrainerState, optimizer: GrowOptimizer): TrainerState {
  const L = small.model.nLayers;
  const a = flatLayout(paramSpecs(small.model));
  const b = flatLayout(paramSpecs(grown.model));
  const stack = (x: Float32Array) => stackFlat(a, b, x, L);
  return {
    step: st.step,
    dataStep: st.dataStep,
    tokens: st.tokens,
    params: stack(st.params),
    opt: optimizer === 'stack' ? { t: st.opt.t, m: stack(st.opt.m), v: stack(st.opt.v) } : { t: 0, m: new Float32Array(b.total), v: new Float32Array(b.total) },
    biases: Array.from({ length: grown.model.nLayers }, (_, j) => Float32Array.from(st.biases[sourceLayer(j, L)])),
    skipped: [...st.skipped],
    spikes: [...st.spikes],
    detector: { loss: [], grad: [] },
    balanceScale: st.balanceScale,
  };
}

/** The only model difference growth allows is depth; the rest of the config may be overridden. */
function checkSameModelButDepth(small: TrainConfig, grown: TrainConfig): void {
  const a = JSON.stringify({ ...small.model, nLayers: 0 });
  const b = JSON.stringify({ ...grown.model, nLayers: 0 });
  if (a !== b) throw new ConfigError('growth changes depth only: a --set override changed another model key', { where: '--set', hint: 'change width with `moecat transfer`, not while growing' });
}

export interface GrowOptions {
  /** A checkpoint directory, a `latest` link, or a run directory. */
  checkpoint: string;
  factor: number;
  outDir: string;
  optimizer: GrowOptimizer;
  /** Overrides applied to the grown config (e.g. train.steps of the target schedule). */
  sets?: string[];
}

export interface GrowResult {
  dir: string;
  config: TrainConfig;
  state: TrainerState;
  parent: string;
}

/**
 * Writes a new run directory holding the grown checkpoint; `moecat train --resume <outDir>`
 * continues it. The parent's metrics.jsonl (up to the grown step) is copied so the run's curve
 * is continuous, followed by a `grow` event line.
 */
export function growCheckpoint(o: GrowOptions): GrowResult {
  if (!Number.isInteger(o.factor) || o.factor < 2) throw new ConfigError(`--factor must be an integer >= 2, got ${o.factor}`, { where: '--factor' });
  if (o.optimizer !== 'stack' && o.optimizer !== 'reset') throw new ConfigError(`--optimizer must be stack or reset, got ${String(o.optimizer)}`, { where: '--optimizer' });
  if (fs.existsSync(o.outDir) && latestCheckpoint(o.outDir) !== null) {
    throw new ConfigError(`${o.outDir} already holds a run`, { where: '--out', hint: 'choose a new directory' });
  }
  const ck = loadTrainerCheckpoint(o.checkpoint);
  const raw = structuredClone(ck.rawConfig);
  applyOverrides(raw, [`model.nLayers=${ck.config.model.nLayers * o.factor}`, ...(o.sets ?? [])]);
  const grown = parseTrainConfig(raw, 'grown config (checkpoint config + --set)');
  checkSameModelButDepth(ck.config, grown);
  if (grown.model.nLayers !== ck.config.model.nLayers * o.factor) throw new ConfigError('model.nLayers is set by --factor; do not override it', { where: '--set' });
  if (grown.train.steps <= ck.state.step) {
    throw new ConfigError(`train.steps (${grown.train.steps}) is not beyond the checkpoint's step ${ck.state.step}: the grown run would have nothing to do`, { where: 'train.steps', hint: `--set train.steps=<total steps of the target schedule>` });
  }
  const state = growState(ck.config, grown, ck.state, o.optimizer);
  const layout = flatLayout(paramSpecs(grown.model));
  const hash = paramHash(layout.specs, views(layout, state.params));
  const { files, state: saved } = assembleCheckpoint(layout, state, {
    rawConfig: raw,
    tokenizerJson: ck.tokenizerJson,
    seed: grown.seed,
    data: ck.saved.data,
    worldSize: ck.saved.world_size,
    backend: ck.saved.backend,
    paramHash: hash,
    state: {
      lineage: { parent: path.resolve(ck.dir), parent_step: ck.state.step, parent_param_hash: ck.saved.param_hash },
      growth: { factor: o.factor, optimizer: o.optimizer, from_layers: ck.config.model.nLayers, to_layers: grown.model.nLayers, layer_map: Array.from({ length: grown.model.nLayers }, (_, j) => sourceLayer(j, ck.config.model.nLayers)) },
    },
  });
  fs.mkdirSync(o.outDir, { recursive: true });
  fs.writeFileSync(path.join(o.outDir, 'config.yaml'), YAML.stringify(raw));
  copyParentMetrics(ck.dir, o.outDir, state.step, { factor: o.factor, optimizer: o.optimizer, parent: path.resolve(ck.dir) });
  const dir = writeCheckpoint(o.outDir, state.step, files, saved, { keepLast: grown.train.keepLast });
  return { dir, config: grown, state, parent: ck.dir };
}

/** The run directory a checkpoint directory sits in (`<run>/checkpoints/<step>`). */
function runDirOf(ckDir: string): string {
  return path.dirname(path.dirname(path.resolve(ckDir)));
}

function copyParentMetrics(ckDir: string, outDir: string, step: number, event: Record<string, unknown>): void {
  const file = path.join(runDirOf(ckDir), 'metrics.jsonl');
  const lines: string[] = [];
  if (fs.existsSync(file)) for (const m of readMetrics(file)) if (m.step <= step) lines.push(JSON.stringify(m));
  lines.push(JSON.stringify({ event: 'grow', step, ...event }));
  fs.writeFileSync(path.join(outDir, 'metrics.jsonl'), lines.join('\n') + '\n');
}

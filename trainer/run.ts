/**
 * A training run: start fresh or resume from a run directory, step to the target, write
 * metrics and checkpoints (only at step boundaries, never inside gradient accumulation).
 */
import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';
import { checkDataParallel, TrainConfig } from './config';
import { DataSource } from './data';
import { Batch } from '../data/batch';
import { DataParallel } from './dataParallel';
import { MetricsWriter, StepMetrics } from './metrics';
import { openRun, SpikeEvent, Trainer, TrainerOptions } from './trainer';
import { loadTrainerCheckpoint, saveTrainerCheckpoint } from './checkpointing';
import { saveShardedCheckpoint } from './shardedCheckpoint';
import { makeDataSource } from './dataSource';
import { latestCheckpoint } from '../core/checkpoint';
import { ConfigError, TrainingError } from '../core/errors';
import { initFromCheckpoint } from './initFrom';
import { microbatchLoss } from './losses';
import * as tf from '@tensorflow/tfjs';

export interface RunOptions {
  outDir: string;
  config?: TrainConfig;
  rawConfig?: Record<string, unknown>;
  /** Resume from the latest checkpoint of outDir (config then comes from the checkpoint). */
  resume?: boolean;
  /** Stop after this many total steps (default: config train.steps). */
  maxSteps?: number;
  checkpointEvery?: number;
  backend: string;
  dp?: DataParallel;
  moe?: TrainerOptions['moe'];
  /** With `moe`: each rank keeps only its own experts' state (TrainerOptions.shardExperts). */
  shardExperts?: boolean;
  onStep?: (m: StepMetrics, t: Trainer) => void;
  onSpike?: (e: SpikeEvent) => void;
  onWarning?: (w: string) => void;
  onStart?: (t: Trainer, info: { resumedFrom: string | null; data: DataSource }) => void;
  /** Only rank 0 writes files in a data-parallel run. */
  writeFiles?: boolean;
}

export interface RunResult {
  trainer: Trainer;
  last: StepMetrics | null;
  checkpoints: string[];
}

/**
 * One step, recomputed and compared every `stability.recomputeEvery` steps: deterministic
 * computation turns silent data corruption (a flipped bit in memory or arithmetic) into a
 * detectable mismatch, as the LongCat-Flash report describes.
 */
async function stepChecked(trainer: Trainer): Promise<Awaited<ReturnType<Trainer['step']>>> {
  const every = trainer.cfg.stability.recomputeEvery;
  if (!(every > 0 && (trainer.state.step + 1) % every === 0)) return trainer.step();
  const before = trainer.snapshotState();
  const first = await trainer.step();
  const firstHash = await trainer.paramHashGathered();
  const after = trainer.snapshotState();
  trainer.restoreState(before);
  const second = await trainer.step();
  const fp = (x: typeof first) => (x.kind === 'step' ? x.metrics.fingerprint : `spike:${x.event.reason}`);
  if (fp(first) !== fp(second) || (await trainer.paramHashGathered()) !== firstHash) {
    throw new TrainingError(`silent-corruption check failed at step ${before.step + 1}: a recomputation of the same step gave different results (${fp(first)} vs ${fp(second)})`, {
      hint: 'suspect the hardware of this host; resume from the last checkpoint elsewhere and run moecat audit',
    });
  }
  trainer.restoreState(after);
  if (first.kind === 'step') first.metrics.recomputed = true;
  return first;
}

export async function runTraining(o: RunOptions): Promise<RunResult> {
  const write = o.writeFiles ?? true;
  // The run directory is created only once the config, parent checkpoint and data have been
  // accepted, so a refused start leaves nothing behind.
  let metrics: MetricsWriter;
  let config = o.config;
  let rawConfig = o.rawConfig;
  let trainer: Trainer;
  let data: DataSource;
  let resumedFrom: string | null = null;
  /** Extra state.json keys carried by every checkpoint of the run (the --init-from lineage). */
  let extraState: Record<string, unknown> | undefined;
  if (o.resume) {
    const latest = latestCheckpoint(o.outDir);
    if (!latest) throw new ConfigError(`no checkpoint to resume from in ${o.outDir}`, { where: '--resume', hint: 'train without --resume first' });
    const ck = loadTrainerCheckpoint(latest);
    config = ck.config;
    rawConfig = ck.rawConfig;
    if (o.dp) checkDataParallel(config.data.microBatches, o.dp.worldSize, `${ck.dir}/config.yaml: data.microBatches`);
    data = makeDataSource(config, ck.saved.data);
    trainer = new Trainer(config, data, { dp: o.dp, moe: o.moe, shardExperts: o.shardExperts }, ck.state);
    resumedFrom = ck.dir;
    if (ck.saved.lineage) extraState = { lineage: ck.saved.lineage };
    metrics = openRun(o.outDir);
    if (write) metrics.truncateAfter(ck.state.step);
  } else {
    if (!config || !rawConfig) throw new ConfigError('a config is required to start a run');
    if (o.dp) checkDataParallel(config.data.microBatches, o.dp.worldSize);
    // The parent is loaded and checked first: a model mismatch is refused before any data work.
    const init = config.initFrom ? initFromCheckpoint(config, config.initFrom) : null;
    data = makeDataSource(config);
    if (init) extraState = { lineage: init.lineage };
    trainer = new Trainer(config, data, { dp: o.dp, moe: o.moe, shardExperts: o.shardExperts }, init?.state);
    metrics = openRun(o.outDir);
    if (write) {
      metrics.truncateAfter(0);
      fs.writeFileSync(path.join(o.outDir, 'config.yaml'), YAML.stringify(rawConfig));
    }
  }
  o.onStart?.(trainer, { resumedFrom, data });
  const target = Math.min(o.maxSteps ?? config.train.steps, config.train.steps);
  const every = o.checkpointEvery ?? config.train.checkpointEvery;
  const checkpoints: string[] = [];
  let last: StepMetrics | null = null;
  const save = async () => {
    const extras = { rawConfig, backend: o.backend, keepLast: config!.train.keepLast, tokenizerJson: data.tokenizerJson(), state: extraState };
    if (trainer.shard && trainer.dp.worldSize > 1) {
      // Sharded optimizer state: every rank writes its shard; rank 0 commits the index.
      const dir = await saveShardedCheckpoint(o.outDir, trainer, extras, write);
      if (dir) checkpoints.push(dir);
      return;
    }
    if (trainer.experts) {
      // Sharded experts: rank 0 gathers every expert and writes an ordinary checkpoint.
      const s = await trainer.checkpointStateAtRoot();
      if (write && s) checkpoints.push(saveTrainerCheckpoint(o.outDir, trainer, extras, s));
      return;
    }
    if (write) checkpoints.push(saveTrainerCheckpoint(o.outDir, trainer, extras));
  };
  while (trainer.state.step < target) {
    const r = await stepChecked(trainer);
    for (const w of trainer.takeWarnings()) o.onWarning?.(w);
    if (r.kind === 'spike') {
      // The run went back to an earlier state: its metrics after that point are replayed.
      if (write) {
        metrics.truncateAfter(r.event.restored_to);
        metrics.append({ event: 'spike', ...r.event });
      }
      o.onSpike?.(r.event);
      continue;
    }
    last = r.metrics;
    // Every invocation's last step records its parameter hash (a run stopped by --max-steps too).
    if (trainer.state.step === target && last.param_hash === undefined) last.param_hash = await trainer.paramHashGathered();
    const valEvery = config.data.sft?.valEvery ?? 0;
    const val = (data as { validationBatches?: () => Batch[] }).validationBatches;
    if (val && valEvery > 0 && (trainer.state.step % valEvery === 0 || trainer.state.step === target)) last.val_loss = validationLoss(trainer, val.call(data), o.moe);
    if (write) metrics.append(last);
    o.onStep?.(last, trainer);
    if (every > 0 && trainer.state.step % every === 0) await save();
  }
  // Always leave a checkpoint at the final step reached.
  if (last && !(every > 0 && trainer.state.step % every === 0)) await save();
  return { trainer, last, checkpoints };
}

/** Mean cross-entropy over the masked tokens of held-out batches (no gradient, no bias update). */
export function validationLoss(trainer: Trainer, batches: Batch[], moe?: TrainerOptions['moe']): number {
  let tokens = 0;
  for (const b of batches) for (let i = 0; i < b.lossMask.length; i++) tokens += b.lossMask[i];
  if (tokens === 0) return NaN;
  const norms = { globalTokens: tokens, globalSeqs: batches.reduce((a, b) => a + b.batchSize, 0) };
  let sum = 0;
  for (const b of batches) {
    tf.tidy(() => {
      sum += microbatchLoss(trainer.model, (n) => trainer.store.get(n), b, norms, { biases: trainer.state.biases, moe }).lm.dataSync()[0];
    });
  }
  return sum;
}

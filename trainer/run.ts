/**
 * A training run: start fresh or resume from a run directory, step to the target, write
 * metrics and checkpoints (only at step boundaries, never inside gradient accumulation).
 */
import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';
import { TrainConfig } from './config';
import { DataSource } from './data';
import { DataParallel } from './dataParallel';
import { StepMetrics } from './metrics';
import { openRun, SpikeEvent, Trainer, TrainerOptions } from './trainer';
import { loadTrainerCheckpoint, saveTrainerCheckpoint } from './checkpointing';
import { makeDataSource } from './dataSource';
import { latestCheckpoint } from '../core/checkpoint';
import { ConfigError } from '../core/errors';

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

export async function runTraining(o: RunOptions): Promise<RunResult> {
  const write = o.writeFiles ?? true;
  const metrics = openRun(o.outDir);
  let config = o.config;
  let rawConfig = o.rawConfig;
  let trainer: Trainer;
  let data: DataSource;
  let resumedFrom: string | null = null;
  if (o.resume) {
    const latest = latestCheckpoint(o.outDir);
    if (!latest) throw new ConfigError(`no checkpoint to resume from in ${o.outDir}`, { where: '--resume', hint: 'train without --resume first' });
    const ck = loadTrainerCheckpoint(latest);
    config = ck.config;
    rawConfig = ck.rawConfig;
    data = makeDataSource(config, ck.saved.data);
    trainer = new Trainer(config, data, { dp: o.dp, moe: o.moe }, ck.state);
    resumedFrom = ck.dir;
    if (write) metrics.truncateAfter(ck.state.step);
  } else {
    if (!config || !rawConfig) throw new ConfigError('a config is required to start a run');
    data = makeDataSource(config);
    trainer = new Trainer(config, data, { dp: o.dp, moe: o.moe });
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
  const save = () => {
    if (!write) return;
    checkpoints.push(saveTrainerCheckpoint(o.outDir, trainer, { rawConfig, backend: o.backend, keepLast: config!.train.keepLast, tokenizerJson: data.tokenizerJson() }));
  };
  while (trainer.state.step < target) {
    const r = await trainer.step();
    for (const w of trainer.takeWarnings()) o.onWarning?.(w);
    if (r.kind === 'spike') {
      // The run went back to an earlier state: its metrics after that point are replayed.
      if (write) {
        metrics.truncateAfter(r.event.restored_to);
        metrics.append({ event: 'spike', ...r.event } as unknown as StepMetrics);
      }
      o.onSpike?.(r.event);
      continue;
    }
    last = r.metrics;
    if (write) metrics.append(last);
    o.onStep?.(last, trainer);
    if (every > 0 && trainer.state.step % every === 0) save();
  }
  // Always leave a checkpoint at the final step reached.
  if (last && !(every > 0 && trainer.state.step % every === 0)) save();
  return { trainer, last, checkpoints };
}

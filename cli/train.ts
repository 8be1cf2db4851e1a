/** `moecat train`: config-driven training, resume, and data-parallel ranks. */
import type { Argv, CommandModule } from 'yargs';
import * as path from 'path';
import { loadTrainConfig } from '../trainer/config';
import { runTraining } from '../trainer/run';
import { backendOption, handle, Progress, startBackend } from './common';
import { ConfigError } from '../core/errors';

interface TrainArgs {
  config?: string;
  out?: string;
  set?: string[];
  'max-steps'?: number;
  'checkpoint-every'?: number;
  resume?: string;
  backend?: string;
}

export const command: CommandModule<object, TrainArgs> = {
  command: 'train',
  describe: 'train a model from a YAML config (or resume a run)',
  builder: (y: Argv) =>
    y
      .option('config', { type: 'string', describe: 'training config (YAML)' })
      .option('out', { type: 'string', describe: 'run directory (default runs/<config name>)' })
      .option('set', { type: 'string', array: true, describe: 'override a config key: --set optim.lr=1e-3' })
      .option('max-steps', { type: 'number', describe: 'stop after this many total steps' })
      .option('checkpoint-every', { type: 'number', describe: 'checkpoint interval in steps' })
      .option('resume', { type: 'string', describe: 'resume the run in this directory from its latest checkpoint' })
      .options(backendOption) as unknown as Argv<TrainArgs>,
  handler: handle(async (a: TrainArgs) => {
    if (!a.config && !a.resume) throw new ConfigError('give --config <yaml> to start a run or --resume <run dir> to continue one', { where: 'moecat train' });
    let loaded: ReturnType<typeof loadTrainConfig> | undefined;
    if (a.config) loaded = loadTrainConfig(a.config, a.set ?? []);
    const outDir = a.resume ?? a.out ?? path.join('runs', path.basename(a.config!, path.extname(a.config!)));
    const be = await startBackend(a.backend, loaded?.config.backend);
    let bar: Progress | null = null;
    const res = await runTraining({
      outDir,
      config: loaded?.config,
      rawConfig: loaded?.raw,
      resume: !!a.resume,
      maxSteps: a['max-steps'],
      checkpointEvery: a['checkpoint-every'],
      backend: be.name,
      onStart: (t, info) => {
        process.stderr.write(`run: ${outDir} | data: ${info.data.describe()} | params: ${t.layout.total.toLocaleString()}${info.resumedFrom ? ` | resumed from ${info.resumedFrom}` : ''}\n`);
        const target = Math.min(a['max-steps'] ?? t.cfg.train.steps, t.cfg.train.steps);
        bar = new Progress('train', target, t.state.step);
      },
      onStep: (m) => {
        (bar as Progress | null)?.update(m.step, `loss ${m.loss.toFixed(4)} | ${Math.round(m.tokens_per_s)} tok/s | ffn/tok ${m.ffn_experts_per_token.toFixed(2)}`);
      },
    });
    (bar as Progress | null)?.stop();
    const last = res.last;
    if (!last) process.stdout.write(`nothing to do: the run is at step ${res.trainer.state.step}\n`);
    if (last) process.stdout.write(`step ${last.step} loss ${last.loss.toFixed(4)} param_hash ${res.trainer.paramHash()}\n`);
    if (res.checkpoints.length) process.stdout.write(`checkpoint: ${res.checkpoints[res.checkpoints.length - 1]}\n`);
    res.trainer.dispose();
  }),
};

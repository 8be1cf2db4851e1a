/** `moecat train`: config-driven training, resume, and data-parallel ranks. */
import type { Argv, CommandModule } from 'yargs';
import * as path from 'path';
import { loadTrainConfig } from '../trainer/config';
import { runTraining } from '../trainer/run';
import { backendOption, handle, Progress, startBackend } from './common';
import * as fs from 'fs';
import { ConfigError } from '../core/errors';
import { latestCheckpoint } from '../core/checkpoint';
import { discoverEnv } from '../parallel/env';
import { Group } from '../parallel/collectives';

/** Joins the data-parallel group when the world size (flags or scheduler variables) exceeds 1. */
async function joinGroup(a: TrainArgs): Promise<Group | null> {
  const [host, port] = a.master ? a.master.split(':') : [undefined, undefined];
  const env = discoverEnv(process.env, {
    worldSize: a['world-size'],
    rank: a.rank,
    masterAddr: host,
    masterPort: port !== undefined ? Number(port) : undefined,
  });
  if (env.worldSize <= 1) return null;
  if (!env.secret) throw new ConfigError('a multi-process run needs a shared secret in MOECAT_SECRET', { where: 'env MOECAT_SECRET', hint: 'moecat launch sets one; with Slurm or Kubernetes export the same value on every rank' });
  process.stderr.write(`rank ${env.rank}/${env.worldSize}: joining ${env.masterAddr}:${env.masterPort} (${env.source})\n`);
  return Group.init({ rank: env.rank, worldSize: env.worldSize, masterAddr: env.masterAddr, masterPort: env.masterPort, secret: env.secret, timeoutMs: (a['peer-timeout'] ?? 120) * 1000 });
}

interface TrainArgs {
  'world-size'?: number;
  rank?: number;
  master?: string;
  'peer-timeout'?: number;
  'auto-resume'?: boolean;
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
      .option('auto-resume', { type: 'boolean', describe: 'resume --out from its latest checkpoint when it has one, else start (used by launch --max-restarts)' })
      .option('world-size', { type: 'number', describe: 'data-parallel world size (default: RANK/WORLD_SIZE, Slurm or Kubernetes variables, else 1)' })
      .option('rank', { type: 'number', describe: 'this process\'s rank' })
      .option('master', { type: 'string', describe: 'rank 0 address host:port (default MASTER_ADDR:MASTER_PORT)' })
      .option('peer-timeout', { type: 'number', default: 120, describe: 'seconds without traffic before a peer counts as lost (a training step blocks the event loop)' })
      .options(backendOption) as unknown as Argv<TrainArgs>,
  handler: handle(async (a: TrainArgs) => {
    if (!a.config && !a.resume) throw new ConfigError('give --config <yaml> to start a run or --resume <run dir> to continue one', { where: 'moecat train' });
    let loaded: ReturnType<typeof loadTrainConfig> | undefined;
    if (a.config) loaded = loadTrainConfig(a.config, a.set ?? []);
    const outDir = a.resume ?? a.out ?? path.join('runs', path.basename(a.config!, path.extname(a.config!)));
    const hasCheckpoint = fs.existsSync(outDir) && latestCheckpoint(outDir) !== null;
    const resume = !!a.resume || (!!a['auto-resume'] && hasCheckpoint);
    if (!resume && hasCheckpoint) {
      throw new ConfigError(`${outDir} already holds checkpoints`, { where: '--out', hint: 'continue it with --resume, or choose a new --out' });
    }
    const be = await startBackend(a.backend, loaded?.config.backend);
    const group = await joinGroup(a);
    const rank0 = !group || group.rank === 0;
    let bar: Progress | null = null;
    const res = await runTraining({
      outDir,
      config: loaded?.config,
      rawConfig: loaded?.raw,
      resume,
      dp: group ?? undefined,
      writeFiles: rank0,
      maxSteps: a['max-steps'],
      checkpointEvery: a['checkpoint-every'],
      backend: be.name,
      onStart: (t, info) => {
        if (!rank0) return;
        process.stderr.write(`run: ${outDir} | data: ${info.data.describe()} | params: ${t.layout.total.toLocaleString()}${info.resumedFrom ? ` | resumed from ${info.resumedFrom}` : ''}\n`);
        const target = Math.min(a['max-steps'] ?? t.cfg.train.steps, t.cfg.train.steps);
        bar = new Progress('train', target, t.state.step);
      },
      onStep: (m) => {
        // Fault drill for the launcher tests: a rank dies abruptly once, mid-run.
        const die = process.env.MOECAT_FAULT_EXIT_AT_STEP;
        if (die && Number(die) === m.step && (process.env.MOECAT_RESTART ?? '0') === '0' && String(group?.rank ?? 0) === (process.env.MOECAT_FAULT_RANK ?? '0')) {
          process.stderr.write(`fault drill: rank ${group?.rank ?? 0} exits at step ${m.step}\n`);
          process.kill(process.pid, 'SIGKILL');
        }
        (bar as Progress | null)?.update(m.step, `loss ${m.loss.toFixed(4)} | ${Math.round(m.tokens_per_s)} tok/s | ffn/tok ${m.ffn_experts_per_token.toFixed(2)}`);
      },
    });
    (bar as Progress | null)?.stop();
    await group?.close();
    const last = res.last;
    if (!last) process.stdout.write(`nothing to do: the run is at step ${res.trainer.state.step}\n`);
    if (last) process.stdout.write(`step ${last.step} loss ${last.loss.toFixed(4)} param_hash ${res.trainer.paramHash()}\n`);
    if (res.checkpoints.length) process.stdout.write(`checkpoint: ${res.checkpoints[res.checkpoints.length - 1]}\n`);
    res.trainer.dispose();
  }),
};

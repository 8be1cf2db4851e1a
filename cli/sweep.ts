/** `moecat sweep`: an LR (x init std) grid on a proxy config, resumable (docs/scaling.md). */
import type { Argv, CommandModule } from 'yargs';
import { ConfigError } from '../core/errors';
import { loadTrainConfig } from '../trainer/config';
import { runSweep } from '../trainer/sweep';
import { backendOption, handle, Progress, startBackend } from './common';

interface SweepArgs {
  config: string;
  lr: string[];
  'init-std'?: string[];
  steps: number;
  out: string;
  set?: string[];
  backend?: string;
  threads?: number;
}

/** Accepts `--lr 1e-3 3e-3` and `--lr 1e-3,3e-3`. */
export function parseList(flag: string, values: string[] | undefined): number[] | undefined {
  if (!values) return undefined;
  const out: number[] = [];
  for (const v of values.flatMap((x) => String(x).split(','))) {
    if (!v.trim()) continue;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new ConfigError(`'${v}' is not a positive number`, { where: flag });
    out.push(n);
  }
  return out;
}

export const command: CommandModule<object, SweepArgs> = {
  command: 'sweep',
  describe: 'sweep peak LR (and base init std) on a proxy config; resumable; writes results.csv/.json and loss_vs_lr.svg',
  builder: (y: Argv) =>
    y
      .option('config', { type: 'string', demandOption: true, describe: 'proxy training config (YAML)' })
      .option('lr', { type: 'string', array: true, demandOption: true, describe: 'peak LRs: --lr 1e-3 3e-3 or --lr 1e-3,3e-3' })
      .option('init-std', { type: 'string', array: true, describe: 'base init stds (model.initStd); default: the config\'s' })
      .option('steps', { type: 'number', demandOption: true, describe: 'training steps per point (sets train.steps)' })
      .option('out', { type: 'string', demandOption: true, describe: 'sweep directory (one run directory per point under points/)' })
      .option('set', { type: 'string', array: true, describe: 'override a config key for every point: --set data.seqLen=32' })
      .options(backendOption) as Argv<SweepArgs>,
  handler: handle(async (a: SweepArgs) => {
    const lrs = parseList('--lr', a.lr)!;
    const initStds = parseList('--init-std', a['init-std']);
    const cfg = loadTrainConfig(a.config, a.set ?? []).config;
    const be = await startBackend(a.backend, cfg.backend, { flag: a.threads, config: cfg.threads });
    let bar: Progress | null = null;
    const res = await runSweep({
      configFile: a.config,
      sets: a.set ?? [],
      lrs,
      initStds,
      steps: a.steps,
      outDir: a.out,
      backend: be.name,
      onPoint: (p, what) => {
        if (what === 'skipped') process.stderr.write(`${p.name}: finished earlier (${p.status}), not rerun\n`);
        if (what === 'started' || what === 'resumed') {
          process.stderr.write(`${p.name}: ${what}\n`);
          bar = new Progress(p.name, a.steps, 0);
        }
        if (what === 'finished') {
          (bar as Progress | null)?.stop();
          process.stderr.write(`${p.name}: ${p.status}${p.finalLoss !== null ? `, final loss ${p.finalLoss.toFixed(4)}` : ''} (${p.seconds.toFixed(0)} s)\n`);
        }
      },
      onStep: (_p, m) => (bar as Progress | null)?.update(m.step, `loss ${m.lm_loss.toFixed(4)}`),
    });
    process.stdout.write(`${'point'.padEnd(28)} ${'status'.padEnd(9)} final loss (${res.lossDefinition})\n`);
    for (const p of res.points) process.stdout.write(`${p.name.padEnd(28)} ${p.status.padEnd(9)} ${p.finalLoss === null ? '-' : p.finalLoss.toFixed(4)}${p.name === res.best ? '  <- best' : ''}\n`);
    process.stdout.write(`results: ${a.out}/results.csv, ${a.out}/results.json, ${a.out}/loss_vs_lr.svg\n`);
  }),
};

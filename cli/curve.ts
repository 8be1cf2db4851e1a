/** `moecat curve`: regime changes and jumps in a training curve (free-knot splines, arXiv 2405.13353). */
import type { Argv, CommandModule } from 'yargs';
import { detectChanges } from '../analysis/changepoints';
import { readMetricSeries } from '../analysis/metricsFile';
import { ConfigError } from '../core/errors';
import { handle } from './common';

interface CurveArgs {
  run: string;
  metric: string;
  x: string;
  seed: number;
  iters: number;
  chains: number;
  gamma: number;
  json: boolean;
}

export const command: CommandModule<object, CurveArgs> = {
  command: 'curve <run>',
  describe: 'find regime changes (slope changes) and jumps in a metric of metrics.jsonl',
  builder: (y: Argv) =>
    y
      .positional('run', { type: 'string', describe: 'run directory or metrics.jsonl', demandOption: true })
      .option('metric', { type: 'string', default: 'loss', describe: 'metric to analyse' })
      .option('x', { type: 'string', default: 'step', choices: ['step', 'log-step'], describe: 'axis the splines live on' })
      .option('seed', { type: 'number', default: 0, describe: 'seed of the MCMC chains' })
      .option('iters', { type: 'number', default: 6000, describe: 'MCMC iterations per chain (half burn-in)' })
      .option('chains', { type: 'number', default: 2, describe: 'independent chains pooled' })
      .option('gamma', { type: 'number', default: 1, describe: 'EBIC exponent of the knot prior (0 = BIC)' })
      .option('json', { type: 'boolean', default: false, describe: 'print one JSON object instead of text' }) as Argv<CurveArgs>,
  handler: handle(async (a: CurveArgs) => {
    if (!Number.isInteger(a.iters) || a.iters < 100) throw new ConfigError(`--iters must be an integer >= 100, got ${a.iters}`, { where: '--iters' });
    if (!Number.isInteger(a.chains) || a.chains < 1) throw new ConfigError(`--chains must be a positive integer, got ${a.chains}`, { where: '--chains' });
    if (!Number.isInteger(a.seed)) throw new ConfigError(`--seed must be an integer, got ${a.seed}`, { where: '--seed' });
    if (!(a.gamma >= 0)) throw new ConfigError(`--gamma must be >= 0, got ${a.gamma}`, { where: '--gamma' });
    const series = readMetricSeries(a.run, a.metric);
    const logX = a.x === 'log-step';
    if (logX && series.steps[0] <= 0) throw new ConfigError('--x log-step needs steps > 0', { where: series.file, hint: 'use --x step' });
    const t0 = Date.now();
    const res = detectChanges(series.steps, series.values, { seed: a.seed, logX, iters: a.iters, chains: a.chains, gamma: a.gamma });
    const seconds = (Date.now() - t0) / 1000;
    if (a.json) {
      process.stdout.write(JSON.stringify({ file: series.file, metric: a.metric, points: series.steps.length, binned: res.points, x: a.x, seed: a.seed, changes: res.changes, seconds }) + '\n');
      return;
    }
    process.stdout.write(`${series.file}: ${a.metric}, ${series.steps.length} points (steps ${series.steps[0]}..${series.steps[series.steps.length - 1]}), ${res.points} bins\n`);
    if (res.changes.length === 0) process.stdout.write('no regime changes or jumps found\n');
    for (const c of res.changes) {
      const what = c.kind === 'jump' ? 'jump (level shift)' : 'regime change (slope)';
      process.stdout.write(`step ${c.step}: ${what}, posterior probability ${c.probability.toFixed(2)}\n`);
    }
  }),
};

/** `moecat report`: a self-contained HTML page of a run's training signals (inline SVG, offline). */
import type { Argv, CommandModule } from 'yargs';
import * as fs from 'fs';
import * as path from 'path';
import { buildReport } from '../analysis/report/report';
import { ConfigError, errorMessage } from '../core/errors';
import { handle } from './common';

interface ReportArgs {
  run: string;
  out?: string;
  fit: boolean;
  seed: number;
  iters: number;
}

export const command: CommandModule<object, ReportArgs> = {
  command: 'report <run>',
  describe: 'write one self-contained HTML report (loss with spline fit and regime changes, LR, gradients, expert load, router, spikes)',
  builder: (y: Argv) =>
    y
      .positional('run', { type: 'string', describe: 'run directory (metrics.jsonl, config.yaml, checkpoints/)', demandOption: true })
      .option('out', { type: 'string', describe: 'output HTML file (default <run>/report.html)' })
      .option('fit', { type: 'boolean', default: true, describe: 'fit free-knot splines to the loss and mark regime changes (--no-fit to skip)' })
      .option('seed', { type: 'number', default: 0, describe: 'seed of the spline MCMC chains' })
      .option('iters', { type: 'number', default: 4000, describe: 'MCMC iterations per chain (half burn-in)' }) as Argv<ReportArgs>,
  handler: handle(async (a: ReportArgs) => {
    if (!Number.isInteger(a.iters) || a.iters < 100) throw new ConfigError(`--iters must be an integer >= 100, got ${a.iters}`, { where: '--iters' });
    if (!Number.isInteger(a.seed)) throw new ConfigError(`--seed must be an integer, got ${a.seed}`, { where: '--seed' });
    const out = a.out ?? path.join(a.run, 'report.html');
    const r = buildReport(a.run, { fit: a.fit, fitOptions: { seed: a.seed, iters: a.iters }, generatedAt: new Date().toISOString() });
    try {
      fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
      fs.writeFileSync(out, r.html);
    } catch (e) {
      throw new ConfigError(`cannot write the report: ${errorMessage(e)}`, { where: out });
    }
    const spikes = r.run.spikes.length ? `, ${r.run.spikes.length} spike(s)` : '';
    process.stdout.write(`wrote ${out}: ${r.plots.length} plots, steps ${r.run.steps[0].step}..${r.run.steps[r.run.steps.length - 1].step}${spikes}\n`);
  }),
};

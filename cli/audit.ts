/** `moecat audit`: recompute a step range of a run and compare fingerprints and parameter hashes. */
import type { Argv, CommandModule } from 'yargs';
import * as fs from 'fs';
import { auditRun, describeDivergence, recordedBackend } from '../trainer/audit';
import { BACKENDS } from '../core/backend';
import { DataError } from '../core/errors';
import { backendOption, handle, Progress, startBackend } from './common';

interface AuditArgs {
  run: string;
  from?: number;
  to?: number;
  backend?: string;
  threads?: number;
  json: boolean;
}

export const command: CommandModule<object, AuditArgs> = {
  command: 'audit <run>',
  describe: 'recompute a step range from the nearest checkpoint and compare it bit for bit with metrics.jsonl and with every checkpoint in the range (exit 0 identical, 1 diverged, 2 bad input)',
  builder: (y: Argv) =>
    y
      .positional('run', { type: 'string', describe: 'run directory (metrics.jsonl, config.yaml, checkpoints/)', demandOption: true })
      .option('from', { type: 'number', describe: 'first step to cover (default: first recorded)' })
      .option('to', { type: 'number', describe: 'last step to cover (default: last recorded)' })
      .option('json', { type: 'boolean', default: false, describe: 'print one JSON object instead of text' })
      .options(backendOption) as Argv<AuditArgs>,
  handler: handle(async (a: AuditArgs) => {
    if (!fs.existsSync(a.run)) throw new DataError('no such run directory', { where: a.run, hint: 'give the directory `moecat train` wrote' });
    // Bitwise comparison only makes sense on the backend that produced the run, so the recorded
    // backend wins over MOECAT_BACKEND; only --backend overrides it.
    const recorded = recordedBackend(a.run);
    const usable = recorded && (BACKENDS as readonly string[]).includes(recorded) ? recorded : undefined;
    const be = await startBackend(a.backend ?? usable, undefined, { flag: a.threads });
    if (recorded && recorded !== be.name) process.stderr.write(`warning: the run was recorded on ${recorded}, auditing on ${be.name}; results may legitimately differ\n`);
    let bar: Progress | null = null;
    const res = await auditRun(a.run, {
      from: a.from,
      to: a.to,
      onStep: (step, to) => {
        bar ??= new Progress('audit', to, step - 1);
        bar.update(step, 'identical so far');
      },
      onSpike: (e) => process.stderr.write(`spike replayed: step ${e.step} (data step ${e.data_step}, ${e.reason}), rolled back to ${e.restored_to}\n`),
    });
    (bar as Progress | null)?.stop();
    if (a.json) process.stdout.write(JSON.stringify(res) + '\n');
    else {
      const from = res.start.checkpoint ? `checkpoint ${res.start.checkpoint}` : 'initialisation';
      process.stdout.write(`recomputed from ${from} (step ${res.start.step}) on ${be.name}\n`);
      if (res.ok) process.stdout.write(`OK: steps ${res.from}..${res.to} identical (${res.checked} fingerprints, ${res.hashesChecked} parameter hashes, ${res.checkpointsChecked} checkpoint(s)${res.spikes.length ? `, ${res.spikes.length} spike(s) replayed` : ''})\n`);
      else process.stdout.write(`DIVERGED after ${res.checked} identical step(s): ${describeDivergence(res.firstDivergence!)}\n`);
    }
    process.exitCode = res.ok ? 0 : 1;
  }),
};

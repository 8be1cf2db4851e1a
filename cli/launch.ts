/** `moecat launch --nproc N [--max-restarts K] -- <train args>`: N data-parallel ranks on this host. */
import type { Argv, CommandModule } from 'yargs';
import * as path from 'path';
import { launchLocal } from '../parallel/launcher';
import { ConfigError } from '../core/errors';
import { handle } from './common';

interface LaunchArgs {
  nproc: number;
  'max-restarts': number;
  _: (string | number)[];
  '--'?: string[];
}

export const command: CommandModule<object, LaunchArgs> = {
  command: 'launch',
  describe: 'run N ranks of a moecat command on this host (rank/world/master/secret passed by environment)',
  builder: (y: Argv) =>
    y
      .parserConfiguration({ 'populate--': true })
      .option('nproc', { type: 'number', demandOption: true, describe: 'number of ranks' })
      .option('max-restarts', { type: 'number', default: 0, describe: 'restart the whole group this many times after a failure (ranks resume from the latest checkpoint with --auto-resume)' })
      .example('moecat launch --nproc 2 --max-restarts 1 -- train --config configs/tiny.yaml --out runs/dp2 --auto-resume', '') as Argv<LaunchArgs>,
  handler: handle(async (a: LaunchArgs) => {
    const rest = (a['--'] ?? []).map(String);
    if (rest.length === 0) throw new ConfigError('give the command to run after --', { where: 'moecat launch', hint: 'moecat launch --nproc 2 -- train --config configs/tiny.yaml' });
    if (!Number.isInteger(a.nproc) || a.nproc < 1) throw new ConfigError(`--nproc must be a positive integer, got ${a.nproc}`, { where: '--nproc' });
    const status = await launchLocal({
      nproc: a.nproc,
      argv: [path.join(__dirname, 'main.js'), ...rest],
      env: process.env,
      maxRestarts: a['max-restarts'],
      onRestart: (attempt, reason) => process.stderr.write(`launch: restarting the group (attempt ${attempt}): ${reason}\n`),
    });
    process.exitCode = status;
  }),
};

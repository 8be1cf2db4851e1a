/** `moecat verify`: checksums and readability of every checkpoint of a run, without recomputing. */
import type { Argv, CommandModule } from 'yargs';
import * as path from 'path';
import { verifyRun } from '../trainer/verify';
import { handle } from './common';

interface VerifyArgs {
  run: string;
  json: boolean;
}

export const command: CommandModule<object, VerifyArgs> = {
  command: 'verify <run>',
  describe: 'check every checkpoint of a run (checksums, files decode, weights match param_hash) without recomputing (exit 0 all good, 1 a checkpoint fails, 2 bad input)',
  builder: (y: Argv) =>
    y
      .positional('run', { type: 'string', describe: 'run directory (holds checkpoints/), or one step-* checkpoint directory', demandOption: true })
      .option('json', { type: 'boolean', default: false, describe: 'print one JSON object instead of text' }) as Argv<VerifyArgs>,
  handler: handle(async (a: VerifyArgs) => {
    const res = verifyRun(a.run);
    if (a.json) process.stdout.write(JSON.stringify(res) + '\n');
    else {
      for (const c of res.checkpoints) {
        const name = c.step >= 0 ? `step ${c.step}` : path.basename(c.dir);
        process.stdout.write(c.ok ? `OK     ${name}\n` : `FAILED ${name} (${c.file}): ${c.error}\n`);
      }
      const bad = res.checkpoints.filter((c) => !c.ok).length;
      process.stdout.write(res.ok ? `OK: ${res.checkpoints.length} checkpoint(s) verify\n` : `FAILED: ${bad} of ${res.checkpoints.length} checkpoint(s) do not verify\n`);
    }
    process.exitCode = res.ok ? 0 : 1;
  }),
};

/** `moecat transfer`: the target-width config from a proxy sweep's best point (docs/scaling.md). */
import type { Argv, CommandModule } from 'yargs';
import * as fs from 'fs';
import * as path from 'path';
import { transferFromSweep } from '../trainer/transfer';
import { handle } from './common';

interface TransferArgs {
  proxy: string;
  results: string;
  'target-width': number;
  out: string;
  point?: string;
  set?: string[];
}

export const command: CommandModule<object, TransferArgs> = {
  command: 'transfer',
  describe: 'write a target-width config from the best point of a proxy sweep (SP + Adam LR full-align)',
  builder: (y: Argv) =>
    y
      .option('proxy', { type: 'string', demandOption: true, describe: 'the proxy config the sweep ran (YAML)' })
      .option('results', { type: 'string', demandOption: true, describe: 'sweep directory (or its results.json)' })
      .option('target-width', { type: 'number', demandOption: true, describe: 'target dModel' })
      .option('out', { type: 'string', demandOption: true, describe: 'target config to write (YAML)' })
      .option('point', { type: 'string', describe: 'use this point (by name) instead of the best one' })
      .option('set', { type: 'string', array: true, describe: 'override a proxy config key before transfer (the sweep\'s --set keys)' }) as Argv<TransferArgs>,
  handler: handle(async (a: TransferArgs) => {
    const t = transferFromSweep({ proxy: a.proxy, sets: a.set, results: a.results, targetWidth: a['target-width'], point: a.point });
    fs.mkdirSync(path.dirname(path.resolve(a.out)), { recursive: true });
    fs.writeFileSync(a.out, t.text);
    process.stdout.write(
      `${a.out}: width ${t.changes[0].from} -> ${t.changes[0].to} (s = ${t.s}); from ${t.chosen.name}: lr ${t.chosen.lr}, initStd ${t.chosen.initStd}; ` +
        `hidden/router/unembedding lrScale ${t.lrScale.hidden.toPrecision(6)}, initScale ${t.initScale.hidden.toPrecision(6)}\n`,
    );
  }),
};

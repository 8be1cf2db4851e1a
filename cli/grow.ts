/** `moecat grow`: stack a trained checkpoint's layers into a deeper model (docs/scaling.md). */
import type { Argv, CommandModule } from 'yargs';
import { growCheckpoint, GrowOptimizer } from '../trainer/growth';
import { handle } from './common';

interface GrowArgs {
  checkpoint: string;
  factor: number;
  out: string;
  optimizer: string;
  set?: string[];
}

export const command: CommandModule<object, GrowArgs> = {
  command: 'grow',
  describe: 'grow a checkpoint r times deeper by stacking its layers ([1..L, 1..L] for r = 2); resume with `moecat train --resume <out>`',
  builder: (y: Argv) =>
    y
      .option('checkpoint', { type: 'string', demandOption: true, describe: 'checkpoint directory, `latest` link or run directory' })
      .option('factor', { type: 'number', demandOption: true, describe: 'depth multiplier r (integer >= 2)' })
      .option('out', { type: 'string', demandOption: true, describe: 'new run directory for the grown model' })
      .option('optimizer', { type: 'string', default: 'stack', choices: ['stack', 'reset'], describe: 'Adam moments: stack them like the layers, or reset them (and Adam t) to zero' })
      .option('set', { type: 'string', array: true, describe: 'override a key of the grown config, e.g. --set train.steps=600' }) as Argv<GrowArgs>,
  handler: handle(async (a: GrowArgs) => {
    const r = growCheckpoint({ checkpoint: a.checkpoint, factor: a.factor, outDir: a.out, optimizer: a.optimizer as GrowOptimizer, sets: a.set ?? [] });
    process.stdout.write(
      `grew ${r.parent} (${r.config.model.nLayers / a.factor} layers) to ${r.config.model.nLayers} layers at step ${r.state.step} ` +
        `(tokens ${r.state.tokens}, optimizer ${a.optimizer}); train.steps ${r.config.train.steps}\n` +
        `checkpoint: ${r.dir}\ncontinue with: moecat train --resume ${a.out}\n`,
    );
  }),
};

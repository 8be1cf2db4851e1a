/** `moecat export --format hf`: a checkpoint as a Hugging Face longcat_flash directory (docs/interop.md). */
import type { Argv, CommandModule } from 'yargs';
import { ConfigError } from '../core/errors';
import { exportHf } from '../model/hf/exportDir';
import { handle } from './common';

interface ExportArgs {
  checkpoint: string;
  format: string;
  out: string;
  'max-shard-mb': number;
  force: boolean;
}

export const command: CommandModule<object, ExportArgs> = {
  command: 'export',
  describe: 'write a checkpoint as a Hugging Face longcat_flash model directory (config.json, safetensors, tokenizer, chat template)',
  builder: (y: Argv) =>
    y
      .option('checkpoint', { type: 'string', demandOption: true, describe: 'checkpoint directory, `latest` link or run directory' })
      .option('format', { type: 'string', default: 'hf', describe: 'output format (hf: transformers longcat_flash)' })
      .option('out', { type: 'string', demandOption: true, describe: 'output directory' })
      .option('max-shard-mb', { type: 'number', default: 2048, describe: 'largest safetensors shard in MiB; above it the weights are sharded with model.safetensors.index.json' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing output directory' }) as Argv<ExportArgs>,
  handler: handle(async (a: ExportArgs) => {
    if (a.format !== 'hf') throw new ConfigError(`unknown format ${JSON.stringify(a.format)}`, { where: '--format', hint: 'the supported format is hf' });
    const mb = a['max-shard-mb'];
    if (!(Number.isFinite(mb) && mb > 0)) throw new ConfigError(`must be a positive number of MiB, got ${mb}`, { where: '--max-shard-mb' });
    const r = exportHf({ checkpoint: a.checkpoint, out: a.out, maxShardBytes: Math.floor(mb * 1024 * 1024), force: a.force });
    for (const n of r.notes) process.stderr.write(`note: ${n}\n`);
    process.stdout.write(`exported ${r.checkpoint} (${r.tensors} tensors) to ${r.dir}: ${r.files.join(', ')}\n`);
  }),
};

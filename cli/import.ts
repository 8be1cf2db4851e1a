/** `moecat import --hf DIR --out RUN`: a Hugging Face longcat_flash directory as a moecat run (docs/interop.md). */
import type { Argv, CommandModule } from 'yargs';
import { parseTokenizerJson } from '../data/tokenizerJson';
import { importHf } from '../model/hf/importDir';
import { parseTrainConfig } from '../trainer/config';
import { handle } from './common';

interface ImportArgs {
  hf: string;
  out: string;
}

export const command: CommandModule<object, ImportArgs> = {
  command: 'import',
  describe: 'turn a Hugging Face longcat_flash model directory into a run directory that train --init-from, generate and serve accept',
  builder: (y: Argv) =>
    y
      .option('hf', { type: 'string', demandOption: true, describe: 'Hugging Face model directory (config.json, safetensors, tokenizer.json)' })
      .option('out', { type: 'string', demandOption: true, describe: 'new run directory' }) as Argv<ImportArgs>,
  handler: handle(async (a: ImportArgs) => {
    const r = importHf({
      hf: a.hf,
      out: a.out,
      checkTraining: (raw, where) => void parseTrainConfig(raw, where),
      checkTokenizer: (text, where) => void parseTokenizerJson(text, where),
    });
    if (!r.tokenizer) process.stderr.write('note: no tokenizer.json; generate and serve need one in the checkpoint\n');
    if (!r.moecatBlock) process.stderr.write('note: config.json has no moecat block; the run config holds moecat defaults and a placeholder training section\n');
    process.stdout.write(`imported ${a.hf} (param_hash ${r.paramHash})\ncheckpoint: ${r.checkpoint}\ncontinue with: moecat train --config YOUR.yaml --init-from ${r.runDir}\n`);
  }),
};

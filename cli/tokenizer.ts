/** `moecat tokenizer train|encode`: byte-level BPE tokenizers as Hugging Face tokenizer.json. */
import fs from 'fs';
import path from 'path';
import type { Argv, CommandModule } from 'yargs';
import { handle, Progress } from './common';
import { parseExts } from './prepare';
import { Tokenizer } from '../data/tokenizer';
import { DEFAULT_EXTS, formatSkips, listInputs, noSkips, totalSkips } from '../data/sources';
import { sampleTexts } from '../data/sample';
import { DataError } from '../core/errors';

interface TrainArgs {
  input: string[];
  'vocab-size': number;
  out: string;
  ext?: string[];
  'text-field': string;
  'max-mb': number;
}

interface EncodeArgs {
  tokenizer: string;
  text: string;
}

const train: CommandModule<object, TrainArgs> = {
  command: 'train',
  describe: 'train a byte-level BPE tokenizer on text files, directories or JSONL',
  builder: (y: Argv) =>
    y
      .option('input', { type: 'string', array: true, demandOption: true, describe: 'files or directories' })
      .option('vocab-size', { type: 'number', demandOption: true, describe: 'vocabulary size (bytes + specials + merges), e.g. 4096' })
      .option('out', { type: 'string', default: 'tokenizer.json', describe: 'output tokenizer.json' })
      .option('ext', { type: 'string', array: true, describe: 'extensions read from directories (default .txt,.md,.jsonl)' })
      .option('text-field', { type: 'string', default: 'text', describe: 'JSONL field holding the text' })
      .option('max-mb', { type: 'number', default: 32, describe: 'train on at most this many MB of text' }) as Argv<TrainArgs>,
  handler: handle(async (a: TrainArgs) => {
    const exts = parseExts(a.ext) ?? DEFAULT_EXTS;
    const groups = a.input.map((p) => listInputs(p, exts));
    const skipped = noSkips();
    const texts = await sampleTexts(groups, Math.round(a['max-mb'] * 1e6), a['text-field'], skipped);
    if (texts.length === 0) throw new DataError(`no usable text in the inputs (skipped: ${formatSkips(skipped)})`, { where: a.input.join(', ') });
    if (totalSkips(skipped) > 0) process.stderr.write(`skipped ${totalSkips(skipped)} documents (${formatSkips(skipped)})\n`);
    const bar = new Progress('merges', Math.max(1, a['vocab-size'] - 263));
    const t0 = Date.now();
    const tok = Tokenizer.train(texts, { vocabSize: a['vocab-size'], onProgress: (d) => bar.update(d, '') });
    bar.stop();
    // tmp + rename: a crash never leaves a half-written tokenizer.json.
    fs.mkdirSync(path.dirname(path.resolve(a.out)), { recursive: true });
    const tmp = `${a.out}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, tok.toJSON());
    fs.renameSync(tmp, a.out);
    const mb = texts.reduce((s, t) => s + Buffer.byteLength(t), 0) / 1e6;
    process.stdout.write(`wrote ${a.out}: vocab ${tok.vocabSize}, ${tok.mergeCount} merges, trained on ${mb.toFixed(1)} MB in ${((Date.now() - t0) / 1000).toFixed(1)} s, sha256 ${tok.hash().slice(0, 12)}\n`);
  }),
};

const encode: CommandModule<object, EncodeArgs> = {
  command: 'encode',
  describe: 'show the tokens of a text',
  builder: (y: Argv) =>
    y
      .option('tokenizer', { type: 'string', demandOption: true, describe: 'tokenizer.json' })
      .option('text', { type: 'string', demandOption: true, describe: 'text to encode' }) as Argv<EncodeArgs>,
  handler: handle(async (a: EncodeArgs) => {
    const tok = Tokenizer.load(a.tokenizer);
    const ids = tok.encode(a.text);
    process.stdout.write(`${ids.length} tokens: ${ids.map((id) => `${id}:${JSON.stringify(tok.tokenText(id))}`).join(' ')}\n`);
  }),
};

export const command: CommandModule<object, object> = {
  command: 'tokenizer',
  describe: 'train or inspect a byte-level BPE tokenizer',
  builder: (y: Argv) => y.command(train).command(encode).demandCommand(1, 'give an action: train or encode') as Argv<object>,
  handler: () => undefined,
};

/** `moecat prepare`: text files, directories and JSONL -> tokenized Arrow shards + manifest. */
import type { Argv, CommandModule } from 'yargs';
import { handle, Progress } from './common';
import { parseSourceFlags, prepareCorpus, PrepareProgress } from '../data/prepare';
import { formatSkips } from '../data/sources';

interface PrepareArgs {
  source: string[];
  out: string;
  tokenizer?: string;
  'vocab-size'?: number;
  'text-field': string;
  ext?: string[];
  'shard-tokens'?: number;
  'sample-mb'?: number;
  force?: boolean;
}

/** `--ext .txt,.md --ext ts` -> ['.txt', '.md', '.ts'] */
export function parseExts(flags?: string[]): string[] | undefined {
  if (!flags || flags.length === 0) return undefined;
  return flags.flatMap((f) => f.split(',')).map((e) => e.trim()).filter(Boolean).map((e) => (e.startsWith('.') ? e : `.${e}`));
}

export const command: CommandModule<object, PrepareArgs> = {
  command: 'prepare',
  describe: 'tokenize text files, directories and JSONL into Arrow IPC shards with a manifest',
  builder: (y: Argv) =>
    y
      .option('source', { type: 'string', array: true, demandOption: true, describe: 'name=path (file, directory or .jsonl); repeat per source' })
      .option('out', { type: 'string', demandOption: true, describe: 'output directory (written atomically)' })
      .option('tokenizer', { type: 'string', describe: 'existing tokenizer.json (default: train one)' })
      .option('vocab-size', { type: 'number', describe: 'vocabulary size when training a tokenizer (default 4096)' })
      .option('text-field', { type: 'string', default: 'text', describe: 'JSONL field holding the text' })
      .option('ext', { type: 'string', array: true, describe: 'extensions read from directories (default .txt,.md,.jsonl)' })
      .option('shard-tokens', { type: 'number', describe: 'tokens per shard (default 4194304)' })
      .option('sample-mb', { type: 'number', describe: 'MB of text sampled to train the tokenizer (default 8)' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing output directory' })
      .example('moecat prepare --source prose=books/ --source code=src/ --ext .txt,.ts --out data/prepared', '') as Argv<PrepareArgs>,
  handler: handle(async (a: PrepareArgs) => {
    let bar: Progress | null = null;
    let phase = '';
    const onProgress = (p: PrepareProgress) => {
      if (p.phase !== phase) {
        bar?.stop();
        phase = p.phase;
        bar = new Progress(p.phase === 'tokenizer' ? 'train tokenizer' : 'tokenize', p.total);
      }
      const info = p.phase === 'tokenizer' ? 'merges' : p.source ? `bytes | ${p.source}: ${p.documents} docs, ${p.tokens} tokens` : 'bytes | done';
      (bar as Progress | null)?.update(p.done, info);
    };
    const m = await prepareCorpus({
      sources: parseSourceFlags(a.source),
      outDir: a.out,
      tokenizer: a.tokenizer,
      vocabSize: a['vocab-size'],
      textField: a['text-field'],
      exts: parseExts(a.ext),
      shardTokens: a['shard-tokens'],
      trainSampleBytes: a['sample-mb'] !== undefined ? Math.round(a['sample-mb'] * 1e6) : undefined,
      overwrite: a.force,
      onProgress,
      onLog: (line) => process.stderr.write(`${line}\n`),
    });
    (bar as Progress | null)?.stop();
    for (const [name, s] of Object.entries(m.sources)) {
      process.stdout.write(`${name}: ${s.documents} documents, ${s.tokens} tokens, ${s.shards.length} shard(s); skipped ${formatSkips(s.skipped)}\n`);
    }
    process.stdout.write(`wrote ${a.out}/manifest.json (tokenizer ${m.tokenizer.sha256.slice(0, 12)}, vocab ${m.tokenizer.vocabSize})\n`);
  }),
};

/**
 * `prepare`: text files, directories and JSONL -> tokenized Arrow IPC shards per source plus a
 * manifest (DESIGN.md section 7). Documents stream through one at a time; a tokenizer is
 * trained on a bounded sample when none is given. The whole output appears atomically.
 */
import fs from 'fs';
import path from 'path';
import { ConfigError, DataError } from '../core/errors';
import { writeFileDurable } from '../core/fsutil';
import { Tokenizer } from './tokenizer';
import { ShardWriter } from './shards';
import { Manifest, MANIFEST_FORMAT, ManifestSource, writeManifest } from './manifest';
import { DEFAULT_EXTS, formatSkips, InputFile, listInputs, noSkips, readDocs, SkipCounts, SkipReason, totalSkips } from './sources';
import { sampleTexts } from './sample';
import { checkOutDir, commitDir, removeStaleTmpDirs, tmpDirFor } from './atomicDir';

export interface SourceSpec {
  name: string;
  path: string;
}

export interface PrepareProgress {
  phase: 'tokenizer' | 'tokenize';
  done: number;
  total: number;
  source?: string;
  documents?: number;
  tokens?: number;
}

export interface PrepareOptions {
  sources: SourceSpec[];
  outDir: string;
  /** A Tokenizer, or the path of a tokenizer.json; when absent one is trained. */
  tokenizer?: Tokenizer | string;
  /** Vocabulary size of a trained tokenizer (default 4096). */
  vocabSize?: number;
  /** JSONL field holding the document text (default `text`). */
  textField?: string;
  /** File extensions read from directories (default .txt, .md, .jsonl). */
  exts?: string[];
  /** Tokens per shard before a new one starts (default 4M, ~16 MB). */
  shardTokens?: number;
  /** Text sampled across sources to train a tokenizer (default 8 MB). */
  trainSampleBytes?: number;
  /** Replace an existing output directory. */
  overwrite?: boolean;
  onProgress?: (p: PrepareProgress) => void;
  onLog?: (line: string) => void;
  /** Test hook: runs after each shard is written (throw or kill here to simulate a crash). */
  afterShard?: (file: string) => void;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Parses `name=path` flags. */
export function parseSourceFlags(flags: string[]): SourceSpec[] {
  return flags.map((f) => {
    const i = f.indexOf('=');
    if (i <= 0 || i === f.length - 1) throw new ConfigError(`--source ${JSON.stringify(f)} must look like name=path`, { where: '--source' });
    return { name: f.slice(0, i), path: f.slice(i + 1) };
  });
}

function checkSources(sources: SourceSpec[]): void {
  if (sources.length === 0) throw new ConfigError('give at least one source', { where: '--source', hint: 'e.g. --source prose=books/' });
  const seen = new Set<string>();
  for (const s of sources) {
    if (!NAME_RE.test(s.name)) throw new ConfigError(`source name ${JSON.stringify(s.name)} must be letters, digits, _ . -`, { where: '--source' });
    if (seen.has(s.name)) throw new ConfigError(`source name "${s.name}" is given twice`, { where: '--source' });
    seen.add(s.name);
  }
}

export async function prepareCorpus(opts: PrepareOptions): Promise<Manifest> {
  checkSources(opts.sources);
  const textField = opts.textField ?? 'text';
  const exts = opts.exts ?? DEFAULT_EXTS;
  const shardTokens = opts.shardTokens ?? 4 << 20;
  const log = opts.onLog ?? (() => undefined);
  checkOutDir(opts.outDir, !!opts.overwrite);
  for (const stale of removeStaleTmpDirs(opts.outDir)) log(`removed ${stale} left by an interrupted prepare`);

  const inputs = new Map<string, InputFile[]>();
  for (const s of opts.sources) {
    const files = listInputs(s.path, exts);
    if (files.length === 0) throw new DataError(`source "${s.name}" has no input files with extensions ${exts.join(',')}`, { where: s.path, hint: 'pass --ext to choose extensions' });
    inputs.set(s.name, files);
  }

  const tmp = tmpDirFor(opts.outDir);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    let tok: Tokenizer;
    const trained = opts.tokenizer === undefined;
    if (opts.tokenizer instanceof Tokenizer) tok = opts.tokenizer;
    else if (typeof opts.tokenizer === 'string') tok = Tokenizer.load(opts.tokenizer);
    else {
      const texts = await sampleTexts([...inputs.values()], opts.trainSampleBytes ?? 8 << 20, textField);
      const vocabSize = opts.vocabSize ?? 4096;
      log(`training a ${vocabSize}-token BPE tokenizer on ${(texts.reduce((a, t) => a + t.length, 0) / 1e6).toFixed(1)} MB of sampled text`);
      tok = Tokenizer.train(texts, { vocabSize, onProgress: (done, total) => opts.onProgress?.({ phase: 'tokenizer', done, total }) });
    }
    writeFileDurable(path.join(tmp, 'tokenizer.json'), tok.toJSON());

    const bytesTotal = [...inputs.values()].flat().reduce((a, f) => a + f.size, 0);
    let bytesDone = 0;
    const sources: Record<string, ManifestSource> = {};
    const allSkips = noSkips();
    for (const s of opts.sources) {
      const skipped = noSkips();
      const examples: string[] = [];
      const onSkip = (reason: SkipReason, where: string) => {
        if (examples.length < 3) examples.push(`${reason} at ${where}`);
      };
      const writer = new ShardWriter(tmp, s.name, shardTokens, opts.afterShard);
      let documents = 0;
      let tokens = 0;
      let bytes = 0;
      for (const f of inputs.get(s.name)!) {
        for await (const doc of readDocs(f, { textField, skipped, onSkip, onBytes: (n) => (bytesDone += n) })) {
          const ids = tok.encode(doc);
          const nBytes = typeof doc === 'string' ? Buffer.byteLength(doc) : doc.byteLength;
          writer.add(documents, ids, nBytes);
          documents++;
          tokens += ids.length;
          bytes += nBytes;
          opts.onProgress?.({ phase: 'tokenize', done: Math.min(bytesDone, bytesTotal), total: bytesTotal, source: s.name, documents, tokens });
        }
      }
      writer.flush();
      opts.onProgress?.({ phase: 'tokenize', done: Math.min(bytesDone, bytesTotal), total: bytesTotal, source: s.name, documents, tokens });
      if (totalSkips(skipped) > 0) log(`source ${s.name}: skipped ${totalSkips(skipped)} (${formatSkips(skipped)}); e.g. ${examples.join('; ')}`);
      if (documents === 0) {
        throw new DataError(`source "${s.name}" has no usable documents (skipped: ${formatSkips(skipped)})`, { where: s.path, hint: 'check the path, --ext and --text-field' });
      }
      for (const k of Object.keys(allSkips) as (keyof SkipCounts)[]) allSkips[k] += skipped[k];
      sources[s.name] = { path: s.path, files: inputs.get(s.name)!.length, documents, tokens, bytes, skipped, shards: writer.shards };
    }
    opts.onProgress?.({ phase: 'tokenize', done: bytesTotal, total: bytesTotal });
    const vals = Object.values(sources);
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      tokenizer: { file: 'tokenizer.json', sha256: tok.hash(), vocabSize: tok.vocabSize, eos: tok.special.eos, trained },
      sources,
      skipped: allSkips,
      totals: {
        documents: vals.reduce((a, v) => a + v.documents, 0),
        tokens: vals.reduce((a, v) => a + v.tokens, 0),
        bytes: vals.reduce((a, v) => a + v.bytes, 0),
      },
    };
    // The manifest is the last file written; the directory rename then publishes everything.
    writeManifest(tmp, manifest);
    commitDir(tmp, opts.outDir);
    log(`prepared ${manifest.totals.documents} documents, ${manifest.totals.tokens} tokens; skipped ${totalSkips(allSkips)} (${formatSkips(allSkips)})`);
    return manifest;
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/**
 * `moecat domains fit|tag`: label documents with mixture domains from a few labelled examples
 * by FLGP (arXiv 2405.13342; data/domains/). Thin: read JSONL, call data/domains/tagger, write.
 *
 *   moecat domains fit --data docs.jsonl --labels labels.jsonl --out model.json [--tags tags.jsonl]
 *   moecat domains tag --model model.json --data new.jsonl --out tags.jsonl
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Argv, CommandModule } from 'yargs';
import { DataError } from '../core/errors';
import { fitDomainModel, InputDoc, InputLabel, parseDomainModel, tagDocuments, Tagged } from '../data/domains/tagger';
import { handle } from './common';

/** Non-empty lines of a JSONL file as objects; a malformed line is refused with its number. */
function readJsonl(file: string, what: string): { line: number; value: Record<string, unknown> }[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new DataError(`cannot read ${what} file`, { where: file, cause: e });
  }
  const out: { line: number; value: Record<string, unknown> }[] = [];
  text.split('\n').forEach((raw, k) => {
    if (!raw.trim()) return;
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch (e) {
      throw new DataError(`line is not valid JSON`, { where: `${file}:${k + 1}`, cause: e });
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new DataError('line is not a JSON object', { where: `${file}:${k + 1}` });
    out.push({ line: k + 1, value: v as Record<string, unknown> });
  });
  return out;
}

function readDocs(file: string): InputDoc[] {
  return readJsonl(file, 'data').map(({ line, value }) => {
    if (typeof value.text !== 'string') throw new DataError('record has no string "text" field', { where: `${file}:${line}` });
    const id = value.id;
    if (id !== undefined && typeof id !== 'string' && typeof id !== 'number') throw new DataError('"id" must be a string or number', { where: `${file}:${line}` });
    return id === undefined ? { text: value.text } : { text: value.text, id };
  });
}

function readLabels(file: string): InputLabel[] {
  return readJsonl(file, 'labels').map(({ line, value }) => {
    const where = `${file}:${line}`;
    if (typeof value.domain !== 'string' || !value.domain) throw new DataError('record has no non-empty string "domain"', { where });
    if (value.index !== undefined && !Number.isInteger(value.index)) throw new DataError('"index" must be an integer (0-based record number in --data)', { where });
    if (value.index === undefined && typeof value.id !== 'string' && typeof value.id !== 'number') throw new DataError('record needs "index" or "id"', { where });
    return { index: value.index as number | undefined, id: value.id as string | number | undefined, domain: value.domain };
  });
}

function writeTags(file: string, tags: Tagged[]): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, tags.map((t) => JSON.stringify(t)).join('\n') + (tags.length ? '\n' : ''));
}

function summary(tags: Tagged[]): string {
  const counts = new Map<string, number>();
  for (const t of tags) counts.set(t.domain, (counts.get(t.domain) ?? 0) + 1);
  return [...counts].map(([d, c]) => `${d}=${c}`).join(' ');
}

interface FitArgs {
  data: string;
  labels: string;
  out: string;
  tags?: string;
  anchors?: number;
  r?: number;
  K?: number;
  affinity?: string;
  seed?: number;
  dim?: number;
  'hash-bits'?: number;
  context?: number;
}

interface TagArgs {
  model: string;
  data: string;
  out: string;
}

const fitCommand: CommandModule<object, FitArgs> = {
  command: 'fit',
  describe: 'fit an FLGP domain model from documents and a few labels',
  builder: (y: Argv) =>
    y
      .option('data', { type: 'string', demandOption: true, describe: 'JSONL of documents {text, id?}' })
      .option('labels', { type: 'string', demandOption: true, describe: 'JSONL of labels {index | id, domain}; index is the 0-based record number in --data' })
      .option('out', { type: 'string', demandOption: true, describe: 'model file to write (JSON)' })
      .option('tags', { type: 'string', describe: 'also write the fitted documents\' tags here (JSONL)' })
      .option('anchors', { type: 'number', describe: 'number of k-means anchors s (default 300, at most n/2)' })
      .option('r', { type: 'number', describe: 'nearest anchors per document (default 3)' })
      .option('K', { type: 'number', describe: 'graph-Laplacian eigenpairs (default 100)' })
      .option('affinity', { type: 'string', choices: ['se', 'lae'], describe: 'anchor affinity: squared-exponential or local anchor embedding (default se)' })
      .option('seed', { type: 'number', describe: 'seed for anchors and the random projection (default 0)' })
      .option('dim', { type: 'number', describe: 'embedding dimension after random projection (default 100)' })
      .option('hash-bits', { type: 'number', describe: 'log2 of the n-gram hash dimension (default 18)' })
      .option('context', { type: 'number', default: 2000, describe: 'unlabelled documents kept in the model as graph context' }) as Argv<FitArgs>,
  handler: handle(async (a: FitArgs) => {
    const docs = readDocs(a.data);
    const labels = readLabels(a.labels);
    const options = Object.fromEntries(
      Object.entries({ anchors: a.anchors, r: a.r, K: a.K, affinity: a.affinity, seed: a.seed, dim: a.dim, hashBits: a['hash-bits'] }).filter(([, v]) => v !== undefined),
    );
    process.stderr.write(`domains fit: ${docs.length} documents, ${labels.length} labels\n`);
    const t0 = Date.now();
    const { model, tags } = fitDomainModel(docs, labels, options, a.context);
    fs.mkdirSync(path.dirname(path.resolve(a.out)), { recursive: true });
    fs.writeFileSync(a.out, JSON.stringify(model));
    if (a.tags) writeTags(a.tags, tags);
    process.stdout.write(`model: ${a.out} | domains: ${model.domains.join(', ')} | t: ${model.fit.t.map((t) => t.toPrecision(3)).join(', ')} | tagged: ${summary(tags)} | ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  }),
};

const tagCommand: CommandModule<object, TagArgs> = {
  command: 'tag',
  describe: 'tag documents with the domains of an FLGP domain model',
  builder: (y: Argv) =>
    y
      .option('model', { type: 'string', demandOption: true, describe: 'model file from moecat domains fit' })
      .option('data', { type: 'string', demandOption: true, describe: 'JSONL of documents {text, id?}' })
      .option('out', { type: 'string', demandOption: true, describe: 'JSONL to write: {index, id?, domain, probability, probabilities}' }) as Argv<TagArgs>,
  handler: handle(async (a: TagArgs) => {
    let raw: unknown;
    try {
      raw = JSON.parse(fs.readFileSync(a.model, 'utf8'));
    } catch (e) {
      throw new DataError('cannot read the model file as JSON', { where: a.model, cause: e });
    }
    const model = parseDomainModel(raw, a.model);
    const docs = readDocs(a.data);
    const t0 = Date.now();
    const tags = tagDocuments(model, docs);
    writeTags(a.out, tags);
    process.stdout.write(`tagged ${tags.length} documents -> ${a.out} | ${summary(tags)} | ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  }),
};

export const command: CommandModule = {
  command: 'domains <command>',
  describe: 'label documents with mixture domains from a few examples (FLGP)',
  builder: (y: Argv) => y.command(fitCommand).command(tagCommand).demandCommand(1, 'give fit or tag'),
  handler: () => undefined,
};

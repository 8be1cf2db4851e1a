/**
 * Reading raw inputs for `prepare`: text files, directories (recursively, by extension) and
 * JSONL. Bad input is skipped and counted, never silently trained on (DESIGN.md section 10):
 * empty documents, binary files, lines that are not JSON, and records without the text field.
 */
import fs from 'fs';
import path from 'path';
import readline from 'readline';
import { DataError } from '../core/errors';

export interface SkipCounts {
  empty: number;
  binary: number;
  invalid_json: number;
  missing_field: number;
}

export function noSkips(): SkipCounts {
  return { empty: 0, binary: 0, invalid_json: 0, missing_field: 0 };
}

export type SkipReason = keyof SkipCounts;

export interface InputFile {
  file: string;
  size: number;
  jsonl: boolean;
}

export interface ReadOptions {
  textField: string;
  /** Counts skipped documents by reason. */
  skipped: SkipCounts;
  /** Called once per skip with a file[:line] location (for the first-few examples). */
  onSkip?: (reason: SkipReason, where: string) => void;
  /** Called with input bytes consumed, for progress. */
  onBytes?: (n: number) => void;
}

export const DEFAULT_EXTS = ['.txt', '.md', '.jsonl'];

/** Input files of a source path, sorted so document ids are reproducible. */
export function listInputs(p: string, exts: string[]): InputFile[] {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    throw new DataError('input path does not exist', { where: p });
  }
  const norm = exts.map((e) => (e.startsWith('.') ? e : `.${e}`).toLowerCase());
  const out: InputFile[] = [];
  const walk = (dir: string) => {
    for (const name of fs.readdirSync(dir).sort()) {
      if (name.startsWith('.')) continue; // hidden files and folders (.git) are never corpus
      const full = path.join(dir, name);
      const s = fs.statSync(full);
      if (s.isDirectory()) walk(full);
      else if (s.isFile() && norm.some((e) => name.toLowerCase().endsWith(e))) out.push({ file: full, size: s.size, jsonl: isJsonl(full) });
    }
  };
  if (st.isDirectory()) walk(p);
  else out.push({ file: p, size: st.size, jsonl: isJsonl(p) });
  return out;
}

function isJsonl(file: string): boolean {
  return /\.(jsonl|ndjson)$/i.test(file);
}

/**
 * Classifies a document: `empty` when it has no non-space content, `binary` when it holds NUL
 * bytes or more than 10% control bytes / invalid UTF-8 in its first 64 KiB, else null.
 */
export function classify(doc: Uint8Array | string): 'empty' | 'binary' | null {
  const text = typeof doc === 'string' ? doc.slice(0, 65536) : Buffer.from(doc.buffer, doc.byteOffset, Math.min(doc.byteLength, 65536)).toString('utf8');
  if (text.trim().length === 0) return 'empty';
  let bad = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0) return 'binary';
    if ((c < 0x20 && c !== 9 && c !== 10 && c !== 13 && c !== 12) || c === 0x7f || c === 0xfffd) bad++;
  }
  return bad > text.length * 0.1 ? 'binary' : null;
}

/** Yields the documents of one input file (a whole text file, or each JSONL record's field). */
export async function* readDocs(input: InputFile, opts: ReadOptions): AsyncGenerator<Uint8Array | string> {
  const skip = (reason: SkipReason, where: string) => {
    opts.skipped[reason]++;
    opts.onSkip?.(reason, where);
  };
  if (!input.jsonl) {
    const bytes = fs.readFileSync(input.file);
    opts.onBytes?.(bytes.byteLength);
    const c = classify(bytes);
    if (c) skip(c, input.file);
    else yield new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return;
  }
  const rl = readline.createInterface({ input: fs.createReadStream(input.file), crlfDelay: Infinity });
  let line = 0;
  for await (const raw of rl) {
    line++;
    opts.onBytes?.(Buffer.byteLength(raw) + 1);
    if (raw.trim().length === 0) continue; // blank lines separate nothing in JSONL
    const where = `${input.file}:${line}`;
    let rec: unknown;
    try {
      rec = JSON.parse(raw);
    } catch {
      skip('invalid_json', where);
      continue;
    }
    const value = rec !== null && typeof rec === 'object' && !Array.isArray(rec) ? (rec as Record<string, unknown>)[opts.textField] : undefined;
    if (typeof value !== 'string') {
      skip('missing_field', where);
      continue;
    }
    const c = classify(value);
    if (c) skip(c, where);
    else yield value;
  }
}

export function formatSkips(s: SkipCounts): string {
  return `empty ${s.empty}, binary ${s.binary}, invalid JSON ${s.invalid_json}, missing field ${s.missing_field}`;
}

export function totalSkips(s: SkipCounts): number {
  return s.empty + s.binary + s.invalid_json + s.missing_field;
}

/**
 * Byte-level helpers for the BPE tokenizer: GPT-2's byte <-> printable-character map (so a
 * tokenizer.json vocabulary is plain text, as Hugging Face `ByteLevel` expects) and a UTF-8
 * scanner that splits arbitrary bytes into valid-text runs and stray bytes, so invalid UTF-8
 * still round-trips exactly.
 */

/** GPT-2 `bytes_to_unicode`: printable bytes map to themselves, the rest to U+0100 and up. */
function buildByteChars(): string[] {
  const keep: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) keep.push(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.push(b);
  for (let b = 0xae; b <= 0xff; b++) keep.push(b);
  const chars = new Array<string>(256);
  const kept = new Set(keep);
  let n = 0;
  for (let b = 0; b < 256; b++) chars[b] = kept.has(b) ? String.fromCharCode(b) : String.fromCharCode(256 + n++);
  return chars;
}

export const BYTE_CHARS: readonly string[] = buildByteChars();
const CHAR_TO_BYTE = new Map<string, number>(BYTE_CHARS.map((c, b) => [c, b]));

/** Bytes -> their byte-level string (one char per byte). */
export function bytesToByteLevel(bytes: ArrayLike<number>): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += BYTE_CHARS[bytes[i]];
  return s;
}

/** Byte-level string -> bytes, or null when a char is not a byte-level char. */
export function byteLevelToBytes(s: string): Uint8Array | null {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const b = CHAR_TO_BYTE.get(s[i]);
    if (b === undefined) return null;
    out[i] = b;
  }
  return out;
}

const encoder = new TextEncoder();
export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

/** Length of the valid UTF-8 sequence starting at i, or 0 when the byte there starts none. */
function utf8SeqLen(b: Uint8Array, i: number): number {
  const c = b[i];
  if (c < 0x80) return 1;
  const cont = (k: number) => i + k < b.length && (b[i + k] & 0xc0) === 0x80;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (!cont(1) || !cont(2)) return 0;
    const c1 = b[i + 1];
    if (c === 0xe0 && c1 < 0xa0) return 0; // overlong
    if (c === 0xed && c1 >= 0xa0) return 0; // surrogate
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    const c1 = b[i + 1];
    if (c === 0xf0 && c1 < 0x90) return 0; // overlong
    if (c === 0xf4 && c1 >= 0x90) return 0; // > U+10FFFF
    return 4;
  }
  return 0;
}

/**
 * Splits bytes into maximal valid-UTF-8 runs (`text` set) and single invalid bytes (`text`
 * null), in order. Valid input gives one run without copying.
 */
export function utf8Runs(b: Uint8Array): { start: number; end: number; valid: boolean }[] {
  const runs: { start: number; end: number; valid: boolean }[] = [];
  let i = 0;
  let runStart = 0;
  while (i < b.length) {
    const n = utf8SeqLen(b, i);
    if (n > 0) {
      i += n;
      continue;
    }
    if (i > runStart) runs.push({ start: runStart, end: i, valid: true });
    runs.push({ start: i, end: i + 1, valid: false });
    i++;
    runStart = i;
  }
  if (i > runStart) runs.push({ start: runStart, end: i, valid: true });
  return runs;
}

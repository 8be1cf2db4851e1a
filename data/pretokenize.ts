/**
 * Pre-tokenization: GPT-2's split regex cuts text into word-like chunks before BPE, so merges
 * never cross a word boundary and training counts unique chunks instead of scanning the corpus.
 * The pattern is the one Hugging Face `ByteLevel(use_regex=true)` uses, so tokenizer.json
 * files stay compatible.
 */
import { utf8, utf8Runs } from './byteLevel';

export const GPT2_SPLIT = /'(?:s|t|re|ve|m|ll|d)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Calls `fn` for each chunk of `text` (the chunks concatenate to `text`). */
export function forEachChunk(text: string, fn: (chunk: string) => void): void {
  const re = new RegExp(GPT2_SPLIT.source, GPT2_SPLIT.flags);
  let last = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    // The alternatives cover every character; a gap would only appear for lone surrogates.
    if (m.index > last) fn(text.slice(last, m.index));
    fn(m[0]);
    last = m.index + m[0].length;
  }
  if (last < text.length) fn(text.slice(last));
}

/**
 * Chunks of arbitrary bytes: valid UTF-8 runs are split like text; each invalid byte is a chunk
 * of its own (it can only ever be its own byte token, which keeps the round trip exact).
 */
export function byteChunks(bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const r of utf8Runs(bytes)) {
    if (!r.valid) {
      out.push(bytes.subarray(r.start, r.end));
      continue;
    }
    const text = Buffer.from(bytes.buffer, bytes.byteOffset + r.start, r.end - r.start).toString('utf8');
    forEachChunk(text, (c) => out.push(utf8(c)));
  }
  return out;
}

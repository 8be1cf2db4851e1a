/**
 * Byte-level BPE training with incremental pair counts: pair statistics are computed once over
 * the unique pre-tokenized chunks (weighted by frequency); each merge then touches only the
 * chunks that contain the merged pair, and a lazily-invalidated heap finds the next best pair.
 * This is what makes ~5 MB of text train in seconds rather than minutes.
 */
import { PairHeap } from './heap';
import { forEachChunk } from './pretokenize';
import { utf8 } from './byteLevel';

/** Pair keys pack two ids < 65536 into one safe integer. */
const KEY = 65536;

export interface TrainedMerges {
  /** Merges in rank order: [left id, right id, result id]. */
  merges: [number, number, number][];
  /** Bytes of every non-special token id (index = id; specials are empty). */
  tokenBytes: Uint8Array[];
}

/** Counts unique pre-tokenized chunks over all texts. */
export function countChunks(texts: Iterable<string>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const t of texts) forEachChunk(t, (c) => counts.set(c, (counts.get(c) ?? 0) + 1));
  return counts;
}

/**
 * Learns merges until the vocabulary holds `vocabSize` ids (bytes + `reserved` specials +
 * merges) or no pair occurs at least `minFrequency` times. Ties between equally frequent pairs
 * go to the smaller (left, right) key, so training is deterministic.
 */
export function trainMerges(
  chunkCounts: Map<string, number>,
  opts: { vocabSize: number; reserved: number; minFrequency?: number; onProgress?: (done: number, total: number) => void },
): TrainedMerges {
  const minFreq = Math.max(1, opts.minFrequency ?? 2);
  const tokenBytes: Uint8Array[] = [];
  for (let b = 0; b < 256; b++) tokenBytes.push(Uint8Array.of(b));
  for (let s = 0; s < opts.reserved; s++) tokenBytes.push(new Uint8Array(0));
  const idOfBytes = new Map<string, number>();
  for (let b = 0; b < 256; b++) idOfBytes.set(String.fromCharCode(b), b);

  // Words: unique chunks as id sequences, shrinking in place as merges apply.
  const words: Int32Array[] = [];
  const lens: number[] = [];
  const freq: number[] = [];
  for (const [chunk, n] of chunkCounts) {
    const bytes = utf8(chunk);
    if (bytes.length < 2) continue;
    words.push(Int32Array.from(bytes));
    lens.push(bytes.length);
    freq.push(n);
  }

  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, number[]>();
  const addPair = (key: number, w: number, f: number) => {
    pairCount.set(key, (pairCount.get(key) ?? 0) + f);
    const list = pairWords.get(key);
    if (list) {
      if (list[list.length - 1] !== w) list.push(w);
    } else pairWords.set(key, [w]);
  };
  for (let w = 0; w < words.length; w++) {
    const s = words[w];
    for (let i = 0; i + 1 < lens[w]; i++) addPair(s[i] * KEY + s[i + 1], w, freq[w]);
  }
  const heap = new PairHeap();
  for (const [key, c] of pairCount) heap.push(-c, key);

  const merges: [number, number, number][] = [];
  const total = Math.max(0, opts.vocabSize - tokenBytes.length);
  const seen = new Int32Array(words.length).fill(-1);
  const touched = new Set<number>();
  const top: [number, number] = [0, 0];
  let nextId = tokenBytes.length;
  while (nextId < opts.vocabSize && heap.pop(top)) {
    const key = top[1];
    const count = pairCount.get(key) ?? 0;
    if (count !== -top[0]) continue; // stale entry: the current count was pushed separately
    if (count < minFreq) break;
    const a = Math.floor(key / KEY);
    const b = key % KEY;
    const joined = new Uint8Array(tokenBytes[a].length + tokenBytes[b].length);
    joined.set(tokenBytes[a]);
    joined.set(tokenBytes[b], tokenBytes[a].length);
    // Two merge paths can spell the same bytes; reuse the id like Hugging Face's trainer does.
    const latin = Buffer.from(joined).toString('latin1');
    let x = idOfBytes.get(latin);
    if (x === undefined) {
      x = nextId++;
      tokenBytes.push(joined);
      idOfBytes.set(latin, x);
    }
    merges.push([a, b, x]);
    touched.clear();
    const bump = (k: number, w: number, f: number) => {
      if (f > 0) addPair(k, w, f);
      else pairCount.set(k, (pairCount.get(k) ?? 0) + f);
      touched.add(k);
    };
    for (const w of pairWords.get(key) ?? []) {
      if (seen[w] === merges.length) continue;
      seen[w] = merges.length;
      const s = words[w];
      const n = lens[w];
      const f = freq[w];
      let j = 0;
      for (let i = 0; i < n; ) {
        if (i + 1 < n && s[i] === a && s[i + 1] === b) {
          // Left neighbour is read from the rewritten prefix so back-to-back merges chain right.
          if (j > 0) {
            bump(s[j - 1] * KEY + a, w, -f);
            bump(s[j - 1] * KEY + x, w, f);
          }
          if (i + 2 < n) {
            bump(b * KEY + s[i + 2], w, -f);
            bump(x * KEY + s[i + 2], w, f);
          }
          s[j++] = x;
          i += 2;
        } else s[j++] = s[i++];
      }
      lens[w] = j;
    }
    pairCount.delete(key);
    pairWords.delete(key);
    for (const k of touched) {
      if (k === key) continue;
      const c = pairCount.get(k) ?? 0;
      if (c > 0) heap.push(-c, k);
      else {
        pairCount.delete(k);
        pairWords.delete(k);
      }
    }
    if (opts.onProgress && (merges.length % 64 === 0)) opts.onProgress(Math.min(total, nextId - 256 - opts.reserved), total);
  }
  opts.onProgress?.(total, total);
  return { merges, tokenBytes };
}

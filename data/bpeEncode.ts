/**
 * Applies learned merges to one pre-tokenized chunk: always the lowest-rank adjacent pair
 * first, leftmost first among equals (GPT-2 / Hugging Face BPE semantics). Short chunks use a
 * plain scan; long ones (code, base64, runs of punctuation) a linked list plus heap, so a
 * pathological chunk costs O(n log n) instead of O(n^2).
 */
import { PairHeap } from './heap';

const KEY = 65536;

export class MergeTable {
  /** pair key -> rank */
  private readonly rank = new Map<number, number>();
  /** rank -> result id */
  private readonly result: number[] = [];

  constructor(merges: readonly (readonly [number, number, number])[]) {
    merges.forEach(([a, b, x], r) => {
      const k = a * KEY + b;
      // A duplicated pair keeps its first (lowest) rank, as in Hugging Face.
      if (!this.rank.has(k)) this.rank.set(k, r);
      this.result.push(x);
    });
  }

  private rankOf(a: number, b: number): number {
    return this.rank.get(a * KEY + b) ?? -1;
  }

  encode(bytes: Uint8Array): number[] {
    if (bytes.length <= 1) return Array.from(bytes);
    return bytes.length <= 48 ? this.encodeScan(bytes) : this.encodeHeap(bytes);
  }

  encodeScan(bytes: Uint8Array): number[] {
    let s = Array.from(bytes);
    for (;;) {
      let best = -1;
      for (let i = 0; i + 1 < s.length; i++) {
        const r = this.rankOf(s[i], s[i + 1]);
        if (r >= 0 && (best < 0 || r < best)) best = r;
      }
      if (best < 0) return s;
      // Merge every occurrence of the best pair, left to right (new pairs always rank higher).
      const out: number[] = [];
      for (let i = 0; i < s.length; ) {
        if (i + 1 < s.length && this.rankOf(s[i], s[i + 1]) === best) {
          out.push(this.result[best]);
          i += 2;
        } else out.push(s[i++]);
      }
      s = out;
    }
  }

  encodeHeap(bytes: Uint8Array): number[] {
    const n = bytes.length;
    const sym = Int32Array.from(bytes);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const alive = new Uint8Array(n).fill(1);
    const heap = new PairHeap();
    for (let i = 0; i + 1 < n; i++) {
      const r = this.rankOf(sym[i], sym[i + 1]);
      if (r >= 0) heap.push(r, i);
    }
    const top: [number, number] = [0, 0];
    while (heap.pop(top)) {
      const [r, i] = top;
      const j = next[i];
      // Stale unless the pair starting at i is still exactly the pair of rank r.
      if (!alive[i] || j < 0 || this.rankOf(sym[i], sym[j]) !== r) continue;
      sym[i] = this.result[r];
      alive[j] = 0;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      if (prev[i] >= 0) {
        const rl = this.rankOf(sym[prev[i]], sym[i]);
        if (rl >= 0) heap.push(rl, prev[i]);
      }
      if (next[i] >= 0) {
        const rr = this.rankOf(sym[i], sym[next[i]]);
        if (rr >= 0) heap.push(rr, i);
      }
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(sym[i]);
    return out;
  }
}

/**
 * A source as an endless token stream for packing: epoch after epoch of its documents in a
 * seeded per-epoch order, each document followed by EOS. Any window of the stream is a pure
 * function of (seed, source, position), found by binary search in the epoch's prefix sums.
 */
import { RngStream } from '../core/rng';
import { SourceTokens } from './prepared';

interface EpochTable {
  perm: Int32Array;
  /** perm.length + 1 stream offsets of each permuted document's start (EOS included). */
  starts: Float64Array;
}

export class SourceStream {
  /** Tokens per epoch: all documents plus one EOS each. */
  readonly epochLength: number;
  private readonly cache = new Map<number, EpochTable>();

  constructor(private readonly src: SourceTokens, private readonly seed: number, private readonly eos: number) {
    this.epochLength = src.tokens.length + src.documents;
  }

  private epoch(e: number): EpochTable {
    let t = this.cache.get(e);
    if (t) return t;
    const n = this.src.documents;
    const order = Array.from({ length: n }, (_, i) => i);
    RngStream.of(this.seed, `mixture:docs:${this.src.name}`, e).shuffle(order);
    const perm = Int32Array.from(order);
    const starts = new Float64Array(n + 1);
    const off = this.src.docOffsets;
    for (let k = 0; k < n; k++) starts[k + 1] = starts[k] + (off[perm[k] + 1] - off[perm[k]]) + 1;
    t = { perm, starts };
    // Reads move forward through at most a couple of epochs at a time; keep a few.
    if (this.cache.size >= 4) this.cache.delete(this.cache.keys().next().value as number);
    this.cache.set(e, t);
    return t;
  }

  /**
   * Copies `len` stream tokens starting at `pos` into `out`; when `segments` is given, also
   * writes a document index per token (bumped after every EOS) starting from `seg0`.
   */
  read(pos: number, len: number, out: Int32Array, segments?: Int32Array): void {
    const toks = this.src.tokens;
    const off = this.src.docOffsets;
    let e = Math.floor(pos / this.epochLength);
    let at = pos - e * this.epochLength;
    let w = 0;
    let seg = 0;
    while (w < len) {
      const t = this.epoch(e);
      // First k with starts[k+1] > at.
      let lo = 0;
      let hi = t.perm.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (t.starts[mid + 1] > at) hi = mid;
        else lo = mid + 1;
      }
      for (let k = lo; k < t.perm.length && w < len; k++) {
        const d = t.perm[k];
        const docLen = off[d + 1] - off[d];
        let i = at - t.starts[k];
        for (; i < docLen && w < len; i++, w++) {
          out[w] = toks[off[d] + i];
          if (segments) segments[w] = seg;
        }
        if (w < len && i === docLen) {
          out[w] = this.eos;
          if (segments) segments[w] = seg;
          w++;
          seg++;
        }
        at = t.starts[k + 1];
      }
      e++;
      at = 0;
    }
  }
}

/**
 * Incremental detokenisation for streaming: turns a growing list of token ids into text deltas,
 * cutting at the first stop string. Text is held back while it could still change or match:
 * a trailing U+FFFD (a UTF-8 character whose remaining bytes have not been generated yet, since
 * the byte-level BPE can split characters across tokens) and a suffix that is the start of a
 * stop string. Everything held back is released by `finish()`.
 */

export class TextStream {
  private readonly ids: number[] = [];
  private text = '';
  private emitted = 0;
  private stopped = false;

  constructor(
    private readonly decode: (ids: number[]) => string,
    private readonly stopStrings: string[] = [],
  ) {
    this.stopStrings = stopStrings.filter((s) => s.length > 0);
  }

  /** Adds one token; returns the text that became final and whether a stop string matched. */
  push(id: number): { delta: string; stop: boolean } {
    if (this.stopped) return { delta: '', stop: true };
    this.ids.push(id);
    this.text = this.decode(this.ids);
    let cut = -1;
    for (const s of this.stopStrings) {
      // A match can only start where the previous text had not been released yet.
      const i = this.text.indexOf(s, Math.max(0, this.emitted - s.length + 1));
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.text = this.text.slice(0, Math.max(cut, this.emitted));
      this.stopped = true;
      return { delta: this.release(this.text.length), stop: true };
    }
    return { delta: this.release(this.text.length - this.holdback()), stop: false };
  }

  /** Releases whatever is still held back (end of generation). */
  finish(): string {
    return this.release(this.text.length);
  }

  /** The final text so far (after a stop string match, the text before it). */
  get value(): string {
    return this.text;
  }

  private release(upTo: number): string {
    if (upTo <= this.emitted) return '';
    const d = this.text.slice(this.emitted, upTo);
    this.emitted = upTo;
    return d;
  }

  private holdback(): number {
    const t = this.text;
    let n = 0;
    while (n < 3 && n < t.length && t.charCodeAt(t.length - 1 - n) === 0xfffd) n++;
    for (const s of this.stopStrings) {
      for (let k = Math.min(s.length - 1, t.length); k > n; k--) {
        if (t.endsWith(s.slice(0, k))) {
          n = k;
          break;
        }
      }
    }
    return n;
  }
}

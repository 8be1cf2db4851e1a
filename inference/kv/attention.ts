/**
 * A2ATS sparse attention for one sequence, one layer and one KV-head group (arXiv 2502.12665,
 * section 3). The host tier keeps the full pre-RoPE keys, their RoPE'd copies and the values
 * (plain arrays); each key also gets a VQ code when it is appended. Per decode step:
 *   1. q~ = R_b q per query head (WRoPE: a far key is scored as if b positions back);
 *   2. one lookup table T = q~·C^T; approximate score of key s is T[code(s)];
 *   3. top-K far keys per query head (K = ceil(ratio·length)), OR across the GQA group;
 *   4. add the window (the last w positions, scored exactly) and the first `sinks` tokens;
 *   5. exact softmax attention over the selection with normal RoPE.
 * With K at least the number of far keys the selection is every key and the output is exact.
 * Key mode 'post-rope' (codebooks calibrated on post-RoPE keys) changes only steps 1 and the
 * encoding: the code is that of the RoPE'd key R_s k, and q~ = R_pos q, the query at its own
 * position, so T[code(s)] approximates the exact score R_pos q · R_s k.
 */
import { Codebook, encodeKey, lookupTable } from './quantizer';
import { dot } from '../../core/linalg';
import { RopeSpec, rotate } from './rope';

/**
 * Which keys the codebooks quantise. 'wrope' (the paper): pre-RoPE keys k, scored with R_b q.
 * 'post-rope': keys after RoPE at their own position R_s k, scored with R_pos q.
 */
export type KeyMode = 'wrope' | 'post-rope';
export const KEY_MODES: readonly KeyMode[] = ['wrope', 'post-rope'];

export interface A2ATSOptions {
  /** w: positions t − s < w are always attended and scored exactly (default 64). */
  window: number;
  /** First tokens always attended (attention sinks, default 8). */
  sinks: number;
  /** b: far keys are scored as if b positions back (default 2048). */
  b: number;
  /** Retrieved share of the context: K = ceil(ratio · length) per query head. */
  ratio: number;
  /** What the codebooks quantise (default 'wrope'; b is unused with 'post-rope'). */
  keys?: KeyMode;
}

export const DEFAULT_A2ATS: A2ATSOptions = { window: 64, sinks: 8, b: 2048, ratio: 0.06 };

export interface HeadGroupDims {
  /** Key/query head dimension and value head dimension. */
  dk: number;
  dv: number;
  /** Query heads sharing this KV head (GQA group; 1 for MLA's per-head keys). */
  groupSize: number;
  rope: RopeSpec;
  /** Softmax scale (1/sqrt(d)). */
  scale: number;
}

export interface AttendResult {
  /** One output [dv] per query head of the group. */
  out: Float32Array[];
  /** Attended key positions, ascending. */
  selected: Int32Array;
}

/** Keys s with pos − s < window or s < sinks: always attended. */
export function isPinned(s: number, pos: number, o: A2ATSOptions): boolean {
  return pos - s < o.window || s < o.sinks;
}

export class A2ATSHeadGroup {
  readonly keys: Float32Array[] = [];
  readonly keysRot: Float32Array[] = [];
  readonly values: Float32Array[] = [];
  private codeBuf = new Int32Array(64);
  private readonly scratch: Float64Array;
  private readonly postRope: boolean;

  constructor(readonly dims: HeadGroupDims, readonly codebook: Codebook | null, readonly opts: A2ATSOptions) {
    if (codebook && codebook.D !== dims.dk) throw new Error(`codebook dimension ${codebook.D} != key dimension ${dims.dk}`);
    this.scratch = new Float64Array(dims.dk);
    this.postRope = opts.keys === 'post-rope';
  }

  get length(): number {
    return this.keys.length;
  }

  /** Codes of the cached keys (−1 where there is no codebook). */
  get codes(): Int32Array {
    return this.codeBuf.subarray(0, this.length);
  }

  /** Appends the pre-RoPE key and value of the next position and encodes the key (post-rope: R_s k). */
  append(k: ArrayLike<number>, v: ArrayLike<number>): void {
    const s = this.length;
    if (s === this.codeBuf.length) {
      const nb = new Int32Array(s * 2);
      nb.set(this.codeBuf);
      this.codeBuf = nb;
    }
    const kf = Float32Array.from(k);
    const kr = Float32Array.from(rotate(kf, s, this.dims.rope));
    this.keys.push(kf);
    this.keysRot.push(kr);
    this.values.push(Float32Array.from(v));
    this.codeBuf[s] = this.codebook ? encodeKey(this.codebook, this.postRope ? kr : kf, this.scratch) : -1;
  }

  /**
   * Approximate VQ scores T[code(s)] of every cached key for one pre-RoPE query at position pos:
   * the table is built from R_b q (wrope) or R_pos q (post-rope).
   */
  approxScores(q: ArrayLike<number>, pos: number): Float64Array {
    if (!this.codebook) throw new Error('A2ATS: no codebook for approximate scores');
    const T = lookupTable(this.codebook, rotate(q, this.postRope ? pos : this.opts.b, this.dims.rope));
    const out = new Float64Array(this.length);
    for (let s = 0; s < out.length; s++) out[s] = T[this.codeBuf[s]];
    return out;
  }

  /** WRoPE scores on full keys (no VQ): exact inside the window, R_b q · k beyond it. */
  wropeScores(q: ArrayLike<number>, pos: number): Float64Array {
    const qPos = rotate(q, pos, this.dims.rope);
    const qB = rotate(q, this.opts.b, this.dims.rope);
    const out = new Float64Array(this.length);
    for (let s = 0; s < out.length; s++) out[s] = pos - s < this.opts.window ? dot(qPos, this.keysRot[s], this.dims.dk) : dot(qB, this.keys[s], this.dims.dk);
    return out;
  }

  /**
   * Scores by which `select` ranks the far keys for one pre-RoPE query at position pos (index by
   * position; only far positions are read). A2ATS: the codebook lookup `approxScores`. A subclass
   * can rank differently (scripts/bench/a2atsLong.ts ranks by exact scores for its oracle bound).
   */
  protected farScores(q: ArrayLike<number>, pos: number): ArrayLike<number> {
    return this.approxScores(q, pos);
  }

  /** The attended positions for the group's queries at position pos (keys 0..pos). */
  select(qs: ArrayLike<number>[], pos: number, ratio = this.opts.ratio): Int32Array {
    const n = Math.min(this.length, pos + 1);
    const far: number[] = [];
    for (let s = 0; s < n; s++) if (!isPinned(s, pos, this.opts)) far.push(s);
    const K = Math.min(far.length, Math.ceil(ratio * n));
    const take = new Uint8Array(n);
    for (let s = 0; s < n; s++) if (isPinned(s, pos, this.opts)) take[s] = 1;
    if (K >= far.length) {
      for (const s of far) take[s] = 1;
    } else if (K > 0) {
      for (const q of qs) {
        const sc = this.farScores(q, pos);
        const order = far.slice().sort((a, b) => sc[b] - sc[a] || a - b);
        for (let i = 0; i < K; i++) take[order[i]] = 1;
      }
    }
    const sel: number[] = [];
    for (let s = 0; s < n; s++) if (take[s]) sel.push(s);
    return Int32Array.from(sel);
  }

  /** Exact softmax attention (normal RoPE) of each query over the given positions. */
  attendOver(qs: ArrayLike<number>[], pos: number, selected: Int32Array): Float32Array[] {
    const { dk, dv, scale } = this.dims;
    return qs.map((q) => {
      const qr = rotate(q, pos, this.dims.rope);
      const logits = new Float64Array(selected.length);
      let max = -Infinity;
      for (let i = 0; i < selected.length; i++) {
        logits[i] = dot(qr, this.keysRot[selected[i]], dk) * scale;
        if (logits[i] > max) max = logits[i];
      }
      let z = 0;
      for (let i = 0; i < logits.length; i++) z += logits[i] = Math.exp(logits[i] - max);
      const o = new Float64Array(dv);
      for (let i = 0; i < selected.length; i++) {
        const p = logits[i] / z;
        const v = this.values[selected[i]];
        for (let d = 0; d < dv; d++) o[d] += p * v[d];
      }
      return Float32Array.from(o);
    });
  }

  /** One A2ATS attention step for the group's pre-RoPE queries at position pos. */
  attend(qs: ArrayLike<number>[], pos: number): AttendResult {
    if (qs.length !== this.dims.groupSize) throw new Error(`expected ${this.dims.groupSize} queries, got ${qs.length}`);
    const selected = this.select(qs, pos);
    return { out: this.attendOver(qs, pos, selected), selected };
  }

  /** Exact attention over every key 0..pos (the reference). */
  attendExact(qs: ArrayLike<number>[], pos: number): Float32Array[] {
    const n = Math.min(this.length, pos + 1);
    return this.attendOver(qs, pos, Int32Array.from({ length: n }, (_, i) => i));
  }
}

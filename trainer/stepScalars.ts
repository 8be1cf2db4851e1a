/**
 * The scalars a training step reduces exactly across data-parallel ranks, packed into one
 * Float64Array by name instead of by hand-computed offsets:
 *   per microbatch (placed at its global index m, so the cross-rank sum is exact: one rank
 *   holds the value, the others 0): lm, balance, z, hiddenRms, hiddenMax, tokens;
 *   per layer and FFN expert: routing counts; per layer: tokens routed and FFN rows run
 *   (integers, summed over microbatches and ranks).
 * Layout: field f of microbatch m at f·M + m; counts at 6M + l·N + e; layer tokens at
 * 6M + L·N + l; FFN rows at 6M + L·N + L + l.
 */
import { MoeStats } from '../model/moe/layer';

export const MICRO_FIELDS = ['lm', 'balance', 'z', 'hiddenRms', 'hiddenMax', 'tokens'] as const;
export type MicroField = (typeof MICRO_FIELDS)[number];
export type MicroScalars = Record<MicroField, number>;

export class StepScalars {
  readonly data: Float64Array;
  private readonly countsAt: number;
  private readonly tokensAt: number;
  private readonly rowsAt: number;

  /** M microbatches in the global batch, L layers, N FFN experts; `data` a reduced buffer. */
  constructor(
    readonly M: number,
    readonly L: number,
    readonly N: number,
    data?: Float64Array,
  ) {
    this.countsAt = MICRO_FIELDS.length * M;
    this.tokensAt = this.countsAt + L * N;
    this.rowsAt = this.tokensAt + L;
    const size = this.rowsAt + L;
    if (data && data.length !== size) throw new RangeError(`StepScalars: buffer of ${data.length} values, layout needs ${size}`);
    this.data = data ?? new Float64Array(size);
  }

  /** The same layout over another buffer (the reduced sum). */
  over(data: Float64Array): StepScalars {
    return new StepScalars(this.M, this.L, this.N, data);
  }

  private at(field: MicroField, m: number): number {
    if (!(m >= 0 && m < this.M)) throw new RangeError(`StepScalars: microbatch ${m} outside [0, ${this.M})`);
    return MICRO_FIELDS.indexOf(field) * this.M + m;
  }

  /** Records microbatch m's scalars at its global index. */
  setMicro(m: number, s: MicroScalars): void {
    for (const f of MICRO_FIELDS) this.data[this.at(f, m)] = s[f];
  }

  micro(field: MicroField, m: number): number {
    return this.data[this.at(field, m)];
  }

  /** Adds one microbatch's routing statistics, one MoeStats per layer. */
  addRouting(stats: MoeStats[]): void {
    stats.forEach((s, l) => {
      for (let e = 0; e < this.N; e++) this.data[this.countsAt + l * this.N + e] += s.ffnCounts[e];
      this.data[this.tokensAt + l] += s.tokens;
      this.data[this.rowsAt + l] += s.ffnRows;
    });
  }

  /** Routing counts of layer l's FFN experts (a view). */
  expertCounts(l: number): Float64Array {
    return this.data.subarray(this.countsAt + l * this.N, this.countsAt + (l + 1) * this.N);
  }

  layerTokens(l: number): number {
    return this.data[this.tokensAt + l];
  }

  layerFfnRows(l: number): number {
    return this.data[this.rowsAt + l];
  }
}

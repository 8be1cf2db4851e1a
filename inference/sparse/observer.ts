/**
 * What the serving decoder (inference/hostDecode.ts) reports about activation sparsity: an
 * observer of the activations calibration needs (called on dense passes), and counters of the
 * channels a plan kept, for realised sparsity.
 */

/** Observes activations during a dense pass (calibration statistics, calibrate.ts). */
export interface ActivationObserver {
  /** An FFN ran on one row: a_g = silu(x·Wg) and a_u = x·Wu, length = its hidden width. */
  ffn?(prefix: string, ag: Float32Array, au: Float32Array): void;
  /** An attention block's q-projection input (`q`) or o_proj input (`o`) of one row. */
  attention?(prefix: string, which: 'q' | 'o', x: Float32Array): void;
}

/** Channels kept and seen, for realised sparsity; FFN-expert rows and tokens run. */
export interface SparsityCounters {
  ffnKept: number;
  ffnTotal: number;
  attnKept: number;
  attnTotal: number;
  ffnExpertRows: number;
  tokens: number;
}

export function newCounters(): SparsityCounters {
  return { ffnKept: 0, ffnTotal: 0, attnKept: 0, attnTotal: 0, ffnExpertRows: 0, tokens: 0 };
}

/**
 * Activation sparsity for decode (CHESS, arXiv 2409.01366): the pieces the CLI wires.
 *
 * `loadSparsity(model, method)` reads the thresholds written by `moecat calibrate` beside the
 * checkpoint and returns the engine `steps` that run the plan on every decode row of the
 * serving decoder (inference/hostDecode.ts, native/sparse.c's kernels when the addon is built),
 * for `serve --sparsity` and `generate --sparsity` alike. Methods are named here so another
 * sparsifier can register beside chess.
 */
import { ConfigError } from '../../core/errors';
import { ServingModel } from '../loadModel';
import type { EngineStepHooks } from '../engine';
import { hostEngineSteps } from '../hostSteps';
import { hostDecoder } from '../hostDecode';
import { decodeKernels } from '../decodeKernels';
import { attentionPrefixes, ffnPrefixes } from './blocks';
import { checkCoverage, FfnRule, readThresholds, SparsityPlan, THRESHOLDS_FILE } from './thresholds';

export { ActivationObserver, newCounters, SparsityCounters } from './observer';
export { attentionPrefixes, ffnPrefixes } from './blocks';
export { collectStats, thresholdsAt, corpusWindows, quantile } from './calibrate';
export * from './thresholds';

/** `--sparsity` values: FFN rule and whether attention projections are sparsified. */
export const SPARSITY_METHODS: Record<string, { ffn: FfnRule; attention: boolean }> = {
  chess: { ffn: 'chess', attention: true },
  'chess-ffn': { ffn: 'chess', attention: false },
  cats: { ffn: 'cats', attention: false },
};

export interface SparsityHooks {
  method: string;
  plan: SparsityPlan;
  /** Engine steps (`new Engine(model, tokenizer, { steps })`): the batched host decode path with the plan on every decode row. */
  steps: EngineStepHooks;
  /** Fraction of FFN gate channels (and attention inputs) skipped so far. */
  realised(): { ffn: number; attention: number };
  describe(): string;
}

export function loadSparsity(m: ServingModel, method: string): SparsityHooks {
  const spec = SPARSITY_METHODS[method];
  if (!spec) throw new ConfigError(`unknown sparsity method "${method}" (known: ${Object.keys(SPARSITY_METHODS).join(', ')})`, { where: '--sparsity' });
  const thresholds = readThresholds(m.dir);
  checkCoverage(thresholds, ffnPrefixes(m.config), attentionPrefixes(m.config), `${m.dir}/${THRESHOLDS_FILE}`);
  const plan: SparsityPlan = { ffn: spec.ffn, attention: spec.attention, thresholds };
  const counters = hostDecoder(m).counters;
  return {
    method,
    plan,
    steps: hostEngineSteps(plan),
    realised: () => ({
      ffn: counters.ffnTotal ? 1 - counters.ffnKept / counters.ffnTotal : 0,
      attention: counters.attnTotal ? 1 - counters.attnKept / counters.attnTotal : 0,
    }),
    describe: () => `sparsity ${method}: thresholds at s = ${thresholds.sparsity} from ${thresholds.tokens} calibration tokens (batched host decode, ${decodeKernels().name} kernels)`,
  };
}

/**
 * Activation sparsity for decode (CHESS, arXiv 2409.01366): the pieces the CLI wires.
 *
 * `loadSparsity(model, method)` reads the thresholds written by `moecat calibrate` beside the
 * checkpoint and returns hooks: engine `steps` (the batched host decode path with the plan on
 * every decode row), `generate` (the batch-1 JS decoder: dense prefill, sparse decode), the plan
 * and that decoder. Methods are named here so another sparsifier can register beside chess.
 */
import { ConfigError } from '../../core/errors';
import { GenerateOptions, GenerateResult } from '../generate';
import { ServingModel } from '../loadModel';
import { SparseDecoder } from './decode';
import { hostModel } from './hostModel';
import { sparseGenerate } from './generate';
import type { EngineStepHooks } from '../engine';
import { hostEngineSteps } from '../hostSteps';
import { hostDecoder } from '../hostDecode';
import { decodeKernels } from '../decodeKernels';
import { checkCoverage, FfnRule, readThresholds, SparsityPlan, THRESHOLDS_FILE } from './thresholds';

export { SparseDecoder, HostKvCache, newCounters, SparsityCounters, ActivationObserver } from './decode';
export { hostModel, HostModel } from './hostModel';
export { sparseGenerate, windowNll } from './generate';
export { collectStats, thresholdsAt, corpusWindows, quantile } from './calibrate';
export * from './thresholds';
export { sparseEngineSteps, EngineSteps } from './engineSteps';

/** `--sparsity` values: FFN rule and whether attention projections are sparsified. */
export const SPARSITY_METHODS: Record<string, { ffn: FfnRule; attention: boolean }> = {
  chess: { ffn: 'chess', attention: true },
  'chess-ffn': { ffn: 'chess', attention: false },
  cats: { ffn: 'cats', attention: false },
};

export interface SparsityHooks {
  method: string;
  plan: SparsityPlan;
  decoder: SparseDecoder;
  /** Engine steps (`new Engine(model, tokenizer, { steps })`): the batched host decode path with the plan on every decode row. */
  steps: EngineStepHooks;
  /** Batch-1 generation with the plan, without the engine. */
  generate(prompt: number[], o: GenerateOptions): GenerateResult;
  /** Fraction of FFN gate channels (and attention inputs) skipped so far. */
  realised(): { ffn: number; attention: number };
  describe(): string;
}

export function loadSparsity(m: ServingModel, method: string): SparsityHooks {
  const spec = SPARSITY_METHODS[method];
  if (!spec) throw new ConfigError(`unknown sparsity method "${method}" (known: ${Object.keys(SPARSITY_METHODS).join(', ')})`, { where: '--sparsity' });
  const thresholds = readThresholds(m.dir);
  const host = hostModel(m);
  checkCoverage(thresholds, host.ffnHidden, host.attentionBlocks, `${m.dir}/${THRESHOLDS_FILE}`);
  const plan: SparsityPlan = { ffn: spec.ffn, attention: spec.attention, thresholds };
  const decoder = new SparseDecoder(host);
  return {
    method,
    plan,
    decoder,
    steps: hostEngineSteps(plan),
    generate: (prompt, o) => sparseGenerate(decoder, plan, prompt, o),
    realised: () => {
      const a = decoder.counters;
      const b = hostDecoder(m).counters;
      const [fk, ft, ak, at] = [a.ffnKept + b.ffnKept, a.ffnTotal + b.ffnTotal, a.attnKept + b.attnKept, a.attnTotal + b.attnTotal];
      return { ffn: ft ? 1 - fk / ft : 0, attention: at ? 1 - ak / at : 0 };
    },
    describe: () => `sparsity ${method}: thresholds at s = ${thresholds.sparsity} from ${thresholds.tokens} calibration tokens (batched host decode, ${decodeKernels().name} kernels)`,
  };
}

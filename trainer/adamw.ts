/**
 * AdamW on host Float32Arrays with per-parameter-group learning-rate multipliers (needed by
 * hyperparameter transfer, DESIGN.md section 3) and eps defaulting to 1e-16 (stability suite).
 * Running it in plain JS keeps it deterministic on every backend and avoids tfjs' slow
 * element-wise kernels (TFJS-NOTES: AdamW alone took 2-3.6 s/step on the cpu backend).
 */
import { nativeAdamw } from '../core/native';
import { ParamGroup } from '../model/params';

export interface AdamWConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export interface AdamWState {
  /** Number of updates applied. */
  t: number;
  m: Float32Array;
  v: Float32Array;
}

export interface ParamSlice {
  offset: number;
  size: number;
  group: ParamGroup;
}

export function newAdamWState(n: number): AdamWState {
  return { t: 0, m: new Float32Array(n), v: new Float32Array(n) };
}

/** Advances Adam's step counter and returns the bias corrections 1 − β^t. */
function advance(state: AdamWState, cfg: AdamWConfig): { c1: number; c2: number } {
  state.t += 1;
  return { c1: 1 - Math.pow(cfg.beta1, state.t), c2: 1 - Math.pow(cfg.beta2, state.t) };
}

const decayOf = (group: ParamGroup, weightDecay: number): number => (group === 'norm' || group === 'embedding' ? 0 : weightDecay);

/**
 * One update. `lrScale[group]` multiplies the base LR per group; weight decay skips norms and
 * embeddings (decoupled decay on matrices only). `gradScale` applies clipping without a copy.
 * Runs in C when the native addon is loaded and its policy allows (the same expressions in the
 * same order, so the same bits; spec/native/bufferPool.spec.ts), else in JS. The C update splits
 * the elements into chunks for the addon's thread pool; elements are independent, so the bits
 * never depend on the thread count.
 */
export function adamwStep(
  params: Float32Array,
  grads: Float32Array,
  state: AdamWState,
  slices: ParamSlice[],
  lr: number,
  cfg: AdamWConfig,
  lrScale: Partial<Record<ParamGroup, number>>,
  gradScale = 1,
): void {
  const native = nativeAdamw();
  if (!native) {
    adamwStepJs(params, grads, state, slices, lr, cfg, lrScale, gradScale);
    return;
  }
  const { c1, c2 } = advance(state, cfg);
  const lrs = Float64Array.from(slices, (s) => lr * (lrScale[s.group] ?? 1));
  const wds = Float64Array.from(slices, (s) => decayOf(s.group, cfg.weightDecay));
  native.adamw(params, grads, state.m, state.v, Int32Array.from(slices, (s) => s.offset), Int32Array.from(slices, (s) => s.size), lrs, wds, cfg.beta1, cfg.beta2, c1, c2, cfg.eps, gradScale, 0);
}

/** The JS AdamW loop: the reference the C path reproduces bit for bit. */
export function adamwStepJs(
  params: Float32Array,
  grads: Float32Array,
  state: AdamWState,
  slices: ParamSlice[],
  lr: number,
  cfg: AdamWConfig,
  lrScale: Partial<Record<ParamGroup, number>>,
  gradScale = 1,
): void {
  const { c1, c2 } = advance(state, cfg);
  const { beta1: b1, beta2: b2, eps, weightDecay } = cfg;
  const { m, v } = state;
  for (const s of slices) {
    const glr = lr * (lrScale[s.group] ?? 1);
    const wd = decayOf(s.group, weightDecay);
    const end = s.offset + s.size;
    for (let i = s.offset; i < end; i++) {
      const g = grads[i] * gradScale;
      const mi = (m[i] = b1 * m[i] + (1 - b1) * g);
      const vi = (v[i] = b2 * v[i] + (1 - b2) * g * g);
      params[i] = params[i] - glr * ((mi / c1) / (Math.sqrt(vi / c2) + eps) + wd * params[i]);
    }
  }
}

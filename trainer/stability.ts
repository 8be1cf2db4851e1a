/**
 * The stability suite (DESIGN.md section 3, LongCat-Flash report):
 *  - router: mean pairwise cosine similarity of the router's expert rows, per MoE layer;
 *  - router gradient-norm ratio R_g = ||grad_P(alpha·L_LB)|| / ||grad_P L_LM|| (kept under 0.1);
 *  - optimizer: gradient RMS per parameter group beside Adam's eps;
 *  - loss spikes: a rolling mean + k·std detector on loss and gradient norm.
 */
import * as tf from '@tensorflow/tfjs';
import { ModelConfig } from '../model/config';
import { ForwardOptions } from '../model/transformer';
import { ParamStore, ParamGroup } from '../model/params';
import { LossNorms, microbatchLoss } from './losses';
import { Batch } from '../data/batch';
import { ParamSlice } from './adamw';

/** Mean pairwise cosine similarity between expert rows of Wr ([d, E] held as [in, out]). */
export function routerSimilarity(w: Float32Array, d: number, E: number): number {
  const norms = new Float64Array(E);
  for (let e = 0; e < E; e++) {
    let s = 0;
    for (let i = 0; i < d; i++) s += w[i * E + e] ** 2;
    norms[e] = Math.sqrt(s) || 1;
  }
  let total = 0;
  let pairs = 0;
  for (let a = 0; a < E; a++) {
    for (let b = a + 1; b < E; b++) {
      let dot = 0;
      for (let i = 0; i < d; i++) dot += w[i * E + a] * w[i * E + b];
      total += dot / (norms[a] * norms[b]);
      pairs++;
    }
  }
  return pairs ? total / pairs : 0;
}

/** Gradient RMS per parameter group. */
export function gradRmsByGroup(grad: Float32Array, slices: ParamSlice[], scale = 1): Partial<Record<ParamGroup, number>> {
  const g = paramGroups(slices);
  return groupRms(g, addGroupSquares(new Float64Array(g.groups.length), grad, slices, g.groups, scale));
}

/** The parameter groups of `slices` in order of first appearance, with each group's element count. */
export function paramGroups(slices: ParamSlice[]): { groups: ParamGroup[]; count: Map<ParamGroup, number> } {
  const groups: ParamGroup[] = [];
  const count = new Map<ParamGroup, number>();
  for (const sl of slices) {
    if (!count.has(sl.group)) groups.push(sl.group);
    count.set(sl.group, (count.get(sl.group) ?? 0) + sl.size);
  }
  return { groups, count };
}

/**
 * acc[k] += Σ (grad[i]·scale)² over the slices of group k, in slice order (float64). The
 * sharded optimizer continues the same accumulators across ranks, so both give the same bits.
 */
export function addGroupSquares(acc: Float64Array, grad: Float32Array, slices: ParamSlice[], groups: ParamGroup[], scale: number): Float64Array {
  for (const sl of slices) {
    const k = groups.indexOf(sl.group);
    // A local accumulator and x·x: the loop runs over every parameter each step.
    let a = acc[k];
    const end = sl.offset + sl.size;
    for (let i = sl.offset; i < end; i++) {
      const g = grad[i] * scale;
      a += g * g;
    }
    acc[k] = a;
  }
  return acc;
}

/** RMS per group from its summed squares. */
export function groupRms(g: { groups: ParamGroup[]; count: Map<ParamGroup, number> }, sums: Float64Array): Partial<Record<ParamGroup, number>> {
  const out: Partial<Record<ParamGroup, number>> = {};
  g.groups.forEach((name, k) => (out[name] = Math.sqrt(sums[k] / Math.max(1, g.count.get(name)!))));
  return out;
}

/** Float64 sum of squares continued from `acc`, in index order (the global gradient norm's loop). */
export function addSquares(acc: number, grad: Float32Array): number {
  for (let i = 0; i < grad.length; i++) acc += grad[i] * grad[i];
  return acc;
}

/**
 * R_g per MoE layer on one microbatch: the router gradient of the (alpha-weighted) balance loss
 * against that of the LM loss. Two extra backward passes restricted to router weights.
 */
export function routerGradRatio(c: ModelConfig, store: ParamStore, mb: Batch, norms: LossNorms, biases: Float32Array[], moe?: ForwardOptions['moe']): number[] {
  const names = Array.from({ length: c.nLayers }, (_, l) => `model.layers.${l}.mlp.router.classifier.weight`);
  const vars = names.map((n) => store.get(n));
  const normOf = (which: 'lm' | 'balance'): number[] => {
    const { value, grads } = tf.variableGrads(() => {
      const parts = microbatchLoss(c, store.getter, mb, norms, { biases, moe });
      return (which === 'lm' ? parts.lm : parts.balance ?? tf.scalar(0)) as tf.Scalar;
    }, vars);
    const out = vars.map((v) => {
      const g = grads[v.name];
      return g ? Math.sqrt(tf.sum(tf.square(g)).dataSync()[0]) : 0;
    });
    tf.dispose(value);
    tf.dispose(grads);
    return out;
  };
  const lm = normOf('lm');
  const lb = normOf('balance');
  return lm.map((x, l) => (x > 0 ? lb[l] / x : 0));
}

export interface SpikeConfig {
  window: number;
  k: number;
  minSteps: number;
  /** A loss spike must also exceed the rolling mean by this fraction. */
  minRelative: number;
  /** A gradient-norm spike is a norm above this multiple of the rolling median. */
  gradFactor: number;
}

/**
 * Rolling detector over accepted steps: a loss above mean + k·std (and above mean·(1+minRelative),
 * so that a quiet window does not turn noise into spikes), or a gradient norm above gradFactor ×
 * the rolling median (early-training gradient norms drift too much for a std test). Spikes are
 * not added to the window; nothing is flagged before the window holds `minSteps` values.
 */
export class SpikeDetector {
  private values: { loss: number[]; grad: number[] } = { loss: [], grad: [] };
  constructor(private readonly cfg: SpikeConfig) {}

  /** Returns the reason when (loss, gradNorm) is a spike, else records them and returns null. */
  check(loss: number, gradNorm: number): string | null {
    if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) return `non-finite loss ${loss} or grad norm ${gradNorm}`;
    const { loss: ls, grad: gs } = this.values;
    if (ls.length >= this.cfg.minSteps) {
      const mean = ls.reduce((a, b) => a + b, 0) / ls.length;
      const sd = Math.sqrt(ls.reduce((a, b) => a + (b - mean) ** 2, 0) / ls.length);
      if (loss > mean + this.cfg.k * sd && loss > mean * (1 + this.cfg.minRelative)) {
        return `loss ${loss.toFixed(4)} above rolling mean ${mean.toFixed(4)} + ${this.cfg.k}·std`;
      }
      const sorted = [...gs].sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)];
      if (gradNorm > this.cfg.gradFactor * median) return `grad norm ${gradNorm.toFixed(4)} above ${this.cfg.gradFactor}x the rolling median ${median.toFixed(4)}`;
    }
    ls.push(loss);
    gs.push(gradNorm);
    if (ls.length > this.cfg.window) {
      ls.shift();
      gs.shift();
    }
    return null;
  }

  save(): { loss: number[]; grad: number[] } {
    return { loss: [...this.values.loss], grad: [...this.values.grad] };
  }

  restore(s: { loss: number[]; grad: number[] }): void {
    this.values = { loss: [...s.loss], grad: [...s.grad] };
  }
}

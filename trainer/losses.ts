/**
 * The training objective for one microbatch (DESIGN.md sections 2-4):
 *   LM loss (sum of masked token cross-entropies / global token count)
 * + balance loss (sum over sequences / global sequence count)
 * + hidden z-loss  L_Z = (lambda/T)·sum_t mask_t·(logsumexp_i |z_t^i|)^2 on last-layer hidden
 *   states, with T the global count of masked-in targets (the same positions the LM loss counts).
 * Normalising by global counts (never per-rank means) makes the global gradient a plain sum of
 * microbatch gradients, which the canonical tree then adds in a fixed order.
 */
import * as tf from '@tensorflow/tfjs';
import { ModelConfig } from '../model/config';
import { ParamGetter } from '../model/attention';
import { weightedCrossEntropy } from '../model/ops';
import { forward, ForwardOptions } from '../model/transformer';
import { MoeStats } from '../model/moe/layer';
import { Batch } from '../data/batch';

export interface LossNorms {
  /** Masked target tokens in the global batch. */
  globalTokens: number;
  /** Sequences in the global batch. */
  globalSeqs: number;
}

export interface LossParts {
  total: tf.Scalar;
  lm: tf.Scalar;
  balance: tf.Scalar | null;
  z: tf.Scalar | null;
  moe: MoeStats[];
  /** Router probabilities per layer (kept for stability metrics; disposed with the step). */
  hidden: tf.Tensor2D;
}

export function microbatchLoss(
  c: ModelConfig,
  P: ParamGetter,
  mb: Batch,
  norms: LossNorms,
  opts: { biases: Float32Array[]; zLossCoef?: number; moe?: ForwardOptions['moe'] },
): LossParts {
  const { batchSize: B, seqLen: S } = mb;
  const f = forward(c, P, mb.inputs, B, S, {
    biases: opts.biases,
    ropeBase: mb.ropeBase,
    segmentIds: mb.segmentIds,
    balance: true,
    moe: opts.moe,
  });
  const w = lossWeights(mb, norms);
  const lm = weightedCrossEntropy(f.logits!, mb.targets, w);
  let total: tf.Scalar = lm;
  let balance: tf.Scalar | null = null;
  const parts = f.moe.map((m) => m.balance).filter((b): b is tf.Scalar => !!b);
  if (parts.length > 0) {
    balance = tf.div(tf.addN(parts), norms.globalSeqs) as tf.Scalar;
    total = tf.add(total, balance) as tf.Scalar;
  }
  let z: tf.Scalar | null = null;
  if (opts.zLossCoef && opts.zLossCoef > 0) {
    z = hiddenZLoss(f.hidden, w, opts.zLossCoef);
    total = tf.add(total, z) as tf.Scalar;
  }
  return { total, lm, balance, z, moe: f.moe.map((m) => m.stats), hidden: f.hidden };
}

/** Per-position loss weights lossMask / T (T: the global count of masked-in targets). */
export function lossWeights(mb: Batch, norms: LossNorms): Float32Array {
  const w = new Float32Array(mb.lossMask.length);
  for (let i = 0; i < w.length; i++) w[i] = mb.lossMask[i] / norms.globalTokens;
  return w;
}

/**
 * Hidden z-loss on last-layer hidden states, with the LM loss's per-position weights: padding
 * and masked prompt tokens (SFT) add nothing, so the sum and its normaliser count the same positions.
 */
export function hiddenZLoss(hidden: tf.Tensor2D, w: Float32Array, coef: number): tf.Scalar {
  const lse = tf.logSumExp(tf.abs(hidden), 1);
  return tf.mul(tf.sum(tf.mul(tf.square(lse), tf.tensor1d(w))), coef) as tf.Scalar;
}

/**
 * Device-level balance loss with zero experts as an extra group (DESIGN.md section 2):
 * per sequence, L = alpha · sum_j f_j·P_j / tau_j, with D FFN groups (tau_j = K_e/(K·D)) and
 * the zero experts as group D+1 (tau = (K−K_e)/K). f_j (share of the sequence's routing slots
 * in group j) is a constant of the selection; P_j (mean router probability mass of group j)
 * carries the gradient. Returns the sum over sequences; the trainer divides by the global
 * sequence count.
 */
import * as tf from '@tensorflow/tfjs';
import { ModelConfig, targetFfnPerToken } from '../config';

/** Group of expert e: 0..D−1 for FFN experts (contiguous blocks), D for zero experts. */
export function expertGroup(e: number, c: ModelConfig): number {
  const { nExperts, expertGroups } = c.moe;
  return e < nExperts ? Math.floor(e / (nExperts / expertGroups)) : expertGroups;
}

/** Per-sequence weights alpha·f_j/tau_j, shape [B, D+1] (tau of an empty group is skipped). */
export function balanceWeights(c: ModelConfig, idx: Int32Array, B: number, S: number): Float32Array {
  const K = c.moe.topK;
  const D = c.moe.expertGroups;
  const ke = targetFfnPerToken(c);
  const tau = new Float64Array(D + 1);
  for (let j = 0; j < D; j++) tau[j] = ke / (K * D);
  tau[D] = (K - ke) / K;
  const w = new Float32Array(B * (D + 1));
  for (let b = 0; b < B; b++) {
    const counts = new Float64Array(D + 1);
    for (let slot = b * S * K; slot < (b + 1) * S * K; slot++) counts[expertGroup(idx[slot], c)]++;
    for (let j = 0; j <= D; j++) {
      if (tau[j] > 0) w[b * (D + 1) + j] = (c.moe.balanceAlpha * (counts[j] / (K * S))) / tau[j];
    }
  }
  return w;
}

/** Sum over sequences of the balance loss, from router probabilities s [B·S, E]. */
export function balanceLoss(c: ModelConfig, probs: tf.Tensor2D, idx: Int32Array, B: number, S: number): tf.Scalar {
  const E = c.moe.nExperts + c.moe.nZeroExperts;
  const D = c.moe.expertGroups;
  const groupMat = new Float32Array(E * (D + 1));
  for (let e = 0; e < E; e++) groupMat[e * (D + 1) + expertGroup(e, c)] = 1;
  const meanProbs = tf.mean(tf.reshape(probs, [B, S, E]), 1) as tf.Tensor2D; // [B, E]
  const P = tf.matMul(meanProbs, tf.tensor2d(groupMat, [E, D + 1])); // [B, D+1]
  return tf.sum(tf.mul(P, tf.tensor2d(balanceWeights(c, idx, B, S), [B, D + 1])));
}

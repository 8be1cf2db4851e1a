/**
 * The MoE layer: router, sparse dispatch to FFN experts, identity zero experts, weighted
 * combine (DESIGN.md section 2):  MoE(x) = sum_k g_k · E_idx_k(x).
 * Each FFN expert runs once on exactly the rows routed to it; zero-expert slots read x itself
 * and run no matmul. The number of FFN-expert row evaluations is reported in `stats`.
 */
import * as tf from '@tensorflow/tfjs';
import { ModelConfig } from '../config';
import { expertsFfn, gatherRows, moeCombine } from '../ops';
import { ParamGetter } from '../attention';
import { DispatchPlan, planDispatch, Routing, selectExperts } from './router';
import { balanceLoss } from './balanceLoss';

export interface MoeStats {
  /** Tokens routed through this layer. */
  tokens: number;
  /** FFN slots per FFN expert (routing counts, for the bias controller and load plots). */
  ffnCounts: Int32Array;
  /** Rows actually run through FFN experts (equals the FFN slots: no hidden dense compute). */
  ffnRows: number;
  zeroSlots: number;
}

export interface MoeOutput {
  out: tf.Tensor2D;
  stats: MoeStats;
  routing: Routing;
  /** Router probabilities [T, E] (for the balance loss and stability metrics). */
  probs: tf.Tensor2D;
  /** Sum over sequences of the balance loss (absent when alpha = 0 or not requested). */
  balance?: tf.Scalar;
}

export interface RoutedTokens {
  /** Router probabilities [T, N+Z]. */
  probs: tf.Tensor2D;
  routing: Routing;
  plan: DispatchPlan;
  /** Gates g = s[idx]·scale per slot, [T·K, 1], differentiable through probs. */
  gates: tf.Tensor;
}

/**
 * Router, host-side top-K on s + b, dispatch plan and gates: the part of the layer that the
 * single-process and expert-parallel MoE share op for op.
 */
export function routeTokens(c: ModelConfig, P: ParamGetter, prefix: string, u: tf.Tensor2D, bias: Float32Array): RoutedTokens {
  const T = u.shape[0];
  const N = c.moe.nExperts;
  const E = N + c.moe.nZeroExperts;
  const K = c.moe.topK;
  // Router in float32 without bias; softmax over all N+Z experts.
  const probs = tf.softmax(tf.matMul(u, P(`${prefix}.router.classifier.weight`) as tf.Tensor2D)) as tf.Tensor2D;
  const routing = selectExperts(probs.dataSync() as Float32Array, bias, T, E, K, N);
  const plan = planDispatch(routing, N);
  // Gates g = s[idx]·scale, gathered differentiably from the flat probabilities.
  const gateIdx = new Int32Array(T * K);
  for (let slot = 0; slot < T * K; slot++) gateIdx[slot] = Math.floor(slot / K) * E + routing.idx[slot];
  const gates = tf.mul(gatherRows(tf.reshape(probs, [T * E, 1]) as tf.Tensor2D, gateIdx), c.moe.routedScalingFactor);
  return { probs, routing, plan, gates };
}

export function moeLayer(
  c: ModelConfig,
  P: ParamGetter,
  prefix: string,
  u: tf.Tensor2D,
  bias: Float32Array,
  shape: { B: number; S: number },
  opts: { balance?: boolean } = {},
): MoeOutput {
  const T = u.shape[0];
  const N = c.moe.nExperts;
  const K = c.moe.topK;
  const { probs, routing, plan, gates } = routeTokens(c, P, prefix, u, bias);
  const nRows = plan.rowToken.length;

  let source: tf.Tensor2D = u;
  if (nRows > 0) {
    const xs = gatherRows(u, plan.rowToken);
    // Only the experts with routed rows take part (and read their weights).
    const weights: tf.Tensor[] = [];
    const offsets = [0];
    for (let e = 0; e < N; e++) {
      if (plan.expertOffsets[e + 1] === plan.expertOffsets[e]) continue;
      for (const w of ['gate_proj', 'up_proj', 'down_proj']) weights.push(P(`${prefix}.experts.${e}.${w}.weight`));
      offsets.push(plan.expertOffsets[e + 1]);
    }
    source = tf.concat([expertsFfn(xs, weights, Int32Array.from(offsets)), u], 0) as tf.Tensor2D;
  }
  const out = moeCombine(source, plan.slotSource, gates, T, K);

  const result: MoeOutput = {
    out,
    probs,
    routing,
    stats: { tokens: T, ffnCounts: routing.ffnCounts, ffnRows: nRows, zeroSlots: routing.zeroSlots },
  };
  if (opts.balance && c.moe.balanceAlpha > 0) result.balance = balanceLoss(c, probs, routing.idx, shape.B, shape.S);
  return result;
}

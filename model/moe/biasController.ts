/**
 * Aux-loss-free budget controller (DESIGN.md section 2). After each optimizer step, with T_i
 * tokens routed to FFN expert i and T_all tokens in the global batch:
 *   b_i += mu · ((K_e/K)·(1/N) − T_i/(K·T_all))   for FFN experts,   b_i = 0 for zero experts.
 * Counts are summed over microbatches and ranks first, so every rank holds the same b.
 * Arithmetic is float64 then rounded to float32 in a fixed order: deterministic everywhere.
 */
export function updateExpertBias(bias: Float32Array, ffnCounts: ArrayLike<number>, totalTokens: number, opts: { nFfn: number; topK: number; targetFfn: number; mu: number }): void {
  const { nFfn, topK, targetFfn, mu } = opts;
  if (totalTokens <= 0 || mu === 0) return;
  const target = targetFfn / topK / nFfn;
  for (let i = 0; i < nFfn; i++) bias[i] = bias[i] + mu * (target - ffnCounts[i] / (topK * totalTokens));
  for (let i = nFfn; i < bias.length; i++) bias[i] = 0;
}

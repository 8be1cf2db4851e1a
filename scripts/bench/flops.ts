/**
 * FLOP accounting shared by the benchmarks: 2 FLOPs per multiply-add of the parameters a token
 * actually uses (dense linears, router, lm_head, and only the FFN experts that ran), plus
 * attention's QK^T and PV over the causal triangle. Backward = 2x forward.
 */
import { ModelConfig } from '../../model/config';
import { numel, paramSpecs } from '../../model/params';
import { MoeStats } from '../../model/moe/layer';

export /** FLOPs of one forward pass given the routing stats of that pass. */
function forwardFlops(c: ModelConfig, B: number, S: number, stats: MoeStats[]): { total: number; attnCausal: number; attnFull: number; activePerToken: number } {
  const T = B * S;
  const specs = paramSpecs(c);
  // Dense linears (attention projections, dense FFNs, router, lm_head): every token uses them all.
  const dense = specs.filter((s) => s.linear && !s.expert).reduce((n, s) => n + numel(s.shape), 0);
  const perRow = 3 * c.dModel * c.moe.expertHidden;
  const expertRows = stats.reduce((n, s) => n + s.ffnRows, 0);
  const a = c.attention;
  const [dqk, dv, H] = a.type === 'mla' ? [a.nopeHeadDim + a.ropeHeadDim, a.vHeadDim, a.nHeads] : [a.headDim, a.headDim, a.nHeads];
  const blocks = 2 * c.nLayers;
  const pairsCausal = (S * (S + 1)) / 2;
  const attn = (pairs: number) => blocks * B * H * pairs * 2 * (dqk + dv);
  const matmul = 2 * (T * dense + expertRows * perRow);
  return { total: matmul + attn(pairsCausal), attnCausal: attn(pairsCausal), attnFull: attn(S * S), activePerToken: dense + (expertRows * perRow) / T };
}


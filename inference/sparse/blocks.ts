/**
 * The blocks activation-sparsity thresholds cover, by parameter prefix: every SwiGLU FFN (dense
 * mlps.{0,1}, mlps.0 absent in sequential layers, and every FFN expert) with its hidden width,
 * and every attention block.
 */
import { ModelConfig } from '../../model/config';

export function ffnPrefixes(c: ModelConfig): Map<string, number> {
  const out = new Map<string, number>();
  for (let l = 0; l < c.nLayers; l++) {
    for (const j of [0, 1]) if (!(j === 0 && c.layerType === 'sequential')) out.set(`model.layers.${l}.mlps.${j}`, c.ffnHidden);
    for (let e = 0; e < c.moe.nExperts; e++) out.set(`model.layers.${l}.mlp.experts.${e}`, c.moe.expertHidden);
  }
  return out;
}

export function attentionPrefixes(c: ModelConfig): string[] {
  const out: string[] = [];
  for (let l = 0; l < c.nLayers; l++) for (const j of [0, 1]) out.push(`model.layers.${l}.self_attn.${j}`);
  return out;
}

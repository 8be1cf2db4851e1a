/**
 * The serving model's weights as host Float32Arrays for the plain-JS batch-1 decode: linear
 * weights stay [in, out]; each FFN's up projection is also kept transposed ([hidden, in]) so
 * the sparse up kernel reads one contiguous row per kept channel (kernels.ts).
 */
import { ModelConfig } from '../../model/config';
import { ServingModel } from '../loadModel';
import { FfnWeights } from './kernels';

export interface HostModel {
  config: ModelConfig;
  biases: Float32Array[];
  w: (name: string) => Float32Array;
  ffn: Map<string, FfnWeights>;
  /** FFN prefixes with their hidden width; attention block prefixes (thresholds cover these). */
  ffnHidden: Map<string, number>;
  attentionBlocks: string[];
}

function transpose(W: Float32Array, rows: number, cols: number): Float32Array {
  const T = new Float32Array(W.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) T[j * rows + i] = W[i * cols + j];
  return T;
}

/** FFN prefixes of a model: dense mlps.{0,1} (mlps.0 absent in sequential layers) and experts. */
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

export function hostModel(m: ServingModel): HostModel {
  const c = m.config;
  const cache = new Map<string, Float32Array>();
  const w = (name: string) => {
    let v = cache.get(name);
    if (!v) {
      v = m.store.get(name).dataSync() as Float32Array;
      cache.set(name, v);
    }
    return v;
  };
  const ffnHidden = ffnPrefixes(c);
  const ffn = new Map<string, FfnWeights>();
  for (const [p, h] of ffnHidden) {
    ffn.set(p, { gate: w(`${p}.gate_proj.weight`), upT: transpose(w(`${p}.up_proj.weight`), c.dModel, h), down: w(`${p}.down_proj.weight`), d: c.dModel, h });
  }
  for (const s of m.store.specs) w(s.name);
  return { config: c, biases: m.biases, w, ffn, ffnHidden, attentionBlocks: attentionPrefixes(c) };
}

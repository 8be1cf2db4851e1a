/**
 * The two forward passes of the serving engine.
 *
 * `prefill` runs one prompt through `forward()` exactly as `generate()` does.
 *
 * `decodeBatch` advances B sequences by one token each, where every sequence has its own cache
 * length. Everything per token (embeddings, norms, attention projections and RoPE, dense FFNs,
 * router and MoE expert dispatch, lm_head) runs once on the [B, d] batch; only the cached part
 * of attention runs per sequence, against its own cache (engineAttention.ts says why not a
 * padded batch). Each row stays bitwise equal to decoding it alone. The MoE sees the whole
 * batch, so each FFN expert runs once per step on all rows routed to it and zero experts run
 * nothing (DESIGN.md section 2).
 *
 * Each layer is model/scmoeLayer.ts's `tensorLayer` with per-row decode attention as its
 * attention hook; spec/inference checks that its greedy output equals generate() token for
 * token, and spec/model/layerPaths that its logits equal the training forward's.
 */
import * as tf from '@tensorflow/tfjs';
import { AttnCache, ropeDim } from '../model/attention';
import { forward } from '../model/transformer';
import { gatherRows, rmsNorm, ropeTables } from '../model/ops';
import { tensorLayer } from '../model/scmoeLayer';
import { moeLayer } from '../model/moe/layer';
import { ServingModel } from './loadModel';
import { decodeAttention } from './engineAttention';
import { tidyKeep } from '../core/tfjsInternals';

export type LayerCaches = [AttnCache, AttnCache][];

export interface StepResult {
  /** Last-position logits, one row per sequence: [B, V]. */
  logits: tf.Tensor2D;
  /** The new caches, one LayerCaches per sequence (the caller disposes the old ones). */
  caches: LayerCaches[];
  /** FFN-expert rows run, summed over layers, and the tokens each layer routed. */
  ffnRows: number;
  tokenLayers: number;
  /** FFN-expert rows run for each sequence's token, summed over layers (decode only). */
  rowFfnRows: number[];
}

export function cacheTensors(c: LayerCaches): tf.Tensor[] {
  return c.flatMap((p) => [p[0].k, p[0].v, p[1].k, p[1].v]);
}

export function disposeCaches(c: LayerCaches | undefined): void {
  if (c) tf.dispose(cacheTensors(c));
}

/** Bytes held by one sequence's caches. */
export function cacheBytes(c: LayerCaches): number {
  let n = 0;
  for (const t of cacheTensors(c)) n += t.size * 4;
  return n;
}

/** Runs the prompt (positions 0..n−1) and returns its last-position logits and caches. */
export function prefill(m: ServingModel, ids: number[]): StepResult {
  let ffnRows = 0;
  let tokenLayers = 0;
  const r = tidyKeep(() => {
    const f = forward(m.config, (n) => m.store.get(n), Int32Array.from(ids), 1, ids.length, { biases: m.biases, pastLength: 0 });
    for (const s of f.moe) {
      ffnRows += s.stats.ffnRows;
      tokenLayers += s.stats.tokens;
    }
    const logits = tf.slice(f.logits!, [ids.length - 1, 0], [1, m.config.vocabSize]) as tf.Tensor2D;
    return { logits, caches: f.caches };
  });
  return { logits: r.logits, caches: [r.caches], ffnRows, tokenLayers, rowFfnRows: [ffnRows] };
}

/** One decode step for B sequences: token b sits at position past[b] (its cache length). */
export function decodeBatch(m: ServingModel, tokens: number[], past: number[], caches: LayerCaches[]): StepResult {
  const c = m.config;
  const B = tokens.length;
  const P = (n: string) => m.store.get(n);
  let ffnRows = 0;
  let tokenLayers = 0;
  const rowFfnRows = new Array<number>(B).fill(0);
  const N = c.moe.nExperts;
  const K = c.moe.topK;
  const r = tidyKeep(() => {
    const half = ropeDim(c) / 2;
    const cosH = new Float32Array(B * half);
    const sinH = new Float32Array(B * half);
    past.forEach((p, b) => {
      const t = ropeTables(1, ropeDim(c), c.ropeBase, p);
      cosH.set(t.cos, b * half);
      sinH.set(t.sin, b * half);
    });
    const cos = tf.tensor3d(cosH, [B, 1, half]);
    const sin = tf.tensor3d(sinH, [B, 1, half]);
    const newCaches: LayerCaches[] = Array.from({ length: B }, () => Array.from({ length: c.nLayers }, () => [undefined, undefined] as [AttnCache | undefined, AttnCache | undefined] as [AttnCache, AttnCache]));
    const perRowAttention = (prefix: string, x: tf.Tensor2D, l: number, j: 0 | 1) => {
      const a = decodeAttention(c, P, prefix, x, cos, sin, caches.map((cs) => cs[l][j]));
      a.caches.forEach((kv, b) => (newCaches[b][l][j] = kv));
      return a.out;
    };

    let x = gatherRows(P('model.embed_tokens.weight') as tf.Tensor2D, Int32Array.from(tokens));
    for (let l = 0; l < c.nLayers; l++) {
      x = tensorLayer(c, P, l, x, {
        attention: (t, j, prefix) => perRowAttention(prefix, t, l, j),
        moe: (u, prefix) => {
          const moe = moeLayer(c, P, prefix, u, m.biases[l], { B, S: 1 });
          ffnRows += moe.stats.ffnRows;
          tokenLayers += moe.stats.tokens;
          for (let slot = 0; slot < B * K; slot++) if (moe.routing.idx[slot] < N) rowFfnRows[Math.floor(slot / K)]++;
          return moe;
        },
      }).out;
    }
    const h = rmsNorm(x, P('model.norm.weight'), c.rmsEps) as tf.Tensor2D;
    const logits = tf.matMul(h, P('lm_head.weight') as tf.Tensor2D) as tf.Tensor2D;
    return { logits, caches: newCaches };
  });
  return { logits: r.logits, caches: r.caches, ffnRows, tokenLayers, rowFfnRows };
}


/**
 * Drop-in replacements for the engine's two forward passes (inference/engineStep.ts `prefill`
 * and `decodeBatch`, same signatures and StepResult) that run on the plain-JS decoder with
 * activation sparsity, so `Engine` (generate and serve) can decode through CHESS kernels.
 *
 * Each sequence's KV cache lives on the host (HostKvCache, grown in place); the LayerCaches the
 * engine holds are placeholders (empty tensors, so its dispose calls stay valid) mapped to the
 * host cache. Prefill runs densely; decode rows run one at a time with the plan (CHESS targets
 * batch-1 decode; at B > 1 each row is still a batch-1 sparse decode, there is no batched
 * sparse kernel). The engine's KV-bytes gauge reads 0 for these placeholders.
 */
import * as tf from '@tensorflow/tfjs';
import { AttnCache } from '../../model/attention';
import { ServingModel } from '../loadModel';
import { LayerCaches, StepResult } from '../engineStep';
import { HostKvCache, SparseDecoder } from './decode';
import { SparsityPlan } from './thresholds';

export interface EngineSteps {
  prefill(m: ServingModel, ids: number[]): StepResult;
  decodeBatch(m: ServingModel, tokens: number[], past: number[], caches: LayerCaches[]): StepResult;
}

export function sparseEngineSteps(dec: SparseDecoder, plan: SparsityPlan | null): EngineSteps {
  const host = new WeakMap<LayerCaches, HostKvCache>();
  const c = dec.c;
  const wrap = (kv: HostKvCache): LayerCaches => {
    const lc: LayerCaches = Array.from({ length: c.nLayers }, () => {
      const one = (): AttnCache => ({ k: tf.zeros([1, 1, 0, 1]) as tf.Tensor4D, v: tf.zeros([1, 1, 0, 1]) as tf.Tensor4D });
      return [one(), one()] as [AttnCache, AttnCache];
    });
    host.set(lc, kv);
    return lc;
  };
  const run = (id: number, kv: HostKvCache, p: SparsityPlan | null) => {
    const rows0 = dec.counters.ffnExpertRows;
    const z = dec.step(id, kv, p);
    return { z, rows: dec.counters.ffnExpertRows - rows0 };
  };
  return {
    prefill(m, ids) {
      const kv = new HostKvCache(c);
      let z: Float32Array = new Float32Array(0);
      let ffnRows = 0;
      for (const id of ids) {
        const r = run(id, kv, null);
        z = r.z;
        ffnRows += r.rows;
      }
      return { logits: tf.tensor2d(z, [1, c.vocabSize]), caches: [wrap(kv)], ffnRows, tokenLayers: ids.length * c.nLayers, rowFfnRows: [ffnRows] };
    },
    decodeBatch(m, tokens, past, caches) {
      const B = tokens.length;
      const logits = new Float32Array(B * c.vocabSize);
      const out: LayerCaches[] = [];
      const rowFfnRows: number[] = [];
      tokens.forEach((id, b) => {
        const kv = host.get(caches[b]);
        if (!kv) throw new Error('sparse decode got a cache it did not create (mixing engine step functions)');
        if (kv.length !== past[b]) throw new Error(`cache holds ${kv.length} positions, engine says ${past[b]}`);
        const r = run(id, kv, plan);
        logits.set(r.z, b * c.vocabSize);
        rowFfnRows.push(r.rows);
        out.push(wrap(kv));
      });
      return { logits: tf.tensor2d(logits, [B, c.vocabSize]), caches: out, ffnRows: rowFfnRows.reduce((a, x) => a + x, 0), tokenLayers: B * c.nLayers, rowFfnRows };
    },
  };
}

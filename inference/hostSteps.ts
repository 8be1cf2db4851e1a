/**
 * The engine's default forward passes (EngineStepHooks) on the batched host decode path
 * (hostDecode.ts): `prefill` runs a prompt as one batch of rows, `decodeBatch` runs one row per
 * sequence in one step. Each sequence's keys and values live in a HostSequence; the LayerCaches
 * the engine holds for it are a placeholder (an empty list: no tensors, so the engine's dispose
 * calls cost nothing) mapped to it, and a fresh placeholder is returned each step so the engine
 * can drop the old one as it does with tensor caches.
 */
import * as tf from '@tensorflow/tfjs';
import type { EngineStepHooks } from './engine';
import { LayerCaches, StepResult } from './engineStep';
import { ServingModel } from './loadModel';
import { DecodeRow, existingHostDecoder, hostDecoder, HostSequence } from './hostDecode';
import { trimHostHeap } from './decodeKernels';
import { SparsityPlan } from './sparse/thresholds';

const held = new WeakMap<LayerCaches, HostSequence>();

function wrap(seq: HostSequence): LayerCaches {
  const lc: LayerCaches = [];
  held.set(lc, seq);
  return lc;
}

/** The host sequence behind an engine placeholder (undefined for other caches). */
export function hostSequenceOf(c: LayerCaches): HostSequence | undefined {
  return held.get(c);
}

export function hostPrefill(m: ServingModel, ids: number[]): StepResult {
  const seq = new HostSequence(m.config, ids.length + 16);
  const rows: DecodeRow[] = ids.map((token, pos) => ({ seq, token, pos }));
  const r = hostDecoder(m).run(rows, rows.map((_, i) => i === rows.length - 1));
  const ffnRows = r.ffnRows.reduce((a, x) => a + x, 0);
  return { logits: tf.tensor2d(r.logits, [1, m.config.vocabSize]), caches: [wrap(seq)], ffnRows, tokenLayers: ids.length * m.config.nLayers, rowFfnRows: [ffnRows] };
}

/** Several prompts in one run (their rows together); result i is the bits of hostPrefill(prompts[i]). */
export function hostPrefillBatch(m: ServingModel, prompts: number[][]): StepResult[] {
  const V = m.config.vocabSize;
  const seqs = prompts.map((ids) => new HostSequence(m.config, ids.length + 16));
  const rows: DecodeRow[] = prompts.flatMap((ids, i) => ids.map((token, pos) => ({ seq: seqs[i], token, pos })));
  const want = prompts.flatMap((ids) => ids.map((_, pos) => pos === ids.length - 1));
  const r = hostDecoder(m).run(rows, want);
  let row = 0;
  return prompts.map((ids, i) => {
    let ffnRows = 0;
    for (let t = 0; t < ids.length; t++) ffnRows += r.ffnRows[row++];
    return { logits: tf.tensor2d(r.logits.slice(i * V, (i + 1) * V), [1, V]), caches: [wrap(seqs[i])], ffnRows, tokenLayers: ids.length * m.config.nLayers, rowFfnRows: [ffnRows] };
  });
}

export function hostDecodeBatch(m: ServingModel, tokens: number[], past: number[], caches: LayerCaches[], plan: SparsityPlan | null = null): StepResult {
  const rows: DecodeRow[] = tokens.map((token, b) => {
    const seq = held.get(caches[b]);
    if (!seq) throw new Error('the host decode step got a cache it did not create (mixing engine step functions)');
    if (seq.length !== past[b]) throw new Error(`cache holds ${seq.length} positions, engine says ${past[b]}`);
    return { seq, token, pos: past[b] };
  });
  const r = hostDecoder(m).run(rows, rows.map(() => true), plan);
  const rowFfnRows = Array.from(r.ffnRows);
  return {
    logits: tf.tensor2d(r.logits, [tokens.length, m.config.vocabSize]),
    caches: rows.map((row) => wrap(row.seq)),
    ffnRows: rowFfnRows.reduce((a, x) => a + x, 0),
    tokenLayers: tokens.length * m.config.nLayers,
    rowFfnRows,
  };
}

/**
 * The engine's default steps; with a plan (`serve --sparsity`), decode steps run CHESS/CATS
 * sparsity on every row of the batch (prefill stays dense, as CHESS targets decode).
 */
export function hostEngineSteps(plan: SparsityPlan | null = null): EngineStepHooks {
  return {
    prefill: hostPrefill,
    prefillBatch: hostPrefillBatch,
    decodeBatch: (m, tokens, past, caches) => hostDecodeBatch(m, tokens, past, caches, plan),
    cacheBytes: (c) => held.get(c)?.bytes ?? 0,
    idle: (m) => {
      existingHostDecoder(m)?.releaseScratch();
      trimHostHeap();
    },
  };
}

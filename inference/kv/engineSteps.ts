/**
 * A2ATS retrieval attention in the serving engine (`serve --kv a2ats`): drop-in replacements for
 * inference/engineStep.ts `prefill` and `decodeBatch` (same signatures and StepResult), plus
 * the engine's optional release / cacheBytes / registerMetrics hooks.
 *
 * Each sequence's K/V live in an A2ATSSequence (kv/model.ts: the host tier of pre-RoPE keys,
 * their RoPE'd copies, values and VQ codes per layer, block and KV head). The LayerCaches the
 * engine holds for it are placeholders (one empty tensor, so its dispose calls stay valid)
 * mapped to that state. Prefill runs exact attention over the prompt. A decode step runs the
 * per-token work (embeddings, norms, projections, dense FFNs, router and MoE experts, lm_head)
 * once on the [B, d] batch and each row's attention as A2ATS retrieval over its own cache:
 * exact softmax over the retrieved top-K keys, the window and the sinks (hostForwardBatch).
 * When the engine disposes a sequence's current caches (finish, cancel, failure) `release`
 * drops its host state; `cacheBytes` reports the host tier to the KV-bytes gauge.
 */
import * as tf from '@tensorflow/tfjs';
import { AttnCache } from '../../model/attention';
import { CheckpointError } from '../../core/errors';
import type { EngineStepHooks } from '../engine';
import { LayerCaches, StepResult } from '../engineStep';
import { ServingModel } from '../loadModel';
import { Counter, Registry } from '../metrics';
import { A2ATS_FILE } from './calibrate';
import { A2ATSSequence, blockLayout, codebookKey, hostForwardBatch } from './model';
import { A2ATSServing } from './options';

export interface A2ATSStepStats {
  /** Keys attended / keys cached, summed over decode steps, layers, blocks and KV heads. */
  attended: number;
  available: number;
  /** attended / available (1 before any decode step: nothing was skipped). */
  share: number;
  /** Sequences whose host state is held now. */
  sequences: number;
  /** Most rows decoded in one step so far. */
  largestBatch: number;
}

export interface A2ATSEngineSteps extends Required<Omit<EngineStepHooks, 'idle'>> {
  stats(): A2ATSStepStats;
  /** One line for the server's start-up log. */
  describe(): string;
}

interface Row {
  /** null once released. */
  seq: A2ATSSequence | null;
  /** The placeholder caches the engine holds for this sequence now. */
  current: LayerCaches;
}

/** Every layer/block/KV head needs a codebook of the key dimension (else requests would fail one by one). */
function checkCodebooks(m: ServingModel, kv: A2ATSServing): void {
  const lay = blockLayout(m.config);
  const where = `${m.dir}/${A2ATS_FILE}`;
  const hint = 'rerun `moecat calibrate --method a2ats` on this checkpoint';
  for (let l = 0; l < m.config.nLayers; l++) {
    for (const j of [0, 1]) {
      for (let h = 0; h < lay.nKvHeads; h++) {
        const key = codebookKey(l, j, h);
        const cb = kv.codebooks.get(key);
        if (!cb) throw new CheckpointError(`no codebook for ${key}`, { where, hint });
        if (cb.D !== lay.dk) throw new CheckpointError(`codebook ${key} has dimension ${cb.D}, the model's keys ${lay.dk}`, { where, hint });
      }
    }
  }
}

export function a2atsEngineSteps(model: ServingModel, kv: A2ATSServing): A2ATSEngineSteps {
  checkCodebooks(model, kv);
  const c = model.config;
  const lay = blockLayout(c);
  // Host bytes per cached position: keys and RoPE'd keys [dk], values [dv] (float32) and one
  // int32 code, per layer, block and KV head.
  const bytesPerPosition = c.nLayers * 2 * lay.nKvHeads * (2 * lay.dk + lay.dv + 1) * 4;
  const rows = new WeakMap<LayerCaches, Row>();
  const counters: { attended: Counter; available: Counter }[] = [];
  let attended = 0;
  let available = 0;
  let sequences = 0;
  let largestBatch = 0;

  const placeholder = (row: Row): LayerCaches => {
    // One empty tensor stands for every k/v: disposing it again is a no-op.
    const empty = tf.zeros([1, 1, 0, 1]) as tf.Tensor4D;
    const one = (): AttnCache => ({ k: empty, v: empty });
    const lc: LayerCaches = Array.from({ length: c.nLayers }, () => [one(), one()] as [AttnCache, AttnCache]);
    row.current = lc;
    rows.set(lc, row);
    return lc;
  };
  const live = (lc: LayerCaches, past: number): Row & { seq: A2ATSSequence } => {
    const r = rows.get(lc);
    if (!r || !r.seq || r.current !== lc) throw new Error('A2ATS decode got a cache it did not create or one already released (mixing engine step functions?)');
    if (r.seq.length !== past) throw new Error(`A2ATS cache holds ${r.seq.length} positions, engine says ${past}`);
    return r as Row & { seq: A2ATSSequence };
  };
  const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);

  return {
    prefill(m: ServingModel, ids: number[]): StepResult {
      const seq = new A2ATSSequence(m, kv.codebooks, kv.opts);
      const r = hostForwardBatch(m, [{ cache: seq.cache, ids }], false);
      const row: Row = { seq, current: [] };
      const caches = [placeholder(row)];
      sequences++;
      const ffnRows = sum(r.layerFfnRows);
      return { logits: tf.tensor2d(r.logits, [1, c.vocabSize]), caches, ffnRows, tokenLayers: sum(r.layerTokens), rowFfnRows: [ffnRows] };
    },

    prefillBatch(m: ServingModel, prompts: number[][]): StepResult[] {
      const seqs = prompts.map(() => new A2ATSSequence(m, kv.codebooks, kv.opts));
      const r = hostForwardBatch(m, prompts.map((ids, i) => ({ cache: seqs[i].cache, ids })), false);
      sequences += seqs.length;
      return seqs.map((seq, i) => ({
        logits: tf.tensor2d(r.logits.slice(i * c.vocabSize, (i + 1) * c.vocabSize), [1, c.vocabSize]),
        caches: [placeholder({ seq, current: [] })],
        ffnRows: r.segmentFfnRows[i],
        tokenLayers: prompts[i].length * c.nLayers,
        rowFfnRows: [r.segmentFfnRows[i]],
      }));
    },

    decodeBatch(m: ServingModel, tokens: number[], past: number[], caches: LayerCaches[]): StepResult {
      const B = tokens.length;
      const batch = caches.map((lc, b) => live(lc, past[b]));
      const r = hostForwardBatch(m, batch.map((row, b) => ({ cache: row.seq.cache, ids: [tokens[b]] })), true);
      attended += r.stats.attended;
      available += r.stats.available;
      for (const k of counters) {
        k.attended.inc(undefined, r.stats.attended);
        k.available.inc(undefined, r.stats.available);
      }
      largestBatch = Math.max(largestBatch, B);
      return {
        logits: tf.tensor2d(r.logits, [B, c.vocabSize]),
        caches: batch.map((row) => placeholder(row)),
        ffnRows: sum(r.layerFfnRows),
        tokenLayers: sum(r.layerTokens),
        rowFfnRows: r.segmentFfnRows,
      };
    },

    release(lc: LayerCaches): void {
      const r = rows.get(lc);
      if (!r) return;
      rows.delete(lc);
      if (r.current === lc && r.seq) {
        r.seq = null;
        sequences--;
      }
    },

    cacheBytes(lc: LayerCaches): number {
      const r = rows.get(lc);
      return r?.seq ? r.seq.length * bytesPerPosition : 0;
    },

    registerMetrics(reg: Registry): void {
      counters.push({
        attended: reg.counter('moecat_a2ats_attended_keys_total', 'A2ATS decode: keys attended (retrieved top-K, window and sinks), summed over tokens, layers, blocks and KV heads.'),
        available: reg.counter('moecat_a2ats_available_keys_total', 'A2ATS decode: keys cached at those steps (what full attention would attend).'),
      });
      reg.gauge('moecat_a2ats_attended_share', 'A2ATS decode: attended keys over cached keys since start (1 before any decode step).', () => (available ? attended / available : 1));
      reg.gauge('moecat_a2ats_sequences', 'Sequences whose A2ATS host K/V state is held.', () => sequences);
    },

    stats: () => ({ attended, available, share: available ? attended / available : 1, sequences, largestBatch }),

    describe: () => {
      const o = kv.opts;
      const keys = o.keys === 'post-rope' ? 'keys post-rope' : `keys wrope, b ${o.b}`;
      return `kv a2ats: ratio ${o.ratio}, window ${o.window}, sinks ${o.sinks}, ${keys}; ${kv.codebooks.size} codebooks (host-tier K/V; exact prefill, retrieval attention on decode)`;
    },
  };
}

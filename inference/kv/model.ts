/**
 * Decoding of a whole model with A2ATS attention (DESIGN.md section 8). The model runs on the
 * batched host decode path (inference/hostDecode.ts) with A2ATS as its attention core: each
 * block's pre-RoPE queries/keys/values go to the host attention (kv/attention.ts), so the full
 * K/V live in plain arrays (the host tier). The prompt is prefilled with exact attention; decode
 * steps use A2ATS retrieval. `generateA2ATS` is batch 1; `hostForwardBatch` runs several
 * sequences per forward (the serving engine's steps, kv/engineSteps.ts). Greedy output matches
 * inference/generate.ts when every key is selected (ratio 1), up to float rounding (host
 * attention accumulates in float64).
 */
import * as tf from '@tensorflow/tfjs';
import { ModelConfig } from '../../model/config';
import { ParamGetter, projectQkv } from '../../model/attention';
import { ServingModel } from '../loadModel';
import { acceptToken, GenerateOptions, GenerateResult } from '../generate';
import { sampleToken } from '../sampling';
import { A2ATSHeadGroup, A2ATSOptions, DEFAULT_A2ATS, HeadGroupDims } from './attention';
import { Codebook } from './quantizer';
import { AttentionCore, DecodeRow, hostDecoder, HostSequence } from '../hostDecode';

/** Shape of one attention block's KV heads. */
export interface BlockLayout extends HeadGroupDims {
  nHeads: number;
  nKvHeads: number;
}

export function blockLayout(c: ModelConfig): BlockLayout {
  const a = c.attention;
  if (a.type === 'gqa') {
    return { nHeads: a.nHeads, nKvHeads: a.nKvHeads, groupSize: a.nHeads / a.nKvHeads, dk: a.headDim, dv: a.headDim, rope: { offset: 0, dim: a.headDim, base: c.ropeBase }, scale: 1 / Math.sqrt(a.headDim) };
  }
  // MLA caches expanded per-head keys [k_nope_h, k_rope] (model/attention.ts): one KV head per query head.
  const dk = a.nopeHeadDim + a.ropeHeadDim;
  return { nHeads: a.nHeads, nKvHeads: a.nHeads, groupSize: 1, dk, dv: a.vHeadDim, rope: { offset: a.nopeHeadDim, dim: a.ropeHeadDim, base: c.ropeBase }, scale: 1 / Math.sqrt(dk) };
}

/** Codebook key for layer l, attention block j (0 or 1), KV head h. */
export function codebookKey(l: number, j: number, h: number): string {
  return `layers.${l}.attn.${j}.kv_head.${h}`;
}

/** Per-sequence host KV state: groups[l][j][h]. */
export class A2ATSCache {
  readonly groups: A2ATSHeadGroup[][][];
  constructor(readonly config: ModelConfig, codebooks: Map<string, Codebook> | null, readonly opts: A2ATSOptions = DEFAULT_A2ATS) {
    const lay = blockLayout(config);
    this.groups = Array.from({ length: config.nLayers }, (_, l) =>
      [0, 1].map((j) => Array.from({ length: lay.nKvHeads }, (_, h) => new A2ATSHeadGroup(lay, codebooks?.get(codebookKey(l, j, h)) ?? null, opts))),
    );
  }

  get length(): number {
    return this.groups[0][0][0].length;
  }
}

/** Receives each block's pre-RoPE queries [S, nHeads, dk], keys [S, nKvHeads, dk] and values [S, nKvHeads, dv]. */
export type ProjectionHook = (l: number, j: number, q: Float32Array, k: Float32Array, v: Float32Array, S: number) => void;

export interface Projections {
  q: Float32Array; // [S, H, dk]
  k: Float32Array; // [S, Hk, dk]
  v: Float32Array; // [S, Hk, dv]
}

/** Pre-RoPE queries, keys and values of one attention block (model/attention.projectQkv). */
export function project(c: ModelConfig, P: ParamGetter, p: string, x: tf.Tensor2D, S: number): Projections {
  const { q, k, v } = projectQkv(c, P, p, x, 1, S, null);
  return { q: q.dataSync() as Float32Array, k: k.dataSync() as Float32Array, v: v.dataSync() as Float32Array };
}

/** Statistics of one forward: attended keys over available keys, summed over blocks/heads/rows. */
export interface AttendStats {
  attended: number;
  available: number;
}

/** One sequence's part of a host forward: `ids` run at positions cache.length.. of `cache`. */
export interface HostSegment {
  cache: A2ATSCache;
  ids: number[];
}

export interface HostForwardResult {
  /** Logits of the last position [V]. */
  logits: Float32Array;
  /** Mean FFN experts per token over the MoE layers. */
  ffn: number;
  stats: AttendStats;
}

export interface HostBatchResult {
  /** Logits of each segment's last position, [segments, V] row-major. */
  logits: Float32Array;
  /** FFN-expert rows run per MoE layer, and tokens routed per MoE layer. */
  layerFfnRows: number[];
  layerTokens: number[];
  /** FFN-expert rows run for each segment's tokens, summed over layers. */
  segmentFfnRows: number[];
  stats: AttendStats;
}

/**
 * Runs several sequences through the model in one forward on the batched host decode path
 * (inference/hostDecode.ts, the engine's path): every per-token part (embeddings, norms,
 * projections, dense FFNs, router and MoE experts, lm_head) runs once on all their rows, and
 * attention (its AttentionCore) runs per row against that sequence's own host cache, appending
 * its keys/values.
 * `sparse`: A2ATS retrieval (decode); otherwise exact attention (prefill, calibration).
 */
export function hostForwardBatch(m: ServingModel, segs: HostSegment[], sparse: boolean, hook?: ProjectionHook): HostBatchResult {
  const c = m.config;
  if (segs.length === 0 || segs.some((s) => s.ids.length === 0)) throw new Error('hostForwardBatch needs at least one sequence and one token per sequence');
  const lay = blockLayout(c);
  const { nHeads: H, nKvHeads: Hk, groupSize: G, dk, dv } = lay;
  const stats: AttendStats = { attended: 0, available: 0 };
  // Rows of the batched host decode path: each segment's tokens at positions cache.length..;
  // the HostSequences only count positions, the A2ATS caches hold the keys and values.
  const rows: DecodeRow[] = [];
  const rowSeg: number[] = [];
  const want: boolean[] = [];
  segs.forEach((seg, n) => {
    const seq = new HostSequence(c, 0);
    seq.length = seg.cache.length;
    seg.ids.forEach((token, i) => {
      rows.push({ seq, token, pos: seq.length + i });
      rowSeg.push(n);
      want.push(i === seg.ids.length - 1);
    });
  });
  const core: AttentionCore = {
    block(l, j, q, k, v, o) {
      hook?.(l, j, q, k, v, rows.length);
      rows.forEach((r, row) => {
        const groups = segs[rowSeg[row]].cache.groups[l][j];
        for (let h = 0; h < Hk; h++) groups[h].append(k.subarray((row * Hk + h) * dk, (row * Hk + h + 1) * dk), v.subarray((row * Hk + h) * dv, (row * Hk + h + 1) * dv));
        for (let h = 0; h < Hk; h++) {
          const qs = Array.from({ length: G }, (_, g) => q.subarray((row * H + h * G + g) * dk, (row * H + h * G + g + 1) * dk));
          let outs: Float32Array[];
          if (sparse) {
            const r2 = groups[h].attend(qs, r.pos);
            outs = r2.out;
            stats.attended += r2.selected.length;
          } else {
            outs = groups[h].attendExact(qs, r.pos);
            stats.attended += r.pos + 1;
          }
          stats.available += r.pos + 1;
          outs.forEach((og, g) => o.set(og, (row * H + h * G + g) * dv));
        }
      });
    },
  };
  const r = hostDecoder(m).run(rows, want, null, core);
  const segmentFfnRows = new Array<number>(segs.length).fill(0);
  r.ffnRows.forEach((n, row) => (segmentFfnRows[rowSeg[row]] += n));
  return { logits: r.logits, layerFfnRows: r.layerFfnRows, layerTokens: r.layerFfnRows.map(() => rows.length), segmentFfnRows, stats };
}

/**
 * Runs `ids` at positions cache.length.. through the model, appending their keys/values to the
 * cache. `sparse`: A2ATS retrieval (decode); otherwise exact attention (prefill, calibration).
 */
export function hostForward(m: ServingModel, cache: A2ATSCache, ids: number[], sparse: boolean, hook?: ProjectionHook): HostForwardResult {
  const r = hostForwardBatch(m, [{ cache, ids }], sparse, hook);
  let ffn = 0;
  for (let l = 0; l < r.layerFfnRows.length; l++) ffn += r.layerFfnRows[l] / r.layerTokens[l];
  return { logits: r.logits, ffn: ffn / m.config.nLayers, stats: r.stats };
}

export interface A2ATSGenerateResult extends GenerateResult {
  /** Attended keys / available keys over all decode steps, blocks and heads. */
  attendedShare: number;
}

/**
 * One sequence decoded with A2ATS: `prefill` runs exact attention over the prompt, `decode`
 * runs one token with retrieval. The engine can hold one per row instead of tensor caches.
 */
export class A2ATSSequence {
  readonly cache: A2ATSCache;
  constructor(readonly model: ServingModel, codebooks: Map<string, Codebook> | null, readonly opts: A2ATSOptions = DEFAULT_A2ATS) {
    if (opts.ratio < 1 && !codebooks) throw new Error('A2ATS with ratio < 1 needs codebooks (run calibration first)');
    this.cache = new A2ATSCache(model.config, codebooks, opts);
  }

  get length(): number {
    return this.cache.length;
  }

  prefill(ids: number[]): HostForwardResult {
    return hostForward(this.model, this.cache, ids, false);
  }

  decode(id: number): HostForwardResult {
    return hostForward(this.model, this.cache, [id], true);
  }
}

/** inference/generate.generate with A2ATS attention on the decode steps (batch 1). */
export function generateA2ATS(m: ServingModel, prompt: number[], o: GenerateOptions, codebooks: Map<string, Codebook> | null, kv: Partial<A2ATSOptions> = {}): A2ATSGenerateResult {
  if (prompt.length === 0) throw new Error('empty prompt');
  const seq = new A2ATSSequence(m, codebooks, { ...DEFAULT_A2ATS, ...kv });
  const out: number[] = [];
  const logprobs: number[] = [];
  let finish: 'stop' | 'length' = 'length';
  let ffnSum = 0;
  let steps = 0;
  let attended = 0;
  let available = 0;
  let next: number | null = null;
  while (out.length < o.maxTokens && seq.length + (next === null ? prompt.length : 1) <= m.config.maxSeqLen) {
    const r = next === null ? seq.prefill(prompt) : seq.decode(next);
    if (next !== null) {
      attended += r.stats.attended;
      available += r.stats.available;
    }
    ffnSum += r.ffn;
    steps++;
    const { id, logprob } = sampleToken(r.logits, o, seq.length);
    if (acceptToken(o, out, logprobs, id, logprob) === 'stop') {
      finish = 'stop';
      break;
    }
    next = id;
  }
  return { ids: out, logprobs, finishReason: finish, ffnExpertsPerToken: steps ? ffnSum / steps : 0, attendedShare: available ? attended / available : 1 };
}

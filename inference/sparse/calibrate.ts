/**
 * CHESS calibration (arXiv 2409.01366, section 3): run the model densely over calibration
 * tokens on the serving decoder (inference/hostDecode.ts, with an activation observer), collect per-FFN gate/up activations and per-attention-block projection inputs, and
 * turn them into thresholds at a target sparsity s (thresholds.ts says what each one is).
 *
 * Why channel-wise: dropping a_g,i changes the FFN output by a_g,i · a_u,i · W_down[i, :], so
 * its expected cost is a_g,i² · E[a_u,i²] (times a row norm common to the comparison). CHESS
 * ranks (token, channel) pairs by that importance and keeps the top 1 − s; CATS ranks |a_g|
 * alone, which over-prunes channels whose up activation is large.
 */
import { DataError } from '../../core/errors';
import { PreparedData } from '../../data/prepared';
import { ServingModel } from '../loadModel';
import { hostDecoder, HostSequence } from '../hostDecode';
import { ActivationObserver } from './observer';
import { attentionPrefixes, ffnPrefixes } from './blocks';
import { AttentionThresholds, FfnThresholds, SparsityThresholds, THRESHOLDS_FORMAT, writeThresholds } from './thresholds';

/** Growable float buffer. */
class Floats {
  data = new Float32Array(1024);
  n = 0;
  push(v: Float32Array): void {
    if (this.n + v.length > this.data.length) {
      const g = new Float32Array(Math.max(this.data.length * 2, this.n + v.length));
      g.set(this.data.subarray(0, this.n));
      this.data = g;
    }
    this.data.set(v, this.n);
    this.n += v.length;
  }
  view(): Float32Array {
    return this.data.subarray(0, this.n);
  }
}

/** Raw activations gathered from a dense pass; thresholds at any s derive from them. */
export interface CalibrationStats {
  tokens: number;
  /** Per FFN: a_g of every evaluation (rows of width h) and sum of a_u² per channel. */
  ffn: Map<string, { h: number; ag: Floats; sumAu2: Float64Array; rows: number }>;
  attention: Map<string, { q: Floats; o: Floats }>;
}

/** The value v such that a fraction s of `values` lies strictly below v (nearest rank). */
export function quantile(values: Float32Array, s: number): number {
  if (values.length === 0 || s <= 0) return 0;
  const sorted = Float32Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor(s * sorted.length))];
}

/**
 * Runs each window densely through the serving decoder (one run per window: its tokens are rows
 * of one sequence, as a prompt's are), recording activations.
 */
export function collectStats(m: ServingModel, windows: Int32Array[]): CalibrationStats {
  const stats: CalibrationStats = { tokens: 0, ffn: new Map(), attention: new Map() };
  for (const [p, h] of ffnPrefixes(m.config)) stats.ffn.set(p, { h, ag: new Floats(), sumAu2: new Float64Array(h), rows: 0 });
  for (const p of attentionPrefixes(m.config)) stats.attention.set(p, { q: new Floats(), o: new Floats() });
  const obs: ActivationObserver = {
    ffn(prefix, ag, au) {
      const s = stats.ffn.get(prefix)!;
      s.ag.push(ag);
      for (let i = 0; i < s.h; i++) s.sumAu2[i] += au[i] * au[i];
      s.rows++;
    },
    attention(prefix, which, x) {
      stats.attention.get(prefix)![which].push(x);
    },
  };
  const dec = hostDecoder(m);
  for (const w of windows) {
    const seq = new HostSequence(m.config, w.length);
    dec.run(Array.from(w, (token, pos) => ({ seq, token, pos })), Array.from(w, () => false), null, null, obs);
    stats.tokens += w.length;
  }
  return stats;
}

const UNUSED_CHANNEL = 1e30;

/** CHESS and CATS FFN thresholds and attention thresholds at target sparsity s. */
export function thresholdsAt(stats: CalibrationStats, s: number, checkpointStep = 0): SparsityThresholds {
  if (!(s >= 0 && s < 1)) throw new RangeError(`sparsity must be in [0, 1), got ${s}`);
  const ffn = new Map<string, FfnThresholds>();
  for (const [p, st] of stats.ffn) {
    const ag = st.ag.view();
    const chess = new Float32Array(st.h);
    let cats = 0;
    if (st.rows > 0) {
      const eAu2 = Float64Array.from(st.sumAu2, (v) => v / st.rows);
      const imp = new Float32Array(ag.length);
      for (let r = 0; r < st.rows; r++) for (let i = 0; i < st.h; i++) imp[r * st.h + i] = ag[r * st.h + i] * ag[r * st.h + i] * eAu2[i];
      const T = quantile(imp, s);
      for (let i = 0; i < st.h; i++) chess[i] = eAu2[i] > 0 ? Math.sqrt(T / eAu2[i]) : T > 0 ? UNUSED_CHANNEL : 0;
      cats = quantile(Float32Array.from(ag, Math.abs), s);
    }
    // An expert never routed to in calibration keeps threshold 0 (dense): no evidence to prune on.
    ffn.set(p, { chess, cats });
  }
  const attention = new Map<string, AttentionThresholds>();
  for (const [p, st] of stats.attention) {
    attention.set(p, { q: quantile(Float32Array.from(st.q.view(), Math.abs), s), o: quantile(Float32Array.from(st.o.view(), Math.abs), s) });
  }
  return { format: THRESHOLDS_FORMAT, sparsity: s, tokens: stats.tokens, checkpointStep, ffn, attention };
}

/**
 * Windows of `seqLen` consecutive tokens from a prepared corpus, taken round-robin over its
 * sources, `tokens` in all. `from: 'head'` reads each source from its start (calibration),
 * `'tail'` from its end (held-out evaluation), so the two never overlap while each source
 * holds more than twice what is asked of it.
 */
export function corpusWindows(data: PreparedData, tokens: number, seqLen: number, from: 'head' | 'tail', vocabSize: number): Int32Array[] {
  const sources = [...data.sources.values()].filter((s) => s.tokens.length >= seqLen);
  if (sources.length === 0) throw new DataError(`no source holds ${seqLen} tokens`, { where: data.dir });
  const out: Int32Array[] = [];
  const cursor = new Array<number>(sources.length).fill(0);
  let got = 0;
  for (let k = 0; got < tokens; k++) {
    const i = k % sources.length;
    const src = sources[i].tokens;
    const n = Math.min(seqLen, tokens - got);
    const lo = from === 'head' ? cursor[i] : src.length - cursor[i] - n;
    if (lo < 0 || lo + n > src.length) throw new DataError(`the corpus holds fewer than ${tokens} tokens`, { where: data.dir, hint: 'lower --tokens' });
    cursor[i] += n;
    const w = src.subarray(lo, lo + n);
    for (const id of w) if (id >= vocabSize) throw new DataError(`token id ${id} is outside the model's vocabulary of ${vocabSize}`, { where: data.dir, hint: 'calibrate on data prepared with the checkpoint\'s tokenizer' });
    out.push(Int32Array.from(w));
    got += n;
  }
  return out;
}

/** What `moecat calibrate` needs from a method (cli/calibrate.ts maps names to these). */
export interface CalibrationOptions {
  sparsity: number;
  tokens: number;
  seqLen?: number;
  log?: (line: string) => void;
}

/** `--method chess`: statistics over calibration tokens, thresholds at s, chess.json beside the checkpoint. */
export function calibrateChess(m: ServingModel, data: PreparedData, o: CalibrationOptions): { file: string; thresholds: SparsityThresholds; summary: Record<string, unknown> } {
  const seqLen = Math.min(o.seqLen ?? 64, m.config.maxSeqLen);
  const windows = corpusWindows(data, o.tokens, seqLen, 'head', m.config.vocabSize);
  const t0 = performance.now();
  const stats = collectStats(m, windows);
  o.log?.(`calibration: ${stats.tokens} tokens in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const thresholds = thresholdsAt(stats, o.sparsity, m.step);
  const file = writeThresholds(m.dir, thresholds);
  let routed = 0;
  for (const s of stats.ffn.values()) if (s.rows > 0) routed++;
  return { file, thresholds, summary: { sparsity: o.sparsity, tokens: stats.tokens, ffns: stats.ffn.size, ffnsSeen: routed, attentionBlocks: stats.attention.size } };
}

/**
 * A2ATS calibration (arXiv 2502.12665, section 3.2): run the model with exact attention over
 * calibration tokens, collect each block's pre-RoPE queries (rotated by R_b: q~ = R_b q) and
 * pre-RoPE keys per KV head, and train one query-aware codebook per layer, block and KV head.
 * Key mode 'post-rope' collects instead queries and keys rotated by their own positions
 * (R_t q, R_t k); the objective (H = E[q~ q~^T], scaling, Cholesky, k-means++) is the same.
 * Codebooks go beside the checkpoint in `a2ats.safetensors`, a file that state.json does not
 * list, so the checkpoint's checksums stay valid; its metadata records `keys` (absent: wrope).
 */
import * as fs from 'fs';
import * as path from 'path';
import { resolveCheckpoint } from '../../core/checkpoint';
import { ConfigError, CheckpointError, DataError } from '../../core/errors';
import { RngStream } from '../../core/rng';
import { readSafetensorsFile, SafeTensor, writeSafetensorsFile } from '../../core/safetensors';
import { Tokenizer } from '../../data/tokenizer';
import { PreparedData } from '../../data/prepared';
import { loadServingModel, ServingModel } from '../loadModel';
import { DEFAULT_A2ATS, KEY_MODES, KeyMode } from './attention';
import { rotate } from './rope';
import { A2ATSCache, blockLayout, codebookKey, hostForward } from './model';
import { Codebook, makeCodebook, trainCodebook } from './quantizer';

export const A2ATS_FILE = 'a2ats.safetensors';

export interface CalibrateModelOptions {
  codebookSize: number;
  seed: number;
  /** WRoPE distance b (default 2048; unused with keys 'post-rope'). */
  b?: number;
  /** What the codebooks quantise (default 'wrope'). */
  keys?: KeyMode;
  /** false: plain k-means on the keys (the ablation). */
  queryAware?: boolean;
  tol?: number;
  maxIter?: number;
  /** Tokens per calibration window (default and maximum: the model's context). */
  seqLen?: number;
  /** Called after each codebook (cost per codebook: O(keys · M · d_k) per Lloyd iteration). */
  onProgress?: (done: number, total: number) => void;
}

/** Trains every codebook of `m` on `tokenIds` (chunked to the model's context). */
export function calibrateModel(m: ServingModel, tokenIds: number[], o: CalibrateModelOptions): Map<string, Codebook> {
  const c = m.config;
  const lay = blockLayout(c);
  const b = o.b ?? DEFAULT_A2ATS.b;
  const post = o.keys === 'post-rope';
  const { nHeads: H, nKvHeads: Hk, groupSize: G, dk } = lay;
  const qs = new Map<string, number[]>();
  const ks = new Map<string, number[]>();
  for (let l = 0; l < c.nLayers; l++) for (const j of [0, 1]) for (let h = 0; h < Hk; h++) {
    qs.set(codebookKey(l, j, h), []);
    ks.set(codebookKey(l, j, h), []);
  }
  const rot = new Float64Array(dk);
  const win = Math.min(o.seqLen ?? c.maxSeqLen, c.maxSeqLen);
  for (let start = 0; start < tokenIds.length; start += win) {
    const chunk = tokenIds.slice(start, start + win);
    const cache = new A2ATSCache(c, null, { ...DEFAULT_A2ATS, b, ratio: 1 });
    hostForward(m, cache, chunk, false, (l, j, q, k, _v, S) => {
      for (let h = 0; h < Hk; h++) {
        const key = codebookKey(l, j, h);
        const qa = qs.get(key)!;
        const ka = ks.get(key)!;
        for (let i = 0; i < S; i++) {
          // Each chunk runs at positions 0..S-1: post-rope rotates query and key i by i.
          const ki = k.subarray((i * Hk + h) * dk, (i * Hk + h + 1) * dk);
          const kr = post ? rotate(ki, i, lay.rope, rot) : ki;
          for (let d = 0; d < dk; d++) ka.push(kr[d]);
          for (let g = 0; g < G; g++) {
            rotate(q.subarray((i * H + h * G + g) * dk, (i * H + h * G + g + 1) * dk), post ? i : b, lay.rope, rot);
            for (let d = 0; d < dk; d++) qa.push(rot[d]);
          }
        }
      }
    });
  }
  const out = new Map<string, Codebook>();
  let idx = 0;
  for (const [key, ka] of ks) {
    const rng = RngStream.of(o.seed, 'a2ats-kmeans', idx++);
    const qa = qs.get(key)!;
    out.set(key, trainCodebook(ka, ka.length / dk, dk, rng, {
      size: o.codebookSize, queries: o.queryAware === false ? undefined : qa, nQueries: qa.length / dk, tol: o.tol, maxIter: o.maxIter,
    }));
    o.onProgress?.(idx, ks.size);
  }
  return out;
}

export interface CalibrateA2ATSOptions {
  /** Checkpoint dir, its `latest` link, or a run dir. */
  checkpoint: string;
  /** Calibration token ids, or text encoded with the checkpoint's tokenizer, or a file of text
   * (.txt as is; .jsonl: the `text` field of each line, documents joined by blank lines). */
  tokenIds?: number[];
  text?: string;
  textFile?: string;
  /** Codebook size M per layer/block/KV head (default 4096; clamped to the number of keys). */
  codebookSize?: number;
  seed?: number;
  b?: number;
  keys?: KeyMode;
  queryAware?: boolean;
  maxIter?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface CalibrateA2ATSResult {
  file: string;
  codebooks: number;
  /** Codebook size actually used (M clamped to the number of calibration keys). */
  codebookSize: number;
  tokens: number;
}

/** Calibrates a checkpoint and writes `a2ats.safetensors` into its directory. */
export function calibrateA2ATS(o: CalibrateA2ATSOptions): CalibrateA2ATSResult {
  const M = o.codebookSize ?? 4096;
  if (!Number.isInteger(M) || M < 1) throw new ConfigError(`codebook size must be a positive integer, got ${M}`, { where: 'codebookSize' });
  const { keys, b } = keyMode(o.keys, o.b);
  const dir = resolveCheckpoint(o.checkpoint);
  const m = loadServingModel(dir);
  try {
    let ids = o.tokenIds;
    const text = o.text ?? (o.textFile !== undefined ? readText(o.textFile) : undefined);
    if (!ids && text !== undefined) {
      if (!m.tokenizerJson) throw new CheckpointError('checkpoint has no tokenizer.json to encode the calibration text', { where: dir, hint: 'pass token ids instead' });
      ids = Tokenizer.fromJSON(m.tokenizerJson, `${dir}/tokenizer.json`).encode(text);
    }
    if (!ids || ids.length === 0) throw new ConfigError('calibration needs tokens: pass non-empty text or token ids', { where: 'data' });
    const bad = ids.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= m.config.vocabSize);
    if (bad >= 0) throw new ConfigError(`token id ${ids[bad]} at index ${bad} is outside the vocabulary [0, ${m.config.vocabSize})`, { where: 'tokenIds' });
    const seed = o.seed ?? 0;
    const books = calibrateModel(m, ids, { codebookSize: M, seed, b, keys, queryAware: o.queryAware, maxIter: o.maxIter, onProgress: o.onProgress });
    const file = path.join(dir, A2ATS_FILE);
    writeCodebooks(file, books, { ...keyMeta(keys, b), seed: String(seed), queryAware: String(o.queryAware !== false), tokens: String(ids.length) });
    const first = books.values().next().value as Codebook;
    return { file, codebooks: books.size, codebookSize: first.M, tokens: ids.length };
  } finally {
    m.store.dispose();
  }
}

/** Validated key mode and WRoPE b: b belongs to wrope, so post-rope with an explicit b is refused. */
export function keyMode(keys: string | undefined, b: number | undefined): { keys: KeyMode; b: number } {
  const k = (keys ?? 'wrope') as KeyMode;
  if (!KEY_MODES.includes(k)) throw new ConfigError(`--keys must be one of ${KEY_MODES.join(', ')}, got '${keys}'`, { where: '--keys' });
  if (k === 'post-rope' && b !== undefined) throw new ConfigError('b (the WRoPE distance) does not apply to keys post-rope', { where: '--keys' });
  return { keys: k, b: b ?? DEFAULT_A2ATS.b };
}

/** Codebook-file metadata of the key mode: `keys`, and b for wrope only. */
function keyMeta(keys: KeyMode, b: number): Record<string, string> {
  return keys === 'post-rope' ? { keys } : { keys, b: String(b) };
}

function readText(file: string): string {
  let raw: string;
  try {
    raw = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read calibration data (${e instanceof Error ? e.message : String(e)})`, { where: file });
  }
  if (!file.endsWith('.jsonl')) return raw;
  const docs: string[] = [];
  raw.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let t: unknown;
    try {
      t = (JSON.parse(line) as { text?: unknown }).text;
    } catch {
      throw new ConfigError('line is not JSON', { where: `${file}:${i + 1}` });
    }
    if (typeof t !== 'string') throw new ConfigError('line has no string `text` field', { where: `${file}:${i + 1}` });
    docs.push(t);
  });
  return docs.join('\n\n');
}

export function writeCodebooks(file: string, books: Map<string, Codebook>, meta: Record<string, string>): void {
  const t = new Map<string, SafeTensor>();
  for (const [key, cb] of books) {
    t.set(`${key}.centroids`, { dtype: 'F64', shape: [cb.M, cb.D], data: cb.centroids });
    t.set(`${key}.cholesky`, { dtype: 'F64', shape: [cb.D, cb.D], data: cb.L });
  }
  const tmp = `${file}.tmp-${process.pid}`;
  writeSafetensorsFile(tmp, t, { format: 'moecat-a2ats-v1', ...meta });
  fs.renameSync(tmp, file);
}

/** Reads `a2ats.safetensors` from a checkpoint directory (null when absent). */
export function loadCodebooks(checkpoint: string): { codebooks: Map<string, Codebook>; meta: Record<string, string> } | null {
  const dir = resolveCheckpoint(checkpoint);
  const file = path.join(dir, A2ATS_FILE);
  if (!fs.existsSync(file)) return null;
  const d = readSafetensorsFile(file);
  const books = new Map<string, Codebook>();
  for (const [name, ct] of d.tensors) {
    if (!name.endsWith('.centroids')) continue;
    const key = name.slice(0, -'.centroids'.length);
    const Lt = d.tensors.get(`${key}.cholesky`);
    if (!Lt || ct.dtype !== 'F64' || Lt.dtype !== 'F64') throw new CheckpointError(`codebook ${key} is incomplete or not F64`, { where: file, hint: 'rerun calibration' });
    const [M, D] = ct.shape;
    books.set(key, makeCodebook(ct.data as Float64Array, Lt.data as Float64Array, M, D));
  }
  return { codebooks: books, meta: d.metadata ?? {} };
}

/** Default codebook size for `tokens` calibration keys: ~16 keys per centroid, a power of two, at most 4096. */
export function defaultCodebookSize(tokens: number): number {
  return Math.max(1, Math.min(4096, 2 ** Math.floor(Math.log2(Math.max(1, tokens / 16)))));
}

/**
 * The `moecat calibrate --method a2ats` entry (cli/calibrate.ts CalibrationFn shape): the first
 * `tokens` tokens of the prepared corpus, taken round-robin over its sources in windows of
 * `seqLen`, train the codebooks; `a2ats.safetensors` is written beside the checkpoint.
 */
export function calibrateA2ATSMethod(
  m: ServingModel,
  data: PreparedData,
  o: { tokens: number; seqLen?: number; codebookSize?: number; seed?: number; b?: number; keys?: string; log?: (line: string) => void },
): { file: string; summary: Record<string, unknown> } {
  const seqLen = Math.min(o.seqLen ?? m.config.maxSeqLen, m.config.maxSeqLen);
  const { keys, b } = keyMode(o.keys, o.b);
  const sources = [...data.sources.values()].filter((s) => s.tokens.length > 0);
  if (sources.length === 0) throw new DataError('the prepared corpus holds no tokens', { where: data.dir });
  const ids: number[] = [];
  const cursor = sources.map(() => 0);
  for (let k = 0; ids.length < o.tokens; k++) {
    const i = k % sources.length;
    const src = sources[i].tokens;
    if (sources.every((s, j) => cursor[j] >= s.tokens.length)) break;
    const n = Math.min(seqLen, o.tokens - ids.length, src.length - cursor[i]);
    for (let t = 0; t < n; t++) {
      const id = src[cursor[i] + t];
      if (id >= m.config.vocabSize) throw new DataError(`token id ${id} is outside the model's vocabulary of ${m.config.vocabSize}`, { where: data.dir, hint: "calibrate on data prepared with the checkpoint's tokenizer" });
      ids.push(id);
    }
    cursor[i] += n;
  }
  const M = o.codebookSize ?? defaultCodebookSize(ids.length);
  const seed = o.seed ?? 0;
  const t0 = performance.now();
  const books = calibrateModel(m, ids, { codebookSize: M, seed, b, keys, seqLen, onProgress: (d, n) => o.log?.(`a2ats: codebook ${d}/${n}`) });
  const file = path.join(m.dir, A2ATS_FILE);
  writeCodebooks(file, books, { ...keyMeta(keys, b), seed: String(seed), queryAware: 'true', tokens: String(ids.length), checkpointStep: String(m.step) });
  const first = books.values().next().value as Codebook;
  o.log?.(`a2ats: ${books.size} codebooks of ${first.M} centroids (keys ${keys}) from ${ids.length} tokens in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return { file, summary: { tokens: ids.length, codebooks: books.size, codebookSize: first.M, keys, ...(keys === 'wrope' ? { b } : {}), seed } };
}

/**
 * Activation-sparsity thresholds and their file, `chess.json`, written beside a checkpoint's
 * files (a separate file: the checkpoint's own checksums in state.json stay valid, and the
 * checkpoint loader ignores unlisted files).
 *
 * Per SwiGLU FFN (dense `mlps.{0,1}` and every expert), keyed by its parameter prefix:
 *  - `chess`: per-channel gate thresholds tau_i = sqrt(T / E[a_u,i²]) (CHESS eq. 8-9): T is the
 *    s-quantile of the importance a_g,i² · E[a_u,i²] over calibration tokens and channels.
 *  - `cats`: one threshold on |a_g| at quantile s (the CATS baseline).
 * Per attention block (selective sparsification, CHESS section 3.3): one threshold each on
 * the q_proj / q_a_proj input and on the o_proj input, at quantile s of |x|.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CheckpointError } from '../../core/errors';

export const THRESHOLDS_FILE = 'chess.json';
export const THRESHOLDS_FORMAT = 'moecat-activation-sparsity/1';

export interface FfnThresholds {
  /** Channel-wise gate thresholds (CHESS); 1e30 marks a channel whose up activation was always 0. */
  chess: Float32Array;
  /** Layer-wise |a_g| threshold (CATS). */
  cats: number;
}

export interface AttentionThresholds {
  /** Threshold on |input| of q_proj (GQA) or q_a_proj (MLA). */
  q: number;
  /** Threshold on |input| of o_proj. */
  o: number;
}

export interface SparsityThresholds {
  format: string;
  sparsity: number;
  tokens: number;
  checkpointStep: number;
  ffn: Map<string, FfnThresholds>;
  attention: Map<string, AttentionThresholds>;
}

/** How a decode applies thresholds: which FFN rule, and whether attention is sparsified. */
export type FfnRule = 'chess' | 'cats';
export interface SparsityPlan {
  ffn: FfnRule | null;
  attention: boolean;
  thresholds: SparsityThresholds;
}

/** Thresholds of zero everywhere: a plan with them computes exactly what the dense path does. */
export function zeroThresholds(ffnHidden: Map<string, number>, attention: string[]): SparsityThresholds {
  const ffn = new Map<string, FfnThresholds>();
  for (const [k, h] of ffnHidden) ffn.set(k, { chess: new Float32Array(h), cats: 0 });
  return { format: THRESHOLDS_FORMAT, sparsity: 0, tokens: 0, checkpointStep: 0, ffn, attention: new Map(attention.map((k) => [k, { q: 0, o: 0 }])) };
}

export function thresholdsToJson(t: SparsityThresholds): string {
  const ffn: Record<string, { chess: number[]; cats: number }> = {};
  for (const [k, v] of t.ffn) ffn[k] = { chess: Array.from(v.chess), cats: v.cats };
  const attention: Record<string, AttentionThresholds> = {};
  for (const [k, v] of t.attention) attention[k] = v;
  return JSON.stringify({ format: t.format, sparsity: t.sparsity, tokens: t.tokens, checkpointStep: t.checkpointStep, ffn, attention }) + '\n';
}

export function thresholdsFromJson(text: string, where: string): SparsityThresholds {
  let raw: {
    format?: unknown; sparsity?: unknown; tokens?: unknown; checkpointStep?: unknown;
    ffn?: Record<string, { chess?: unknown; cats?: unknown }>; attention?: Record<string, { q?: unknown; o?: unknown }>;
  };
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`not valid JSON (${(e as Error).message})`, { where, hint: 'rerun `moecat calibrate --method chess`' });
  }
  if (raw.format !== THRESHOLDS_FORMAT) throw new CheckpointError(`format is ${JSON.stringify(raw.format)}, expected ${THRESHOLDS_FORMAT}`, { where });
  const num = (v: unknown, key: string) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new CheckpointError(`${key} must be a finite number >= 0, got ${JSON.stringify(v)}`, { where });
    return v;
  };
  const ffn = new Map<string, FfnThresholds>();
  for (const [k, v] of Object.entries(raw.ffn ?? {})) {
    if (!Array.isArray(v.chess)) throw new CheckpointError(`ffn.${k}.chess must be an array`, { where });
    ffn.set(k, { chess: Float32Array.from(v.chess.map((x, i) => num(x, `ffn.${k}.chess[${i}]`))), cats: num(v.cats, `ffn.${k}.cats`) });
  }
  const attention = new Map<string, AttentionThresholds>();
  for (const [k, v] of Object.entries(raw.attention ?? {})) attention.set(k, { q: num(v.q, `attention.${k}.q`), o: num(v.o, `attention.${k}.o`) });
  return { format: THRESHOLDS_FORMAT, sparsity: num(raw.sparsity, 'sparsity'), tokens: num(raw.tokens, 'tokens'), checkpointStep: num(raw.checkpointStep, 'checkpointStep'), ffn, attention };
}

export function writeThresholds(checkpointDir: string, t: SparsityThresholds): string {
  const file = path.join(checkpointDir, THRESHOLDS_FILE);
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, thresholdsToJson(t));
  fs.renameSync(tmp, file);
  return file;
}

export function readThresholds(checkpointDir: string): SparsityThresholds {
  const file = path.join(checkpointDir, THRESHOLDS_FILE);
  if (!fs.existsSync(file)) {
    throw new CheckpointError(`no ${THRESHOLDS_FILE} beside the checkpoint`, { where: checkpointDir, hint: `run \`moecat calibrate --method chess --checkpoint ${checkpointDir} --data <prepared dir>\` first` });
  }
  return thresholdsFromJson(fs.readFileSync(file, 'utf8'), file);
}

/** Checks that thresholds cover every FFN and attention block of a model with the given widths. */
export function checkCoverage(t: SparsityThresholds, ffnHidden: Map<string, number>, attention: string[], where: string): void {
  for (const [k, h] of ffnHidden) {
    const f = t.ffn.get(k);
    if (!f) throw new CheckpointError(`thresholds miss FFN ${k}`, { where, hint: 'recalibrate for this checkpoint' });
    if (f.chess.length !== h) throw new CheckpointError(`FFN ${k} has ${h} channels, thresholds have ${f.chess.length}`, { where, hint: 'recalibrate for this checkpoint' });
  }
  for (const k of attention) if (!t.attention.has(k)) throw new CheckpointError(`thresholds miss attention block ${k}`, { where, hint: 'recalibrate for this checkpoint' });
}

/**
 * Supervised fine-tuning data (DESIGN.md sections 7 and 10): OpenAI-style JSONL conversations
 * `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}]}` rendered with the
 * tokenizer's chat template, loss only on assistant tokens, packed into fixed-length rows
 * without ever splitting a conversation, with a seeded validation split.
 *
 * Sampling is a pure function of (seed, step, mb), like the pre-training loader: epoch e
 * visits the training conversations in a seeded shuffle, packs them next-fit into rows, and a
 * step's rows are the next `microBatchSize · microBatches` rows of that sequence. The loader
 * state is the next step plus fingerprints, so resume is exact.
 *
 * Targets are next tokens: a row holds `seqLen + 1` token slots, inputs are slots 0..L-1,
 * targets slots 1..L, and the loss mask at position i is the assistant mask of slot i+1 (the
 * token being predicted). Padding is `<|pad|>` with mask 0; segment ids keep attention inside
 * each conversation.
 */
import * as fs from 'fs';
import * as path from 'path';
import { ConfigError, DataError } from '../core/errors';
import { RngStream } from '../core/rng';
import { sha256Hex } from '../core/hash';
import { resolveCheckpoint } from '../core/checkpoint';
import { ChatMessage, Tokenizer } from './tokenizer';

export const SKIP_REASONS = ['invalid_json', 'no_messages', 'missing_role', 'unknown_role', 'empty_content', 'no_assistant', 'too_long'] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

/** One rendered conversation: token ids and the assistant mask (1 where the loss applies). */
export interface SftExample {
  /** 1-based line in the JSONL file. */
  line: number;
  ids: Int32Array;
  mask: Uint8Array;
}

export interface SftLoadReport {
  file: string;
  lines: number;
  kept: number;
  skipped: Record<SkipReason, number>;
  /** The first few skipped lines with their reason (for error messages and logs). */
  examples: { line: number; reason: SkipReason; detail: string }[];
}

const ROLES = new Set(['system', 'user', 'assistant']);

/** Checks one parsed JSONL value; returns the messages or why the conversation is skipped. */
export function checkConversation(v: unknown): { messages: ChatMessage[] } | { reason: SkipReason; detail: string } {
  const msgs = (v as { messages?: unknown } | null)?.messages;
  if (typeof v !== 'object' || v === null || !Array.isArray(msgs) || msgs.length === 0) return { reason: 'no_messages', detail: 'no non-empty "messages" array' };
  const out: ChatMessage[] = [];
  for (const [i, m] of msgs.entries()) {
    const role = (m as { role?: unknown } | null)?.role;
    const content = (m as { content?: unknown } | null)?.content;
    if (typeof m !== 'object' || m === null || role === undefined || role === null) return { reason: 'missing_role', detail: `messages[${i}] has no role` };
    if (typeof role !== 'string' || !ROLES.has(role)) return { reason: 'unknown_role', detail: `messages[${i}].role ${JSON.stringify(role)} is not system, user or assistant` };
    if (typeof content !== 'string' || content.trim().length === 0) return { reason: 'empty_content', detail: `messages[${i}].content is empty or not a string` };
    out.push({ role: role as ChatMessage['role'], content });
  }
  if (!out.some((m) => m.role === 'assistant')) return { reason: 'no_assistant', detail: 'no assistant turn to train on' };
  return { messages: out };
}

/**
 * Reads and renders a JSONL file. A conversation must fit one row (`seqLen + 1` tokens) since
 * packing never splits one. Bad lines are skipped and counted; all bad is refused.
 */
export function loadSftFile(file: string, tok: Tokenizer, seqLen: number): { examples: SftExample[]; report: SftLoadReport; text: string } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new DataError(`cannot read SFT conversations: ${(e as Error).message}`, { where: file });
  }
  const skipped = Object.fromEntries(SKIP_REASONS.map((r) => [r, 0])) as Record<SkipReason, number>;
  const report: SftLoadReport = { file, lines: 0, kept: 0, skipped, examples: [] };
  const examples: SftExample[] = [];
  const skip = (line: number, reason: SkipReason, detail: string) => {
    skipped[reason]++;
    if (report.examples.length < 5) report.examples.push({ line, reason, detail });
  };
  text.split('\n').forEach((raw, i) => {
    if (!raw.trim()) return;
    report.lines++;
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch (e) {
      skip(i + 1, 'invalid_json', (e as Error).message);
      return;
    }
    const c = checkConversation(v);
    if ('reason' in c) {
      skip(i + 1, c.reason, c.detail);
      return;
    }
    const r = tok.renderChat(c.messages);
    if (r.ids.length > seqLen + 1) {
      skip(i + 1, 'too_long', `${r.ids.length} tokens exceed one row of ${seqLen + 1}`);
      return;
    }
    examples.push({ line: i + 1, ids: Int32Array.from(r.ids), mask: Uint8Array.from(r.assistantMask) });
  });
  report.kept = examples.length;
  if (examples.length === 0) {
    const why = SKIP_REASONS.filter((r) => skipped[r] > 0).map((r) => `${skipped[r]} ${r}`).join(', ');
    const first = report.examples[0];
    throw new DataError(`no usable conversation among ${report.lines} lines (${why || 'file is empty'})${first ? `; e.g. line ${first.line}: ${first.detail}` : ''}`, {
      where: file,
      hint: 'each line needs {"messages": [{"role": "user"|"assistant"|"system", "content": "..."}]} with an assistant turn, within data.seqLen tokens',
    });
  }
  return { examples, report, text };
}

/** Seeded split of example indices: `valFraction` of them (at least one when > 0) held out. */
export function splitValidation(n: number, seed: number, valFraction: number): { train: number[]; val: number[] } {
  const order = RngStream.of(seed, 'sft:split').shuffle(Array.from({ length: n }, (_, i) => i));
  let nVal = valFraction > 0 ? Math.max(1, Math.round(n * valFraction)) : 0;
  if (nVal >= n) nVal = n - 1;
  const byIndex = (a: number, b: number) => a - b;
  return { val: order.slice(0, nVal).sort(byIndex), train: order.slice(nVal).sort(byIndex) };
}

/** Next-fit packing: conversations in the given order fill rows of `window` tokens whole. */
export function packRows(order: number[], lengths: ArrayLike<number>, window: number): number[][] {
  const rows: number[][] = [];
  let cur: number[] = [];
  let used = 0;
  for (const i of order) {
    const n = lengths[i];
    if (n > window) throw new DataError(`conversation ${i} has ${n} tokens, more than a row of ${window}`, { where: 'sft packing' });
    if (used + n > window && cur.length > 0) {
      rows.push(cur);
      cur = [];
      used = 0;
    }
    cur.push(i);
    used += n;
  }
  if (cur.length > 0) rows.push(cur);
  return rows;
}

export interface SftBatch {
  inputs: Int32Array;
  targets: Int32Array;
  lossMask: Float32Array;
  segmentIds: Int32Array;
  batchSize: number;
  seqLen: number;
  stage: string;
}

/** Lays packed rows out as a batch (shifted targets, pad with mask 0, one segment per conversation). */
export function rowsToBatch(rows: number[][], examples: SftExample[], seqLen: number, pad: number, stage = 'sft'): SftBatch {
  const B = rows.length;
  const L = seqLen;
  const inputs = new Int32Array(B * L);
  const targets = new Int32Array(B * L);
  const lossMask = new Float32Array(B * L);
  const segmentIds = new Int32Array(B * L);
  const buf = new Int32Array(L + 1);
  const msk = new Uint8Array(L + 1);
  const seg = new Int32Array(L + 1);
  rows.forEach((row, b) => {
    buf.fill(pad);
    msk.fill(0);
    seg.fill(row.length); // padding: its own segment, after the conversations
    let o = 0;
    row.forEach((ei, s) => {
      const ex = examples[ei];
      buf.set(ex.ids, o);
      msk.set(ex.mask, o);
      seg.fill(s, o, o + ex.ids.length);
      o += ex.ids.length;
    });
    inputs.set(buf.subarray(0, L), b * L);
    targets.set(buf.subarray(1), b * L);
    for (let i = 0; i < L; i++) lossMask[b * L + i] = msk[i + 1];
    segmentIds.set(seg.subarray(0, L), b * L);
  });
  return { inputs, targets, lossMask, segmentIds, batchSize: B, seqLen: L, stage };
}

export interface SftLoaderOptions {
  file: string;
  tokenizer: Tokenizer;
  tokenizerJson: string;
  seed: number;
  seqLen: number;
  microBatchSize: number;
  microBatches: number;
  valFraction: number;
}

export interface SftLoaderState {
  kind: 'sft';
  version: 1;
  seed: number;
  /** Next step to read. */
  step: number;
  epoch: number;
  /** Fingerprints that make resuming on different conversations or batch shape an error. */
  data: string;
  layout: string;
}

/** Epochs whose packing is kept in memory (a step touches at most two). */
const EPOCH_CACHE = 4;

export class SftLoader {
  readonly examples: SftExample[];
  readonly report: SftLoadReport;
  readonly train: number[];
  readonly val: number[];
  private readonly opts: SftLoaderOptions;
  private readonly rowsPerStep: number;
  private readonly dataHash: string;
  private readonly layoutHash: string;
  private readonly lengths: Int32Array;
  /** Rows before each epoch (cumulative), grown on demand. */
  private readonly epochStart: number[] = [0];
  private readonly epochs = new Map<number, number[][]>();
  private nextStep = 0;

  constructor(o: SftLoaderOptions) {
    for (const k of ['microBatchSize', 'microBatches', 'seqLen'] as const) {
      if (!Number.isInteger(o[k]) || o[k] <= 0) throw new ConfigError(`must be a positive integer, got ${o[k]}`, { where: `data.${k}` });
    }
    this.opts = o;
    const { examples, report, text } = loadSftFile(o.file, o.tokenizer, o.seqLen);
    this.examples = examples;
    this.report = report;
    const split = splitValidation(examples.length, o.seed, o.valFraction);
    this.train = split.train;
    this.val = split.val;
    this.lengths = Int32Array.from(examples.map((e) => e.ids.length));
    this.rowsPerStep = o.microBatchSize * o.microBatches;
    this.dataHash = sha256Hex(sha256Hex(text) + o.tokenizer.hash()).slice(0, 16);
    this.layoutHash = sha256Hex(JSON.stringify([o.seqLen, this.rowsPerStep, o.valFraction])).slice(0, 16);
  }

  /** The packed rows of epoch e: a seeded shuffle of the training conversations, next-fit. */
  epochRows(e: number): number[][] {
    let rows = this.epochs.get(e);
    if (!rows) {
      const order = RngStream.of(this.opts.seed, 'sft:epoch', e).shuffle([...this.train]);
      rows = packRows(order, this.lengths, this.opts.seqLen + 1);
      if (this.epochs.size >= EPOCH_CACHE) this.epochs.delete(this.epochs.keys().next().value as number);
      this.epochs.set(e, rows);
    }
    return rows;
  }

  /** Epoch and row within it of global row g. */
  private locate(g: number): { epoch: number; row: number } {
    while (this.epochStart[this.epochStart.length - 1] <= g) {
      const e = this.epochStart.length - 1;
      this.epochStart.push(this.epochStart[e] + this.epochRows(e).length);
    }
    let e = 0;
    while (this.epochStart[e + 1] <= g) e++;
    return { epoch: e, row: g - this.epochStart[e] };
  }

  /** Conversation indices of each row of microbatch `mb` at `step` (for tests and accounting). */
  rowPlan(step: number, mb: number): number[][] {
    if (!Number.isInteger(step) || step < 0) throw new ConfigError(`step must be a non-negative integer, got ${step}`, { where: 'microbatch' });
    if (!Number.isInteger(mb) || mb < 0 || mb >= this.opts.microBatches) throw new ConfigError(`microbatch ${mb} is outside 0..${this.opts.microBatches - 1}`, { where: 'microbatch' });
    const B = this.opts.microBatchSize;
    const rows: number[][] = [];
    for (let b = 0; b < B; b++) {
      const { epoch, row } = this.locate(step * this.rowsPerStep + mb * B + b);
      rows.push(this.epochRows(epoch)[row]);
    }
    return rows;
  }

  microbatch(step: number, mb: number): SftBatch {
    const rows = this.rowPlan(step, mb);
    this.nextStep = Math.max(this.nextStep, step + 1);
    return rowsToBatch(rows, this.examples, this.opts.seqLen, this.opts.tokenizer.special.pad);
  }

  /** The held-out conversations packed in file order, `microBatchSize` rows per batch. */
  validationBatches(): SftBatch[] {
    const rows = packRows(this.val, this.lengths, this.opts.seqLen + 1);
    const out: SftBatch[] = [];
    for (let i = 0; i < rows.length; i += this.opts.microBatchSize) {
      out.push(rowsToBatch(rows.slice(i, i + this.opts.microBatchSize), this.examples, this.opts.seqLen, this.opts.tokenizer.special.pad, 'sft-val'));
    }
    return out;
  }

  state(): SftLoaderState {
    const epoch = this.locate(this.nextStep * this.rowsPerStep).epoch;
    return { kind: 'sft', version: 1, seed: this.opts.seed, step: this.nextStep, epoch, data: this.dataHash, layout: this.layoutHash };
  }

  loadState(s: SftLoaderState): void {
    if (!s || s.kind !== 'sft' || s.version !== 1) throw new DataError('loader state is not an SFT loader state (version 1)', { where: 'state.json data' });
    if (s.data !== this.dataHash) throw new DataError('loader state was taken on different conversations or another tokenizer', { where: this.opts.file, hint: 'resume with the same SFT file' });
    if (s.layout !== this.layoutHash || s.seed !== this.opts.seed) {
      throw new ConfigError('loader state was taken with a different seed, sequence length, batch or validation split', { where: 'data', hint: "resume with the run's original config" });
    }
    this.nextStep = s.step;
  }

  tokenizerJson(): string {
    return this.opts.tokenizerJson;
  }

  describe(): string {
    const r = this.report;
    const sk = SKIP_REASONS.filter((k) => r.skipped[k] > 0).map((k) => `${r.skipped[k]} ${k}`).join(', ');
    return `sft ${this.opts.file}: ${r.kept}/${r.lines} conversations (${this.train.length} train, ${this.val.length} val; skipped ${sk || 'none'}), ${this.epochRows(0).length} rows/epoch`;
  }
}

/**
 * The tokenizer an SFT run renders with: `data.sft.tokenizer`, else the prepared data's, else
 * the `initFrom` parent checkpoint's (so the chat ids match the model's vocabulary).
 */
export function sftTokenizerPath(o: { tokenizer?: string; dataDir?: string; initFrom?: string }): string {
  if (o.tokenizer) return o.tokenizer;
  if (o.dataDir) return path.join(o.dataDir, 'tokenizer.json');
  if (o.initFrom) return path.join(resolveCheckpoint(o.initFrom), 'tokenizer.json');
  throw new ConfigError('an SFT run needs a tokenizer', { where: 'data.sft.tokenizer', hint: 'set data.sft.tokenizer, data.dir (a prepared corpus), or initFrom (a checkpoint with tokenizer.json)' });
}

export function openSftLoader(o: Omit<SftLoaderOptions, 'tokenizer' | 'tokenizerJson'> & { tokenizerPath: string; modelVocab: number }, saved?: unknown): SftLoader {
  const tokenizer = Tokenizer.load(o.tokenizerPath);
  if (tokenizer.vocabSize > o.modelVocab) {
    throw new ConfigError(`the SFT tokenizer ${o.tokenizerPath} has ${tokenizer.vocabSize} tokens but model.vocabSize is ${o.modelVocab}`, { where: 'model.vocabSize', hint: `set model.vocabSize to at least ${tokenizer.vocabSize}` });
  }
  const loader = new SftLoader({ ...o, tokenizer, tokenizerJson: tokenizer.toJSON() });
  if (saved !== undefined) loader.loadState(saved as SftLoaderState);
  return loader;
}

/**
 * The serving engine: continuous batching over a KV-cached model (DESIGN.md section 8).
 *
 * One engine step (a "tick", run from setImmediate so HTTP I/O is served between steps):
 *   1. cancelled requests leave the queue and the batch, and their caches are disposed;
 *   2. waiting requests join (batcher.ts policy): their prompts are prefilled (in one batched
 *      pass when the steps offer `prefillBatch`) and each samples its first token;
 *   3. every other running sequence decodes one token in one batched step (engineStep.ts).
 * A sequence leaves the batch when it hits max tokens, a stop id, a stop string or the context
 * end; its cache tensors are disposed at once (and the steps' `release` hook is told, so state
 * that replacement steps keep beside the caches goes too). Sampling is seeded per (seed,
 * position), so a request's text does not depend on what else is batched with it.
 */
import * as crypto from 'crypto';
import { MoecatError } from '../core/errors';
import { ServingModel } from './loadModel';
import { Batcher, Schedulable } from './batcher';
import { cacheBytes, decodeBatch, disposeCaches, LayerCaches, prefill, StepResult } from './engineStep';
import { hostEngineSteps } from './hostSteps';
import { TextStream } from './engineText';
import { logNormalizer, sampleToken, SamplingParams, topLogprobs } from './sampling';
import { Counter, Gauge, Histogram, Registry } from './metrics';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** What the engine needs from a tokenizer (data/tokenizer.ts's Tokenizer fits). */
export interface EngineTokenizer {
  readonly vocabSize: number;
  readonly special: { readonly bos: number; readonly eos: number; readonly end: number };
  encode(text: string): number[];
  /** With skipSpecial, special tokens (roles, bos, ...) produce no text. */
  decode(ids: number[], opts?: { skipSpecial?: boolean }): string;
  renderChat(messages: ChatMessage[], opts: { addGenerationPrompt: boolean }): { ids: number[] };
}

export interface GenerationRequest {
  promptIds: number[];
  maxTokens: number;
  sampling: SamplingParams;
  /** Token ids that end generation (not part of the text). */
  stopIds?: number[];
  /** Strings that end generation (cut from the text). */
  stopStrings?: string[];
  /** When set, each token carries its logprob and this many most likely alternatives. */
  topLogprobs?: number;
}

export interface TokenInfo {
  id: number;
  logprob: number;
  top?: { id: number; logprob: number }[];
}

export type FinishReason = 'stop' | 'length' | 'cancelled';

export interface GenerationResult {
  text: string;
  /** Generated tokens that are part of the output (a stop id is not). */
  tokens: TokenInfo[];
  finishReason: FinishReason;
  promptTokens: number;
  /** Every sampled token, a terminating stop id included. */
  completionTokens: number;
  /** Seconds from submission to the first sampled token. */
  timeToFirstToken: number;
  ffnExpertsPerToken: number;
}

export interface GenerationCallbacks {
  /** Text that became final; `token` is the token that produced it (absent for the end flush). */
  onDelta?: (delta: string, token?: TokenInfo) => void;
}

export interface RequestHandle {
  readonly id: string;
  readonly result: Promise<GenerationResult>;
  cancel(): void;
}

/**
 * Replacement forward passes (e.g. CHESS sparse decode, inference/sparse; A2ATS retrieval
 * attention, inference/kv/engineSteps.ts). The optional hooks let steps that keep per-sequence
 * state beside the caches they return free it and report it.
 */
export interface EngineStepHooks {
  prefill: typeof prefill;
  /** Prefills several prompts in one pass; result i equals prefill(prompts[i]) (optional). */
  prefillBatch?(m: ServingModel, prompts: number[][]): StepResult[];
  decodeBatch: typeof decodeBatch;
  /** Called each time the engine disposes caches these steps returned: after a decode step (the old ones), and on finish, cancel or failure. */
  release?(caches: LayerCaches): void;
  /** Bytes one sequence holds, for the KV-cache gauge (default: its cache tensors' bytes). */
  cacheBytes?(caches: LayerCaches): number;
  /** Adds the steps' own metrics to the engine's registry (served on /metrics). */
  registerMetrics?(r: Registry): void;
  /** Called when the engine has had no work for a while (idleReleaseMs): return memory held for the last load. */
  idle?(m: ServingModel): void;
}

export interface EngineOptions {
  maxBatch: number;
  maxQueue: number;
  prefillTokens: number;
  /** Replacement forward passes; default the batched host decode path (hostSteps.ts). */
  steps?: EngineStepHooks;
  /** Milliseconds without work after which the steps' `idle` hook runs (default 1000). */
  idleReleaseMs: number;
}

/** A request the engine cannot take (bad ids, queue full, engine closed). */
export class EngineError extends MoecatError {
  constructor(code: 'E_REQUEST' | 'E_OVERLOADED' | 'E_CLOSED', message: string, opts: { where?: string; hint?: string } = {}) {
    super(code, message, opts);
  }
}

class Sequence implements Schedulable {
  cancelled = false;
  caches: LayerCaches | undefined;
  past = 0;
  lastToken = -1;
  sampled = 0;
  readonly tokens: TokenInfo[] = [];
  readonly text: TextStream;
  firstTokenAt = 0;
  ffnRows = 0;
  tokenLayers = 0;
  done = false;
  constructor(
    readonly id: string,
    readonly req: GenerationRequest,
    readonly cb: GenerationCallbacks,
    readonly submittedAt: number,
    readonly settle: (r: GenerationResult | Error) => void,
    decode: (ids: number[]) => string,
  ) {
    this.text = new TextStream(decode, req.stopStrings ?? []);
  }
  get promptLength(): number {
    return this.req.promptIds.length;
  }
}

const now = () => performance.now() / 1000;

export class Engine {
  readonly metrics = new Registry();
  private readonly batcher: Batcher<Sequence>;
  private scheduled = false;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  private nextId = 0;
  private readonly recentSteps: { at: number; tokens: number; seconds: number }[] = [];
  private readonly m: {
    requests: Counter;
    promptTokens: Counter;
    generationTokens: Counter;
    ttft: Histogram;
    stepSeconds: Histogram;
    ffnRows: Counter;
    tokenLayers: Counter;
    kvBytes: Gauge;
  };

  private readonly steps: EngineStepHooks;
  private readonly idleReleaseMs: number;
  private idleTimer: NodeJS.Timeout | null = null;

  constructor(readonly model: ServingModel, readonly tokenizer: EngineTokenizer, opts: Partial<EngineOptions> = {}) {
    const o: EngineOptions = { maxBatch: 8, maxQueue: 256, prefillTokens: 512, idleReleaseMs: 1000, ...opts };
    this.idleReleaseMs = o.idleReleaseMs;
    this.steps = o.steps ?? hostEngineSteps();
    this.batcher = new Batcher<Sequence>(o);
    const r = this.metrics;
    const cap = o.maxBatch * model.config.maxSeqLen;
    this.m = {
      requests: r.counter('moecat_requests_total', 'Generation requests finished, by finish reason.'),
      promptTokens: r.counter('moecat_prompt_tokens_total', 'Prompt tokens prefilled.'),
      generationTokens: r.counter('moecat_generation_tokens_total', 'Tokens sampled (all requests).'),
      ttft: r.histogram('moecat_time_to_first_token_seconds', 'Time from submission to the first sampled token.', [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]),
      stepSeconds: r.histogram('moecat_decode_step_seconds', 'Wall time of one batched decode step.', [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]),
      ffnRows: r.counter('moecat_ffn_expert_rows_total', 'FFN-expert evaluations (token x layer x expert actually run).'),
      tokenLayers: r.counter('moecat_moe_token_layers_total', 'Tokens routed through MoE layers (token x layer).'),
      kvBytes: r.gauge('moecat_kv_cache_bytes', 'Bytes held by the KV caches of running sequences.', () => this.kvCacheBytes()),
    };
    r.gauge('moecat_decode_tokens_per_second', 'Decode throughput over the last 10 s of decode steps (tokens / step time).', () => this.recentTokensPerSecond());
    r.gauge('moecat_ffn_experts_per_token', 'Mean FFN experts run per token per MoE layer since start (zero experts run none).', () => {
      const t = this.m.tokenLayers.get();
      return t ? this.m.ffnRows.get() / t : 0;
    });
    r.gauge('moecat_kv_cache_tokens', 'Positions held in the KV caches of running sequences.', () => this.kvCacheTokens());
    r.gauge('moecat_kv_cache_usage_ratio', 'KV cache positions in use over max batch x context length.', () => this.kvCacheTokens() / cap);
    r.gauge('moecat_requests_running', 'Sequences in the decode batch.', () => this.batcher.running.length);
    r.gauge('moecat_requests_waiting', 'Requests queued for the batch.', () => this.batcher.waiting.length);
    r.gauge('moecat_max_batch', 'Most sequences decoded per step.', () => o.maxBatch);
    this.steps.registerMetrics?.(r);
  }

  get running(): number {
    return this.batcher.running.length;
  }

  get waiting(): number {
    return this.batcher.waiting.length;
  }

  kvCacheTokens(): number {
    return this.batcher.running.reduce((n, s) => n + s.past, 0);
  }

  kvCacheBytes(): number {
    const bytes = this.steps.cacheBytes ?? cacheBytes;
    return this.batcher.running.reduce((n, s) => n + (s.caches ? bytes(s.caches) : 0), 0);
  }

  /** Queues a request; it joins the running batch at the next engine step. */
  submit(req: GenerationRequest, cb: GenerationCallbacks = {}): RequestHandle {
    if (this.closed) throw new EngineError('E_CLOSED', 'the engine is shut down');
    this.validate(req);
    let settle!: (r: GenerationResult | Error) => void;
    const result = new Promise<GenerationResult>((resolve, reject) => {
      settle = (r) => (r instanceof Error ? reject(r) : resolve(r));
    });
    const id = `${++this.nextId}-${crypto.randomBytes(6).toString('hex')}`;
    const seq = new Sequence(id, req, cb, now(), settle, (ids) => this.tokenizer.decode(ids, { skipSpecial: true }));
    if (!this.batcher.enqueue(seq)) {
      throw new EngineError('E_OVERLOADED', `the request queue is full (${this.batcher.opts.maxQueue} waiting)`, { hint: 'retry later' });
    }
    this.schedule();
    return {
      id,
      result,
      cancel: () => {
        if (seq.done) return;
        seq.cancelled = true;
        this.schedule();
      },
    };
  }

  /** Resolves when no request is queued or running. */
  whenIdle(): Promise<void> {
    if (this.batcher.idle && !this.scheduled) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Refuses new requests, cancels the rest and waits until every cache is freed. */
  close(): Promise<void> {
    this.closed = true;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    for (const s of [...this.batcher.waiting, ...this.batcher.running]) s.cancelled = true;
    this.schedule();
    return this.whenIdle();
  }

  private validate(req: GenerationRequest): void {
    const c = this.model.config;
    const n = req.promptIds.length;
    if (n === 0) throw new EngineError('E_REQUEST', 'the prompt is empty', { where: 'prompt' });
    if (n > c.maxSeqLen) throw new EngineError('E_REQUEST', `the prompt has ${n} tokens; the context is ${c.maxSeqLen}`, { where: 'prompt' });
    for (const id of req.promptIds) {
      if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) throw new EngineError('E_REQUEST', `token id ${id} is outside the vocabulary [0, ${c.vocabSize})`, { where: 'prompt' });
    }
    if (!Number.isInteger(req.maxTokens) || req.maxTokens < 1) throw new EngineError('E_REQUEST', 'maxTokens must be a positive integer', { where: 'max_tokens' });
  }

  private schedule(): void {
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.tick());
  }

  private tick(): void {
    try {
      this.step();
    } catch (e) {
      // A bug must not take the server down: fail the running requests and keep serving.
      this.fail(this.batcher.running, e);
      this.batcher.retire([...this.batcher.running]);
    } finally {
      this.scheduled = false;
      if (!this.batcher.idle) this.schedule();
      else this.wakeIdle();
    }
  }

  private step(): void {
    for (const s of this.batcher.dropCancelledWaiting()) this.finish(s, 'cancelled');
    const gone = this.batcher.running.filter((s) => s.cancelled);
    for (const s of gone) this.finish(s, 'cancelled');
    this.batcher.retire(gone);

    const joined = new Set<Sequence>();
    const admitted: Sequence[] = [];
    for (const s of this.batcher.admit()) {
      if (s.cancelled) this.finish(s, 'cancelled');
      else admitted.push(s);
    }
    // Prompts that join together prefill in one batched pass when the steps can (weights read
    // once for all of them); each result is what prefilling that prompt alone gives.
    const asError = (e: unknown) => (e instanceof Error ? e : new Error(String(e)));
    let prefilled: (StepResult | Error)[];
    if (this.steps.prefillBatch && admitted.length > 1) {
      try {
        prefilled = this.steps.prefillBatch(this.model, admitted.map((s) => s.req.promptIds));
      } catch (e) {
        prefilled = admitted.map(() => asError(e));
      }
    } else {
      prefilled = admitted.map((s) => {
        try {
          return this.steps.prefill(this.model, s.req.promptIds);
        } catch (e) {
          return asError(e);
        }
      });
    }
    admitted.forEach((s, i) => {
      const r = prefilled[i];
      if (r instanceof Error) return this.fail([s], r);
      this.m.promptTokens.inc(undefined, s.promptLength);
      this.accept(s, r, 0, s.promptLength);
      if (!s.done) {
        this.batcher.running.push(s);
        joined.add(s);
      }
    });

    const batch = this.batcher.running.filter((s) => !joined.has(s) && !s.done);
    if (batch.length) {
      const t0 = now();
      let r: StepResult;
      try {
        r = this.steps.decodeBatch(this.model, batch.map((s) => s.lastToken), batch.map((s) => s.past), batch.map((s) => s.caches!));
      } catch (e) {
        this.fail(batch, e);
        this.batcher.retire(batch);
        return;
      }
      const logits = r.logits.dataSync() as Float32Array;
      const V = this.model.config.vocabSize;
      r.logits.dispose();
      const rows = r.caches;
      batch.forEach((s, b) => {
        this.dispose(s.caches);
        s.caches = rows[b];
        s.past += 1;
        s.ffnRows += r.rowFfnRows[b];
        s.tokenLayers += this.model.config.nLayers;
        this.sample(s, logits.subarray(b * V, (b + 1) * V));
      });
      this.m.ffnRows.inc(undefined, r.ffnRows);
      this.m.tokenLayers.inc(undefined, r.tokenLayers);
      const seconds = now() - t0;
      this.m.stepSeconds.observe(seconds);
      this.recentSteps.push({ at: t0, tokens: batch.length, seconds });
      if (this.recentSteps.length > 4096) this.recentSteps.splice(0, 2048);
    }
    this.batcher.retire(this.batcher.running.filter((s) => s.done));
  }

  /** Takes a prefill result: stores the caches and samples the first token. */
  private accept(s: Sequence, r: StepResult, past: number, fed: number): void {
    const logits = r.logits.dataSync() as Float32Array;
    r.logits.dispose();
    s.caches = r.caches[0];
    s.past = past + fed;
    s.ffnRows += r.ffnRows;
    s.tokenLayers += r.tokenLayers;
    this.m.ffnRows.inc(undefined, r.ffnRows);
    this.m.tokenLayers.inc(undefined, r.tokenLayers);
    this.sample(s, logits);
  }

  /** Samples the next token of s from its logits row and applies every stop rule. */
  private sample(s: Sequence, row: Float32Array): void {
    if (s.cancelled) return this.finish(s, 'cancelled');
    const { id, logprob } = sampleToken(row, s.req.sampling, s.past);
    s.sampled++;
    s.lastToken = id;
    this.m.generationTokens.inc();
    if (s.sampled === 1) {
      s.firstTokenAt = now();
      this.m.ttft.observe(s.firstTokenAt - s.submittedAt);
    }
    if (s.req.stopIds?.includes(id)) return this.finish(s, 'stop');
    const info: TokenInfo = { id, logprob };
    if (s.req.topLogprobs !== undefined) info.top = topLogprobs(row, s.req.topLogprobs, logNormalizer(row));
    s.tokens.push(info);
    const { delta, stop } = s.text.push(id);
    this.emit(s, delta, info);
    if (stop) return this.finish(s, 'stop');
    if (s.sampled >= s.req.maxTokens) return this.finish(s, 'length');
    // The next step would feed this token at position s.past: it must fit in the context.
    if (s.past + 1 > this.model.config.maxSeqLen) return this.finish(s, 'length');
  }

  private emit(s: Sequence, delta: string, token?: TokenInfo): void {
    if (!s.cb.onDelta || s.cancelled) return;
    try {
      s.cb.onDelta(delta, token);
    } catch {
      // A consumer that throws (e.g. a closed socket) has gone away: drop its request.
      s.cancelled = true;
    }
  }

  private finish(s: Sequence, reason: FinishReason): void {
    if (s.done) return;
    s.done = true;
    this.dispose(s.caches);
    s.caches = undefined;
    this.m.requests.inc({ finish_reason: reason });
    if (reason !== 'cancelled') {
      const rest = s.text.finish();
      if (rest) this.emit(s, rest);
    }
    s.settle({
      text: s.text.value,
      tokens: s.tokens,
      finishReason: reason,
      promptTokens: s.promptLength,
      completionTokens: s.sampled,
      timeToFirstToken: s.firstTokenAt ? s.firstTokenAt - s.submittedAt : 0,
      ffnExpertsPerToken: s.tokenLayers ? s.ffnRows / s.tokenLayers : 0,
    });
  }

  private fail(seqs: Sequence[], e: unknown): void {
    for (const s of seqs) {
      if (s.done) continue;
      s.done = true;
      this.dispose(s.caches);
      s.caches = undefined;
      this.m.requests.inc({ finish_reason: 'error' });
      s.settle(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** Disposes a sequence's caches and tells the steps (their per-sequence state goes too). */
  private dispose(c: LayerCaches | undefined): void {
    if (!c) return;
    disposeCaches(c);
    this.steps.release?.(c);
  }

  private recentTokensPerSecond(): number {
    const cutoff = now() - 10;
    while (this.recentSteps.length && this.recentSteps[0].at < cutoff) this.recentSteps.shift();
    let tokens = 0;
    let seconds = 0;
    for (const st of this.recentSteps) {
      tokens += st.tokens;
      seconds += st.seconds;
    }
    return seconds > 0 ? tokens / seconds : 0;
  }

  private wakeIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
    if (this.steps.idle && !this.idleTimer && !this.closed) {
      this.idleTimer = setTimeout(() => {
        this.idleTimer = null;
        this.releaseIdleMemory();
      }, this.idleReleaseMs);
      this.idleTimer.unref();
    }
  }

  /**
   * Returns memory held for the last load (the steps' `idle` hook: the host path drops its
   * scratch and hands freed C-heap pages back); runs by itself idleReleaseMs after the engine
   * goes idle, and does nothing while requests run or once the engine is closed.
   */
  releaseIdleMemory(): void {
    if (!this.batcher.idle || this.scheduled || this.closed) return;
    try {
      this.steps.idle?.(this.model);
    } catch {
      // Returning memory is an optimisation: a failure leaves it held, never stops the server.
    }
  }
}

/**
 * Continuous-batching bookkeeping (no tensors here): a FIFO of waiting requests and the set of
 * running sequences. Between decode steps the engine asks `admit()` which waiting requests join
 * the batch: up to `maxBatch` running sequences, and at most `prefillTokens` prompt tokens per
 * step (at least one request) so that a long prompt delays the running streams by one prefill,
 * not by many. Cancelled requests leave the queue at once and the batch at the next step.
 */

export interface BatcherOptions {
  maxBatch: number;
  /** Waiting requests beyond this are refused (the server answers 503). */
  maxQueue: number;
  /** Prompt tokens prefilled per engine step (at least one request is always admitted). */
  prefillTokens: number;
}

export interface Schedulable {
  readonly promptLength: number;
  cancelled: boolean;
}

export class Batcher<T extends Schedulable> {
  readonly waiting: T[] = [];
  readonly running: T[] = [];

  constructor(readonly opts: BatcherOptions) {
    if (!(opts.maxBatch >= 1)) throw new Error('maxBatch must be at least 1');
  }

  /** Queues a request; false when the queue is full. */
  enqueue(r: T): boolean {
    if (this.waiting.length >= this.opts.maxQueue) return false;
    this.waiting.push(r);
    return true;
  }

  /** Drops cancelled requests from the queue; returns them (the caller settles them). */
  dropCancelledWaiting(): T[] {
    const gone = this.waiting.filter((r) => r.cancelled);
    if (gone.length) this.waiting.splice(0, this.waiting.length, ...this.waiting.filter((r) => !r.cancelled));
    return gone;
  }

  /** Removes requests from the running set (finished or cancelled). */
  retire(rs: T[]): void {
    if (rs.length === 0) return;
    const out = new Set(rs);
    this.running.splice(0, this.running.length, ...this.running.filter((r) => !out.has(r)));
  }

  /** The waiting requests that join the batch before the next decode step, in FIFO order. */
  admit(): T[] {
    const joined: T[] = [];
    let budget = this.opts.prefillTokens;
    while (this.waiting.length && this.running.length + joined.length < this.opts.maxBatch) {
      const next = this.waiting[0];
      if (joined.length > 0 && next.promptLength > budget) break;
      this.waiting.shift();
      budget -= next.promptLength;
      joined.push(next);
    }
    return joined;
  }

  get idle(): boolean {
    return this.waiting.length === 0 && this.running.length === 0;
  }
}

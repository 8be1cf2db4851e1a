/**
 * Typed, user-facing errors (DESIGN.md section 10). Every error says what was wrong, where
 * (file, key path, request field) and, when known, what to do about it.
 */
export class MoecatError extends Error {
  readonly code: string;
  readonly where?: string;
  readonly hint?: string;
  constructor(code: string, message: string, opts: { where?: string; hint?: string; cause?: unknown } = {}) {
    const parts = [message];
    if (opts.where) parts.unshift(`${opts.where}:`);
    if (opts.hint) parts.push(`(${opts.hint})`);
    super(parts.join(' '));
    this.name = new.target.name;
    this.code = code;
    this.where = opts.where;
    this.hint = opts.hint;
    if (opts.cause !== undefined) (this as { cause?: unknown }).cause = opts.cause;
  }
}

/** A config file or flag is invalid; `where` is the key path (e.g. `model.moe.topK`). */
export class ConfigError extends MoecatError {
  constructor(message: string, opts: { where?: string; hint?: string; cause?: unknown } = {}) {
    super('E_CONFIG', message, opts);
  }
}

/** Input data (text, JSONL, Arrow shards, manifests) is invalid or inconsistent. */
export class DataError extends MoecatError {
  constructor(message: string, opts: { where?: string; hint?: string; cause?: unknown } = {}) {
    super('E_DATA', message, opts);
  }
}

/** A checkpoint is missing, incomplete or fails verification. */
export class CheckpointError extends MoecatError {
  constructor(message: string, opts: { where?: string; hint?: string; cause?: unknown } = {}) {
    super('E_CHECKPOINT', message, opts);
  }
}

/** A requested compute backend cannot be loaded. */
export class BackendError extends MoecatError {
  constructor(message: string, opts: { where?: string; hint?: string; cause?: unknown } = {}) {
    super('E_BACKEND', message, opts);
  }
}

/** A peer, socket or collective failed (lost rank, bad frame, wrong secret, timeout). */
export class ParallelError extends MoecatError {
  constructor(message: string, opts: { where?: string; hint?: string; cause?: unknown } = {}) {
    super('E_PARALLEL', message, opts);
  }
}

/** Training could not continue (e.g. too many loss-spike rollbacks, non-finite loss). */
export class TrainingError extends MoecatError {
  constructor(message: string, opts: { where?: string; hint?: string; cause?: unknown } = {}) {
    super('E_TRAINING', message, opts);
  }
}

/** Returns the message of any thrown value. */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

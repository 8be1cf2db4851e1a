/**
 * OpenAI response and stream-chunk objects for /v1/completions and /v1/chat/completions.
 * Completions use the legacy logprobs shape ({tokens, token_logprobs, top_logprobs,
 * text_offset}, offsets counted from the start of the completion); chat uses
 * {content: [{token, logprob, bytes, top_logprobs}]}.
 */
import { EngineTokenizer, GenerationResult, TokenInfo } from './engine';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usage(r: { promptTokens: number; completionTokens: number }): Usage {
  return { prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens, total_tokens: r.promptTokens + r.completionTokens };
}

/** Maps our finish reasons to OpenAI's (a cancelled request is never answered). */
export function finishReason(r: GenerationResult): 'stop' | 'length' {
  return r.finishReason === 'length' ? 'length' : 'stop';
}

export class ResponseBuilder {
  readonly created = Math.floor(Date.now() / 1000);
  private textOffset = 0;

  constructor(
    readonly kind: 'completion' | 'chat',
    readonly id: string,
    readonly model: string,
    private readonly tok: EngineTokenizer,
    readonly fingerprint: string,
  ) {}

  private tokenText(id: number): string {
    return this.tok.decode([id]);
  }

  /** Completion logprobs for a run of tokens (advances the running text offset). */
  completionLogprobs(tokens: TokenInfo[]) {
    const strs = tokens.map((t) => this.tokenText(t.id));
    const offsets = strs.map((s) => {
      const o = this.textOffset;
      this.textOffset += s.length;
      return o;
    });
    const withTop = tokens.some((t) => t.top && t.top.length > 0);
    return {
      tokens: strs,
      token_logprobs: tokens.map((t) => t.logprob),
      top_logprobs: withTop ? tokens.map((t) => this.topDict(t)) : null,
      text_offset: offsets,
    };
  }

  /** {token text: logprob}; tokens that decode to the same text keep the likelier entry. */
  private topDict(t: TokenInfo): Record<string, number> {
    const d: Record<string, number> = {};
    for (const a of t.top ?? []) {
      const k = this.tokenText(a.id);
      if (!(k in d)) d[k] = a.logprob;
    }
    return d;
  }

  chatLogprobs(tokens: TokenInfo[]) {
    const entry = (id: number, logprob: number) => {
      const token = this.tokenText(id);
      return { token, logprob, bytes: [...Buffer.from(token, 'utf8')] };
    };
    return {
      content: tokens.map((t) => ({ ...entry(t.id, t.logprob), top_logprobs: (t.top ?? []).map((a) => entry(a.id, a.logprob)) })),
      refusal: null,
    };
  }

  private envelope(object: string) {
    return { id: this.id, object, created: this.created, model: this.model, system_fingerprint: this.fingerprint };
  }

  /** The whole (non-streaming) response. */
  full(r: GenerationResult, logprobs: boolean) {
    if (this.kind === 'completion') {
      return {
        ...this.envelope('text_completion'),
        choices: [{ index: 0, text: r.text, logprobs: logprobs ? this.completionLogprobs(r.tokens) : null, finish_reason: finishReason(r) }],
        usage: usage(r),
      };
    }
    return {
      ...this.envelope('chat.completion'),
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: r.text, refusal: null },
          logprobs: logprobs ? this.chatLogprobs(r.tokens) : null,
          finish_reason: finishReason(r),
        },
      ],
      usage: usage(r),
    };
  }

  /** A streaming chunk carrying a text delta (and its tokens' logprobs when asked). */
  chunk(delta: string, tokens: TokenInfo[] | null, finish: 'stop' | 'length' | null, opts: { role?: boolean; includeUsage: boolean }) {
    const u = opts.includeUsage ? { usage: null } : {};
    if (this.kind === 'completion') {
      return {
        ...this.envelope('text_completion'),
        choices: [{ index: 0, text: delta, logprobs: tokens ? this.completionLogprobs(tokens) : null, finish_reason: finish }],
        ...u,
      };
    }
    const d: { role?: string; content?: string } = {};
    if (opts.role) d.role = 'assistant';
    if (delta || opts.role) d.content = delta;
    return {
      ...this.envelope('chat.completion.chunk'),
      choices: [{ index: 0, delta: d, logprobs: tokens ? this.chatLogprobs(tokens) : null, finish_reason: finish }],
      ...u,
    };
  }

  /** The last chunk when stream_options.include_usage is set: no choices, the usage. */
  usageChunk(r: GenerationResult) {
    return { ...this.envelope(this.kind === 'completion' ? 'text_completion' : 'chat.completion.chunk'), choices: [], usage: usage(r) };
  }
}

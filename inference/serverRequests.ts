/**
 * OpenAI request bodies -> engine requests. Each body is validated with zod; the first problem
 * becomes a 400 naming the field (`param`). Unknown fields are ignored, as OpenAI does for
 * fields it has retired; fields we cannot honour (n > 1, penalties, echo) are refused, not
 * silently dropped.
 *
 * Context rule: a prompt longer than the model's context is refused; `max_tokens` must lie in
 * [1, context]; generation also ends (finish_reason "length") when the context is full.
 */
import * as crypto from 'crypto';
import { z } from 'zod';
import { ApiError, badRequest } from './serverErrors';
import { ChatMessage, EngineTokenizer, GenerationRequest } from './engine';

const optNum = z.number().nullish();
const common = {
  model: z.string({ required_error: 'model is required' }).min(1),
  max_tokens: z.number().int().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  /** Not in OpenAI's API (vLLM's extension): keep the k most likely tokens; 0 or -1 = all. */
  top_k: z.number().int().min(-1).nullish(),
  n: z.number().int().nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).nullish(),
  seed: z.number().int().nullish(),
  presence_penalty: optNum,
  frequency_penalty: optNum,
  user: z.string().nullish(),
};

export const completionSchema = z.object({
  ...common,
  prompt: z.union([z.string(), z.array(z.string()), z.array(z.number().int()), z.array(z.array(z.number().int()))]),
  logprobs: z.number().int().min(0).max(5).nullish(),
  echo: z.boolean().nullish(),
});

const contentPart = z.object({ type: z.literal('text'), text: z.string() });
export const chatSchema = z.object({
  ...common,
  messages: z
    .array(
      z.object({
        role: z.enum(['system', 'developer', 'user', 'assistant']),
        content: z.union([z.string(), z.array(contentPart)]).nullable(),
        name: z.string().optional(),
      }),
    )
    .min(1),
  max_completion_tokens: z.number().int().nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
});

export interface ApiRequest {
  kind: 'completion' | 'chat';
  model: string;
  gen: GenerationRequest;
  stream: boolean;
  includeUsage: boolean;
  /** Whether the response carries logprobs. */
  logprobs: boolean;
}

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the request body must be a JSON object', null, 'invalid_type');
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const param = issue.path.reduce<string>((s, p) => (typeof p === 'number' ? `${s}[${p}]` : s ? `${s}.${p}` : String(p)), '');
  let value: unknown = body;
  for (const p of issue.path) value = (value as Record<string | number, unknown> | undefined)?.[p];
  if (value === undefined && (issue.code === 'invalid_type' || issue.code === 'invalid_union')) {
    throw badRequest(`Missing required parameter: '${param}'.`, param, 'missing_required_parameter');
  }
  const code = issue.code === 'invalid_type' || issue.code === 'invalid_union' ? 'invalid_type' : 'invalid_value';
  throw badRequest(`Invalid '${param || 'body'}': ${issue.message}`, param || null, code);
}

interface Common {
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  n?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null } | null;
  stop?: string | string[] | null;
  seed?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
}

function commonFields(b: Common, maxTokens: number | null | undefined, maxTokensParam: string, defaultMax: number, context: number) {
  if (b.n != null && b.n !== 1) throw badRequest('only n = 1 is supported; send one request per choice', 'n');
  if (b.presence_penalty) throw badRequest('presence_penalty is not supported (use 0)', 'presence_penalty');
  if (b.frequency_penalty) throw badRequest('frequency_penalty is not supported (use 0)', 'frequency_penalty');
  if (b.stream_options && !b.stream) throw badRequest('stream_options is only allowed with stream: true', 'stream_options');
  const max = maxTokens ?? defaultMax;
  if (max < 1 || max > context) throw badRequest(`${maxTokensParam} must be between 1 and the context length ${context}, got ${max}`, maxTokensParam);
  return {
    maxTokens: max,
    sampling: {
      temperature: b.temperature ?? 1,
      topP: b.top_p ?? 1,
      topK: b.top_k != null && b.top_k > 0 ? b.top_k : 0,
      // Unseeded requests draw a fresh seed: reproducibility is opt-in, as in OpenAI's API.
      seed: b.seed ?? crypto.randomInt(2 ** 31),
    },
    stopStrings: b.stop == null ? [] : typeof b.stop === 'string' ? [b.stop] : b.stop,
    stream: !!b.stream,
    includeUsage: !!b.stream_options?.include_usage,
  };
}

function checkPrompt(ids: number[], param: string, context: number, vocab: number): void {
  if (ids.length === 0) throw badRequest('the prompt is empty', param);
  if (ids.length > context) {
    throw new ApiError(400, `This model's maximum context length is ${context} tokens, but the prompt has ${ids.length} tokens. Shorten the prompt.`, 'invalid_request_error', param, 'context_length_exceeded');
  }
  for (const id of ids) if (id < 0 || id >= vocab) throw badRequest(`token id ${id} is outside the vocabulary [0, ${vocab})`, param);
}

export function completionRequest(body: unknown, tok: EngineTokenizer, context: number, vocab: number): ApiRequest {
  const b = parse(completionSchema, body);
  if (b.echo) throw badRequest('echo is not supported', 'echo');
  let ids: number[];
  const p = b.prompt;
  if (typeof p === 'string') ids = tok.encode(p);
  else if (p.length === 1 && typeof p[0] === 'string') ids = tok.encode(p[0]);
  else if (p.length === 1 && Array.isArray(p[0])) ids = p[0];
  else if (p.length > 0 && typeof p[0] === 'number') ids = p as number[];
  else throw badRequest('send exactly one prompt per request (a string or a list of token ids)', 'prompt');
  checkPrompt(ids, 'prompt', context, vocab);
  const f = commonFields(b, b.max_tokens, 'max_tokens', 16, context);
  return {
    kind: 'completion',
    model: b.model,
    stream: f.stream,
    includeUsage: f.includeUsage,
    logprobs: b.logprobs != null,
    gen: {
      promptIds: ids,
      maxTokens: f.maxTokens,
      sampling: f.sampling,
      stopIds: [tok.special.eos],
      stopStrings: f.stopStrings,
      topLogprobs: b.logprobs ?? undefined,
    },
  };
}

export function chatRequest(body: unknown, tok: EngineTokenizer, context: number, vocab: number): ApiRequest {
  const b = parse(chatSchema, body);
  const messages: ChatMessage[] = b.messages.map((m) => ({
    // The tokenizer's chat template knows system, user and assistant; developer is OpenAI's new name for system.
    role: m.role === 'developer' ? 'system' : m.role,
    content: m.content == null ? '' : typeof m.content === 'string' ? m.content : m.content.map((c) => c.text).join(''),
  }));
  const ids = tok.renderChat(messages, { addGenerationPrompt: true }).ids;
  checkPrompt(ids, 'messages', context, vocab);
  if (b.max_tokens != null && b.max_completion_tokens != null) throw badRequest('give max_tokens or max_completion_tokens, not both', 'max_tokens');
  const [mt, mtParam] = b.max_completion_tokens != null ? [b.max_completion_tokens, 'max_completion_tokens'] : [b.max_tokens, 'max_tokens'];
  const f = commonFields(b, mt, mtParam, context, context);
  if (b.top_logprobs != null && !b.logprobs) throw badRequest('top_logprobs requires logprobs: true', 'top_logprobs');
  return {
    kind: 'chat',
    model: b.model,
    stream: f.stream,
    includeUsage: f.includeUsage,
    logprobs: !!b.logprobs,
    gen: {
      promptIds: ids,
      maxTokens: f.maxTokens,
      sampling: f.sampling,
      stopIds: [tok.special.end, tok.special.eos],
      stopStrings: f.stopStrings,
      topLogprobs: b.logprobs ? (b.top_logprobs ?? 0) : undefined,
    },
  };
}

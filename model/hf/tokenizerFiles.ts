/**
 * tokenizer_config.json and generation_config.json beside moecat's tokenizer.json. The chat
 * template renders exactly what data/tokenizer.ts `renderChat` produces:
 *   <|bos|> then per message <|role|> content <|end|>, then <|assistant|> for a generation prompt.
 * The special tokens are found by their text in tokenizer.json's added_tokens.
 */
import { CheckpointError } from '../../core/errors';
import { SpecialIds } from './config';

export const CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";

const NAMES = ['bos', 'eos', 'pad', 'system', 'user', 'assistant', 'end'] as const;
type Name = (typeof NAMES)[number];

/** Special-token ids by name, from a tokenizer.json text (null when it has none of them). */
export function specialTokenIds(tokenizerJson: string, where = 'tokenizer.json'): Record<Name, number> | null {
  let root: { added_tokens?: { id: number; content: string }[] };
  try {
    root = JSON.parse(tokenizerJson) as typeof root;
  } catch (e) {
    throw new CheckpointError(`invalid JSON (${(e as Error).message})`, { where });
  }
  const byText = new Map((root.added_tokens ?? []).map((t) => [t.content, t.id]));
  const out = {} as Record<Name, number>;
  for (const n of NAMES) {
    const id = byText.get(`<|${n}|>`);
    if (id === undefined) return null;
    out[n] = id;
  }
  return out;
}

/** bos, eos (generation stops at <|eos|> and at a chat turn's <|end|>), pad. */
export function hfSpecialIds(s: Record<Name, number>): SpecialIds {
  return { bos: s.bos, eos: [s.eos, s.end], pad: s.pad };
}

export function tokenizerConfig(s: Record<Name, number>, maxLength: number): Record<string, unknown> {
  const decoder: Record<string, unknown> = {};
  for (const n of NAMES) {
    decoder[String(s[n])] = { content: `<|${n}|>`, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
  }
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    added_tokens_decoder: decoder,
    bos_token: '<|bos|>',
    eos_token: '<|eos|>',
    pad_token: '<|pad|>',
    additional_special_tokens: ['<|system|>', '<|user|>', '<|assistant|>', '<|end|>'],
    add_bos_token: false,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    model_max_length: maxLength,
    chat_template: CHAT_TEMPLATE,
  };
}

export function generationConfig(ids: SpecialIds | null): Record<string, unknown> {
  return {
    bos_token_id: ids?.bos ?? null,
    eos_token_id: ids ? ids.eos : null,
    pad_token_id: ids?.pad ?? null,
    do_sample: false,
  };
}

/**
 * Hugging Face `tokenizer.json` (model type BPE, byte-level) reading and writing. Written with a
 * fixed key order and the vocabulary in id order, so the text (and its sha256, the tokenizer
 * hash) is a deterministic function of the merges.
 */
import { DataError } from '../core/errors';
import { bytesToByteLevel, byteLevelToBytes } from './byteLevel';

export const SPECIAL_TOKENS = {
  bos: '<|bos|>',
  eos: '<|eos|>',
  pad: '<|pad|>',
  system: '<|system|>',
  user: '<|user|>',
  assistant: '<|assistant|>',
  end: '<|end|>',
} as const;
export type SpecialName = keyof typeof SPECIAL_TOKENS;
export const SPECIAL_ORDER = Object.keys(SPECIAL_TOKENS) as SpecialName[];

export interface TokenizerData {
  /** Bytes of each id; specials hold their text's bytes. */
  tokenBytes: Uint8Array[];
  merges: [number, number, number][];
  special: Record<SpecialName, number>;
}

export function toTokenizerJson(d: TokenizerData): string {
  const specialIds = new Set(Object.values(d.special));
  const specialAt = new Map<number, string>(SPECIAL_ORDER.map((n) => [d.special[n], SPECIAL_TOKENS[n]]));
  const vocab = d.tokenBytes.map((b, id) => `${JSON.stringify(specialAt.get(id) ?? bytesToByteLevel(b))}:${id}`);
  const merges = d.merges.map(([a, b]) => JSON.stringify(`${bytesToByteLevel(d.tokenBytes[a])} ${bytesToByteLevel(d.tokenBytes[b])}`));
  const added = [...specialIds].sort((x, y) => x - y).map((id) =>
    JSON.stringify({ id, content: specialAt.get(id), single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }),
  );
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return [
    '{',
    '"version":"1.0",',
    '"truncation":null,',
    '"padding":null,',
    `"added_tokens":[\n${added.join(',\n')}\n],`,
    '"normalizer":null,',
    `"pre_tokenizer":${JSON.stringify(byteLevel)},`,
    '"post_processor":null,',
    `"decoder":${JSON.stringify(byteLevel)},`,
    `"model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,`,
    `"vocab":{\n${vocab.join(',\n')}\n},`,
    `"merges":[\n${merges.join(',\n')}\n]}`,
    '}',
    '',
  ].join('\n');
}

type Json = Record<string, unknown>;

/** Parses and checks a byte-level BPE tokenizer.json; `where` names the file in errors. */
export function parseTokenizerJson(text: string, where = 'tokenizer.json'): TokenizerData {
  let root: Json;
  try {
    root = JSON.parse(text) as Json;
  } catch (e) {
    throw new DataError(`not valid JSON: ${(e as Error).message}`, { where });
  }
  const model = root.model as Json | undefined;
  if (!model || model.type !== 'BPE') throw new DataError('model.type must be "BPE"', { where, hint: 'moecat reads byte-level BPE tokenizers' });
  const pre = root.pre_tokenizer as Json | null | undefined;
  if (!pre || pre.type !== 'ByteLevel' || pre.use_regex === false || pre.add_prefix_space === true) {
    throw new DataError('pre_tokenizer must be ByteLevel with use_regex and without add_prefix_space', { where, hint: 'train one with `moecat tokenizer train`' });
  }
  const vocab = model.vocab as Record<string, number> | undefined;
  if (!vocab || typeof vocab !== 'object') throw new DataError('model.vocab is missing', { where });
  const added = (Array.isArray(root.added_tokens) ? root.added_tokens : []) as { id: number; content: string }[];
  const addedById = new Map(added.map((t) => [t.id, t.content]));
  const size = Math.max(...Object.values(vocab), ...added.map((t) => t.id)) + 1;
  const tokenBytes: Uint8Array[] = new Array(size);
  for (const [tok, id] of Object.entries(vocab)) {
    if (addedById.has(id)) continue;
    const bytes = byteLevelToBytes(tok);
    if (!bytes) throw new DataError(`vocab entry ${JSON.stringify(tok)} (id ${id}) is not byte-level text`, { where });
    tokenBytes[id] = bytes;
  }
  for (const [id, content] of addedById) tokenBytes[id] = Buffer.from(content, 'utf8');
  for (let b = 0; b < 256; b++) {
    if (!tokenBytes[b] || tokenBytes[b].length !== 1 || tokenBytes[b][0] !== b) {
      throw new DataError(`id ${b} must be the raw byte ${b}`, { where, hint: 'moecat tokenizers put the 256 bytes at ids 0..255' });
    }
  }
  for (let id = 0; id < size; id++) if (!tokenBytes[id]) tokenBytes[id] = new Uint8Array(0);
  const special = {} as Record<SpecialName, number>;
  for (const name of SPECIAL_ORDER) {
    const hit = added.find((t) => t.content === SPECIAL_TOKENS[name]);
    if (!hit) throw new DataError(`special token ${SPECIAL_TOKENS[name]} is missing from added_tokens`, { where });
    special[name] = hit.id;
  }
  const rawMerges = (model.merges ?? []) as (string | [string, string])[];
  const merges: [number, number, number][] = rawMerges.map((m, i) => {
    const [l, r] = typeof m === 'string' ? (m.split(' ') as [string, string]) : m;
    const a = vocab[l];
    const b = vocab[r];
    const x = vocab[l + r];
    if (a === undefined || b === undefined || x === undefined) {
      throw new DataError(`merge ${i} (${JSON.stringify(m)}) uses a token missing from the vocab`, { where });
    }
    return [a, b, x];
  });
  return { tokenBytes, merges, special };
}

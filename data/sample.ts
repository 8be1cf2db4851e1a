/**
 * Bounded text samples for tokenizer training: an equal byte budget per source, documents taken
 * in order (cut at the budget), so training cost stays fixed however large the corpus is.
 */
import { InputFile, noSkips, readDocs, SkipCounts } from './sources';

export async function sampleTexts(
  groups: InputFile[][],
  budgetBytes: number,
  textField: string,
  skipped: SkipCounts = noSkips(),
): Promise<string[]> {
  const per = Math.max(1, Math.floor(budgetBytes / Math.max(1, groups.length)));
  const texts: string[] = [];
  for (const files of groups) {
    let used = 0;
    for (const f of files) {
      for await (const doc of readDocs(f, { textField, skipped })) {
        let text = typeof doc === 'string' ? doc : Buffer.from(doc).toString('utf8');
        if (Buffer.byteLength(text) > per - used) text = Buffer.from(text).subarray(0, per - used).toString('utf8');
        texts.push(text);
        used += Buffer.byteLength(text);
        if (used >= per) break;
      }
      if (used >= per) break;
    }
  }
  return texts;
}

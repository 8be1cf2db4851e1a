/**
 * SFT data (data/sft.ts): the loss mask is exactly the assistant tokens (checked token by token
 * against the chat structure), packing keeps conversations whole, bad conversations are
 * counted or refused, and sampling is a pure function of (seed, step, mb).
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { SftLoader, loadSftFile, splitValidation, packRows } from '../../data/sft';
import { instructionSet, mobyDickChapters, toJsonl } from '../../data/sftData';
import { DataError } from '../../core/errors';
import { testTokenizer, tmpDir } from '../inference/fixtures';

const tok = testTokenizer();
const convs = [
  { messages: [{ role: 'user', content: 'What is the title of chapter 1?' }, { role: 'assistant', content: 'Chapter 1 is "Loomings".' }] },
  { messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Say hello.' }, { role: 'assistant', content: 'hello there' }, { role: 'user', content: 'again' }, { role: 'assistant', content: 'hello' }] },
  { messages: [{ role: 'user', content: 'the quick brown fox' }, { role: 'assistant', content: 'jumps over the lazy dog' }] },
  { messages: [{ role: 'assistant', content: 'the model says hello there, then stops.' }] },
  { messages: [{ role: 'user', content: 'Mixture of experts?' }, { role: 'assistant', content: 'zero experts cost nothing.' }] },
  { messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }] },
];

function writeJsonl(dir: string, lines: unknown[], name = 'sft.jsonl'): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return f;
}

/** Expected training positions from the chat structure alone: after <|assistant|>, up to and including <|end|>. */
function structuralMask(ids: ArrayLike<number>): number[] {
  const out: number[] = [];
  let inAssistant = false;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (id === tok.special.assistant) {
      inAssistant = true;
      out.push(0);
    } else if (id === tok.special.end) {
      out.push(inAssistant ? 1 : 0);
      inAssistant = false;
    } else out.push(inAssistant ? 1 : 0);
  }
  return out;
}

function loader(file: string, o: Partial<{ seed: number; seqLen: number; B: number; M: number; val: number }> = {}): SftLoader {
  return new SftLoader({ file, tokenizer: tok, tokenizerJson: tok.toJSON(), seed: o.seed ?? 3, seqLen: o.seqLen ?? 48, microBatchSize: o.B ?? 2, microBatches: o.M ?? 2, valFraction: o.val ?? 0 });
}

describe('SFT data', () => {
  let dir: string;
  before(() => {
    dir = tmpDir('moecat-sft-');
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('renders with the chat template and masks exactly the assistant content and its <|end|>', () => {
    const { examples } = loadSftFile(writeJsonl(dir, convs), tok, 200);
    assert.equal(examples.length, convs.length);
    examples.forEach((ex, i) => {
      const want = structuralMask(ex.ids);
      assert.deepEqual(Array.from(ex.mask), want, `conversation ${i}`);
      // The masked tokens decode to the assistant contents followed by <|end|>.
      const masked = Array.from(ex.ids).filter((_, k) => ex.mask[k] === 1);
      const assistantText = convs[i].messages.filter((m) => m.role === 'assistant').map((m) => m.content + '<|end|>').join('');
      assert.equal(tok.decode(masked), assistantText);
    });
  });

  it('shifts the mask with the targets: loss exactly where the target token is an assistant token', () => {
    const l = loader(writeJsonl(dir, convs), { seqLen: 48 });
    for (let step = 0; step < 4; step++) {
      for (let mb = 0; mb < 2; mb++) {
        const b = l.microbatch(step, mb);
        const plan = l.rowPlan(step, mb);
        plan.forEach((row, r) => {
          const buf = row.flatMap((ei) => Array.from(l.examples[ei].ids));
          const msk = row.flatMap((ei) => Array.from(structuralMask(l.examples[ei].ids)));
          for (let i = 0; i < b.seqLen; i++) {
            const at = r * b.seqLen + i;
            const want = i + 1 < buf.length ? msk[i + 1] : 0;
            assert.equal(b.lossMask[at], want, `step ${step} mb ${mb} row ${r} pos ${i}`);
            if (i + 1 < buf.length) assert.equal(b.targets[at], buf[i + 1]);
            if (i < buf.length) assert.equal(b.inputs[at], buf[i]);
          }
        });
      }
    }
  });

  it('packs conversations whole, pads with <|pad|> (mask 0), one attention segment each', () => {
    const l = loader(writeJsonl(dir, convs), { seqLen: 40 });
    const rows = l.epochRows(0);
    const seen = rows.flat().sort((a, b) => a - b);
    assert.deepEqual(seen, l.train, 'every training conversation exactly once per epoch');
    const L = 40;
    for (let step = 0; step < 3; step++) {
      const b = l.microbatch(step, 0);
      l.rowPlan(step, 0).forEach((row, r) => {
        const lens = row.map((ei) => l.examples[ei].ids.length);
        const used = lens.reduce((a, x) => a + x, 0);
        assert.ok(used <= L + 1, 'a row holds whole conversations only');
        let o = 0;
        row.forEach((ei, s) => {
          const ids = Array.from(l.examples[ei].ids);
          assert.equal(ids[0], tok.special.bos);
          for (let k = 0; k < ids.length; k++) {
            if (o + k < L) {
              assert.equal(b.inputs[r * L + o + k], ids[k]);
              assert.equal(b.segmentIds[r * L + o + k], s);
            }
          }
          o += ids.length;
        });
        for (let i = used; i < L; i++) {
          assert.equal(b.inputs[r * L + i], tok.special.pad);
          assert.equal(b.lossMask[r * L + i], 0);
        }
        for (let i = Math.max(0, used - 1); i < L; i++) assert.equal(b.lossMask[r * L + i], 0);
      });
    }
  });

  it('next-fit packing never exceeds the window and keeps the order', () => {
    const rows = packRows([4, 0, 2, 1, 3], [5, 9, 3, 2, 7], 10);
    assert.deepEqual(rows, [[4], [0, 2], [1], [3]]);
  });

  it('skips bad conversations with counts by reason', () => {
    const long = 'word '.repeat(200);
    const lines = [
      convs[0],
      'not json',
      { conversation: [] },
      { messages: [{ content: 'no role' }, { role: 'assistant', content: 'x' }] },
      { messages: [{ role: 'robot', content: 'beep' }, { role: 'assistant', content: 'x' }] },
      { messages: [{ role: 'user', content: '' }, { role: 'assistant', content: 'x' }] },
      { messages: [{ role: 'user', content: 'only a question' }] },
      { messages: [{ role: 'user', content: long }, { role: 'assistant', content: 'x' }] },
      convs[2],
    ];
    const { examples, report } = loadSftFile(writeJsonl(dir, lines, 'bad.jsonl'), tok, 100);
    assert.equal(examples.length, 2);
    assert.deepEqual(examples.map((e) => e.line), [1, 9]);
    assert.deepEqual(report.skipped, { invalid_json: 1, no_messages: 1, missing_role: 1, unknown_role: 1, empty_content: 1, no_assistant: 1, too_long: 1 });
    assert.equal(report.lines, 9);
  });

  it('refuses a file where every conversation is bad, with the counts', () => {
    const f = writeJsonl(dir, [{ messages: [{ role: 'user', content: 'q' }] }, { messages: [{ role: 'robot', content: 'q' }] }], 'allbad.jsonl');
    assert.throws(() => loadSftFile(f, tok, 48), (e: Error) => e instanceof DataError && /no usable conversation among 2 lines/.test(e.message) && /1 unknown_role/.test(e.message) && /1 no_assistant/.test(e.message));
  });

  it('splits validation deterministically by seed, disjoint from training', () => {
    const a = splitValidation(50, 7, 0.1);
    assert.deepEqual(a, splitValidation(50, 7, 0.1));
    assert.notDeepEqual(a.val, splitValidation(50, 8, 0.1).val);
    assert.equal(a.val.length, 5);
    assert.equal(new Set([...a.train, ...a.val]).size, 50);
    const l = loader(writeJsonl(dir, convs), { val: 0.2 });
    const valSet = new Set(l.val);
    for (let e = 0; e < 3; e++) for (const row of l.epochRows(e)) for (const i of row) assert.ok(!valSet.has(i), 'validation conversations never train');
    const vb = l.validationBatches();
    assert.ok(vb.length >= 1 && vb.every((b) => b.lossMask.some((v) => v > 0)));
  });

  it('samples as a pure function of (seed, step, mb): any order, fresh loaders and resume agree', () => {
    const f = writeJsonl(dir, convs);
    const a = loader(f);
    const forward = [0, 1, 2, 3, 4, 5].map((s) => a.microbatch(s, 1));
    const b = loader(f);
    const backward = [5, 4, 3, 2, 1, 0].map((s) => b.microbatch(s, 1)).reverse();
    assert.deepEqual(forward, backward);
    const st = loader(f);
    for (let s = 0; s < 3; s++) st.microbatch(s, 0);
    const saved = JSON.parse(JSON.stringify(st.state()));
    assert.equal(saved.step, 3);
    const resumed = loader(f);
    resumed.loadState(saved);
    assert.deepEqual(resumed.microbatch(3, 0), st.microbatch(3, 0));
    assert.throws(() => loader(f, { seed: 4 }).loadState(saved), /different seed/);
    assert.notDeepEqual(loader(f, { seed: 4 }).microbatch(0, 0).inputs, a.microbatch(0, 0).inputs);
  });

  it('generates the Moby-Dick instruction set deterministically, all conversations valid', () => {
    const a = toJsonl(instructionSet(mobyDickChapters(), { seed: 0 }));
    assert.equal(a, toJsonl(instructionSet(mobyDickChapters(), { seed: 0 })));
    const f = path.join(dir, 'moby.jsonl');
    fs.writeFileSync(f, a);
    const { report } = loadSftFile(f, tok, 1024);
    assert.ok(report.kept > 300, `${report.kept} conversations`);
    assert.equal(report.kept, report.lines);
    assert.ok(a.includes('"Chapter 1 is \\"Loomings\\"."'));
  });
});

import { strict as assert } from 'assert';
import { BUNDLED_DOMAINS, loadBundledCorpus } from '../../../data/domains/corpus';
import { embedDocuments } from '../../../data/domains/embed';
import { fitFLGP } from '../../../data/domains/flgp';
import { accuracy } from '../../../data/domains/baselines';
import { pickLabelled } from '../../../data/domains/synthetic';

describe('data/domains on real text (Moby-Dick / State of the Union / TypeScript lib.d.ts)', () => {
  it('150 chunks per domain, 30 labels: FLGP accuracy ≥ 0.8 on the unlabelled chunks (chance 1/3)', () => {
    const docs = loadBundledCorpus({ perDomain: 150, wordsPerDoc: 200, seed: 1 });
    const y = Int32Array.from(docs, (d) => BUNDLED_DOMAINS.indexOf(d.domain));
    const X = embedDocuments(docs.map((d) => d.text), { seed: 1 });
    assert.equal(X.length, 450);
    assert.equal(X[0].length, 100);
    const idx = pickLabelled(y, 30, 1);
    const model = fitFLGP({ X, labels: new Map(Array.from(idx, (i) => [i, y[i]])), anchors: 45, seed: 1 });
    const acc = accuracy(model.predict().classes, y, idx);
    process.stderr.write(`      measured FLGP accuracy on real text: ${acc.toFixed(3)} (420 unlabelled chunks)\n`);
    assert.ok(acc >= 0.8, `accuracy ${acc}`);
  });

  it('embeddings are unit length and reproducible for a seed', () => {
    const texts = ['Call me Ishmael. Some years ago', 'interface Array<T> { length: number; }', 'Fellow-Citizens of the Senate'];
    const a = embedDocuments(texts, { seed: 3 });
    const b = embedDocuments(texts, { seed: 3 });
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(Array.from(a[i]), Array.from(b[i]));
      assert.ok(Math.abs(a[i].reduce((s, v) => s + v * v, 0) - 1) < 1e-12);
    }
  });
});

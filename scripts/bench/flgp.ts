/**
 * FLGP benchmark (DESIGN.md section 9; arXiv 2405.13342). Prints JSON lines:
 * - bench "flgp-labels": accuracy vs number of labels (20, 50, 100, 200, 500) on the bundled
 *   real documents (Moby-Dick / State of the Union / TypeScript lib.d.ts chunks), FLGP against
 *   kNN and logistic regression on the same embeddings, mean over label draws;
 * - bench "flgp-scaling": wall time of fit + predict for n = 10^3, 10^4, 10^5 points on two
 *   noisy concentric circles (s = 300, K = 100, m = 50), to show linear growth in n.
 * Usage: node dist/scripts/bench/flgp.js [--quick]
 */
import { BUNDLED_DOMAINS, loadBundledCorpus } from '../../data/domains/corpus';
import { embedDocuments } from '../../data/domains/embed';
import { fitFLGP } from '../../data/domains/flgp';
import { accuracy, knnClassify, logisticRegressionClassify } from '../../data/domains/baselines';
import { toMatrix } from '../../data/domains/matrix';
import { concentricCircles, pickLabelled } from '../../data/domains/synthetic';

const quick = process.argv.includes('--quick');

function emit(row: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(row) + '\n');
}

function labelsBench(): void {
  const perDomain = quick ? 200 : 400;
  const t0 = Date.now();
  const docs = loadBundledCorpus({ perDomain, wordsPerDoc: 200, seed: 1 });
  const y = Int32Array.from(docs, (d) => BUNDLED_DOMAINS.indexOf(d.domain));
  const X = embedDocuments(docs.map((d) => d.text), { seed: 1 });
  const M = toMatrix(X);
  process.stderr.write(`flgp bench: ${docs.length} documents embedded in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  const draws = quick ? 1 : 3;
  for (const m of [20, 50, 100, 200, 500]) {
    if (m >= docs.length / 2) continue;
    const acc = { flgp: 0, knn: 0, logreg: 0 };
    let seconds = 0;
    for (let draw = 0; draw < draws; draw++) {
      const idx = pickLabelled(y, m, 100 + draw);
      const labels = new Map(Array.from(idx, (i) => [i, y[i]]));
      const t1 = Date.now();
      const model = fitFLGP({ X: M, labels, anchors: Math.round(docs.length / 10), K: 100, seed: draw });
      const pred = model.predict();
      seconds += (Date.now() - t1) / 1000;
      acc.flgp += accuracy(pred.classes, y, idx) / draws;
      acc.knn += accuracy(knnClassify(M, labels, 5), y, idx) / draws;
      acc.logreg += accuracy(logisticRegressionClassify(M, labels), y, idx) / draws;
    }
    emit({ bench: 'flgp-labels', n: docs.length, labels: m, draws, flgp: +acc.flgp.toFixed(4), knn: +acc.knn.toFixed(4), logreg: +acc.logreg.toFixed(4), flgp_seconds: +(seconds / draws).toFixed(2) });
  }
}

function scalingBench(): void {
  const sizes = quick ? [1e3, 1e4] : [1e3, 1e4, 1e5];
  for (const n of sizes) {
    const { X, y } = concentricCircles({ n, radii: [1, 1.5], noise: 0.08, seed: 1 });
    const idx = pickLabelled(y, 50, 1);
    const t0 = Date.now();
    const model = fitFLGP({ X, labels: new Map(Array.from(idx, (i) => [i, y[i]])), anchors: 300, K: 100, seed: 1 });
    const pred = model.predict();
    const seconds = (Date.now() - t0) / 1000;
    emit({ bench: 'flgp-scaling', n, s: 300, K: model.K, labels: 50, seconds: +seconds.toFixed(3), us_per_point: +((seconds * 1e6) / n).toFixed(1), error: +(1 - accuracy(pred.classes, y, idx)).toFixed(4) });
  }
}

labelsBench();
scalingBench();

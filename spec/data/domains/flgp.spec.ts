import { strict as assert } from 'assert';
import { DataError } from '../../../core/errors';
import { fitFLGP } from '../../../data/domains/flgp';
import { accuracy, rbfGpClassify } from '../../../data/domains/baselines';
import { concentricCircles, pickLabelled } from '../../../data/domains/synthetic';

function labelsOf(y: Int32Array, idx: Int32Array): Map<number, number> {
  return new Map(Array.from(idx, (i) => [i, y[i]]));
}

describe('data/domains/flgp', () => {
  // Two concentric circles, radii 1 and 1.5, isotropic N(0, 0.08²) noise, n = 3000, 50 labels.
  const circles = concentricCircles({ n: 3000, radii: [1, 1.5], noise: 0.08, seed: 1 });
  const circleIdx = pickLabelled(circles.y, 50, 1);

  it('two circles (n = 3000, m = 50): SE-FLGP error ≤ 1.5% on the unlabelled points', () => {
    const model = fitFLGP({ X: circles.X, labels: labelsOf(circles.y, circleIdx), anchors: 300, r: 3, K: 100, affinity: 'se', seed: 1 });
    const err = 1 - accuracy(model.predict().classes, circles.y, circleIdx);
    assert.ok(err <= 0.015, `error ${err}`);
  });

  it('two circles with noise 0.05: LAE-FLGP error ≤ 1% (LAE is the more noise-sensitive affinity)', () => {
    const c = concentricCircles({ n: 3000, radii: [1, 1.5], noise: 0.05, seed: 1 });
    const model = fitFLGP({ X: c.X, labels: labelsOf(c.y, circleIdx), anchors: 300, affinity: 'lae', seed: 1 });
    const err = 1 - accuracy(model.predict().classes, c.y, circleIdx);
    assert.ok(err <= 0.01, `error ${err}`);
  });

  it('four alternating rings (n = 3000, m = 50): FLGP error ≤ 2%, RBF-kernel GP on raw coordinates ≥ 15%', () => {
    const { X, y: ring } = concentricCircles({ n: 3000, radii: [0.4, 0.6, 0.8, 1.0], noise: 0.02, seed: 2 });
    const y = Int32Array.from(ring, (c) => c % 2);
    const idx = pickLabelled(y, 50, 2);
    const flgp = fitFLGP({ X, labels: labelsOf(y, idx), anchors: 300, affinity: 'se', seed: 2 });
    const errFlgp = 1 - accuracy(flgp.predict().classes, y, idx);
    const errRbf = 1 - accuracy(rbfGpClassify(X, labelsOf(y, idx)).classes, y, idx);
    assert.ok(errFlgp <= 0.02, `FLGP error ${errFlgp}`);
    assert.ok(errRbf >= 0.15, `RBF error ${errRbf}`);
  });

  it('is deterministic: the same seed gives bit-identical probabilities', () => {
    const { X, y } = concentricCircles({ n: 1500, seed: 4 });
    const idx = pickLabelled(y, 30, 4);
    const a = fitFLGP({ X, labels: labelsOf(y, idx), anchors: 100, seed: 11 }).predict();
    const b = fitFLGP({ X, labels: labelsOf(y, idx), anchors: 100, seed: 11 }).predict();
    assert.deepEqual(Buffer.from(a.probs.buffer), Buffer.from(b.probs.buffer));
    assert.deepEqual(Array.from(a.classes), Array.from(b.classes));
  });

  it('multiclass one-vs-rest: three rings, probabilities sum to 1, error ≤ 2%', () => {
    const { X, y } = concentricCircles({ n: 2400, radii: [1, 1.5, 2], noise: 0.05, seed: 6 });
    const idx = pickLabelled(y, 45, 6);
    const model = fitFLGP({ X, labels: labelsOf(y, idx), anchors: 240, seed: 6 });
    assert.equal(model.fits.length, 3);
    const p = model.predict();
    for (let i = 0; i < X.n; i++) assert.ok(Math.abs(p.probs[3 * i] + p.probs[3 * i + 1] + p.probs[3 * i + 2] - 1) < 1e-12);
    const err = 1 - accuracy(p.classes, y, idx);
    assert.ok(err <= 0.02, `error ${err}`);
  });

  it('refuses bad labels or an empty bandwidth list with a DataError naming the problem', () => {
    const { X } = concentricCircles({ n: 100, seed: 1 });
    assert.throws(() => fitFLGP({ X, labels: new Map([[0, 0], [1, 0]]), anchors: 10, seed: 1 }), (e: unknown) => e instanceof DataError && /two classes/.test(e.message));
    assert.throws(() => fitFLGP({ X, labels: new Map([[0, 0], [100, 1]]), anchors: 10, seed: 1 }), (e: unknown) => e instanceof DataError && /outside/.test(e.message));
    assert.throws(() => fitFLGP({ X, labels: { index: [0, 0], classId: [0, 1] }, anchors: 10, seed: 1 }), (e: unknown) => e instanceof DataError && /twice/.test(e.message));
    assert.throws(() => fitFLGP({ X, labels: new Map([[0, 0], [1, 1]]), anchors: 10, seed: 1, bandwidths: [] }), (e: unknown) => e instanceof DataError && /bandwidths is empty/.test(e.message));
  });
});

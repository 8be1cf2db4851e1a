import { strict as assert } from 'assert';
import { basisRow, coxDeBoor, evalSpline, knotVector } from '../../analysis/bspline';
import { fitSpline } from '../../analysis/splineFit';

// Knot sets with repeated interior knots (multiplicity up to q+1 lowers continuity to a jump).
const knotSets = [[], [0.5], [0.3, 0.7], [0.2, 0.2, 0.5, 0.7], [0.25, 0.25, 0.25, 0.6, 0.61]];
const xs = [0, 1e-9, 0.1, 0.2, 0.2 + 1e-12, 0.25, 0.333, 0.5, 0.6, 0.605, 0.7, 0.99, 1];

describe('analysis/bspline', () => {
  it('is a partition of unity on [0, 1] for degrees 0..3, repeated knots included', () => {
    for (let q = 0; q <= 3; q++) {
      for (const kn of knotSets) {
        for (const x of xs) {
          const s = basisRow(x, kn, q).reduce((a, b) => a + b, 0);
          assert.ok(Math.abs(s - 1) < 1e-12, `q=${q} knots=${kn} x=${x}: sum ${s}`);
        }
      }
    }
  });

  it('is non-negative everywhere', () => {
    for (let q = 0; q <= 3; q++) for (const kn of knotSets) for (let i = 0; i <= 200; i++) for (const v of basisRow(i / 200, kn, q)) assert.ok(v >= 0);
  });

  it('matches a direct Cox-de Boor evaluation', () => {
    for (let q = 0; q <= 3; q++) {
      for (const kn of knotSets) {
        const t = knotVector(kn, q);
        for (let i = 0; i <= 100; i++) {
          const x = i / 100;
          const row = basisRow(x, kn, q);
          row.forEach((v, j) => assert.ok(Math.abs(v - coxDeBoor(t, j, q, x)) < 1e-12, `q=${q} knots=${kn} x=${x} j=${j}`));
        }
      }
    }
  });

  it('drops the first function without the intercept', () => {
    const full = basisRow(0.3, [0.5], 3, true);
    const noInt = basisRow(0.3, [0.5], 3, false);
    assert.equal(noInt.length, full.length - 1);
    assert.deepEqual(Array.from(noInt), Array.from(full.slice(1)));
  });

  it('makes a doubled knot a jump for linear splines (the paper\'s f3)', () => {
    const f = (x: number) => evalSpline([x], [0.2, 0.2, 0.5, 0.7], [0, -1, 1, 0, 1, 0], 1)[0];
    assert.ok(Math.abs(f(0.2 - 1e-9) - -1) < 1e-6);
    assert.equal(f(0.2), 1);
    assert.equal(f(0.5), 0);
    assert.equal(f(0.7), 1);
  });

  it('least squares recovers an exact spline (banded Cholesky, tiny ridge)', () => {
    const kn = [0.3, 0.45, 0.7];
    const beta = [1, -2, 0.5, 3, -1, 2, 0];
    const x = Array.from({ length: 80 }, (_, i) => i / 79);
    const y = evalSpline(x, kn, beta, 3);
    const fit = fitSpline(x, y, kn, 3, { ridge: 1e-12 });
    assert.ok(fit.rss < 1e-16, `rss ${fit.rss}`);
    fit.beta.forEach((b, i) => assert.ok(Math.abs(b - beta[i]) < 1e-6));
  });
});

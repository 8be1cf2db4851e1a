import { strict as assert } from 'assert';
import { kmeansAnchors, nearestAnchors } from '../../../data/domains/anchors';
import { seAffinity } from '../../../data/domains/affinity';
import { laplaceEigen, laplaceFunctionSpace, predictEigen, predictFunctionSpace, probitProbability } from '../../../data/domains/laplace';
import { heatKernelBlock, heatWeights, phiRows, spectrumFromZ } from '../../../data/domains/spectrum';
import { concentricCircles, pickLabelled } from '../../../data/domains/synthetic';
import { fitHeatKernelRegression } from '../../../data/domains/regression';

describe('data/domains/laplace', () => {
  const { X, y } = concentricCircles({ n: 800, noise: 0.05, seed: 5 });
  const U = kmeansAnchors(X, { s: 60, seed: 5 });
  const spec = spectrumFromZ(seAffinity(nearestAnchors(X, U, 3), U.n, 0.01), 30);
  const close = (a: number, b: number, tol: number) => Math.abs(a - b) <= tol * (1 + Math.abs(b));

  for (const m of [20, 60]) {
    it(`weight-space and function-space Laplace give the same evidence and posterior (m = ${m}, K = ${spec.K}, rel 1e-7)`, () => {
      const idx = pickLabelled(y, m, 7);
      const yl = Uint8Array.from(idx, (i) => y[i]);
      const phiL = phiRows(spec, idx);
      const g = heatWeights(spec, 3);
      const a = laplaceEigen(phiL, g, yl, 'function');
      const b = laplaceEigen(phiL, g, yl, 'weight');
      assert.equal(a.route, 'function');
      assert.equal(b.route, 'weight');
      assert.ok(close(a.logEvidence, b.logEvidence, 1e-7), `${a.logEvidence} vs ${b.logEvidence}`);
      for (let k = 0; k < spec.K; k++) assert.ok(close(a.mean[k], b.mean[k], 1e-6));
      for (let k = 0; k < spec.K * spec.K; k++) assert.ok(Math.abs(a.cov[k] - b.cov[k]) < 1e-7);
    });
  }

  it('eigen-basis predictions equal R&W Algorithm 3.2 on the explicit m×m and n×m heat-kernel blocks', () => {
    const idx = pickLabelled(y, 40, 8);
    const yl = Uint8Array.from(idx, (i) => y[i]);
    const t = 5;
    const C = heatKernelBlock(spec, t, idx, idx);
    for (let i = 0; i < idx.length; i++) C[i * idx.length + i] += 1e-10;
    const fs = laplaceFunctionSpace(C, yl);
    const post = laplaceEigen(phiRows(spec, idx), heatWeights(spec, t), yl, 'weight');
    assert.ok(close(fs.logEvidence, post.logEvidence, 1e-6));
    const all = Int32Array.from({ length: X.n }, (_, i) => i);
    const cross = heatKernelBlock(spec, t, all, idx);
    const kss = Float64Array.from(all, (i) => heatKernelBlock(spec, t, [i], [i])[0]);
    const p1 = predictFunctionSpace(fs, cross, kss);
    const p2 = predictEigen(spec.phi, X.n, post);
    for (let i = 0; i < X.n; i++) {
      assert.ok(close(p1.mean[i], p2.mean[i], 1e-5));
      assert.ok(Math.abs(p1.variance[i] - p2.variance[i]) < 1e-6);
    }
  });

  it('probit probability: 0.5 at zero mean, shrinks toward 0.5 as the variance grows', () => {
    assert.equal(probitProbability(0, 3), 0.5);
    assert.ok(probitProbability(2, 0) > probitProbability(2, 10));
    assert.ok(probitProbability(2, 10) > 0.5);
  });

  it('regression: (t, σ²) by marginal likelihood recovers sin(2θ) + 2·circle from 80 of 800 points (RMSE < 0.15)', () => {
    const target = Float64Array.from({ length: X.n }, (_, i) => Math.sin(2 * Math.atan2(X.data[2 * i + 1], X.data[2 * i])) + 2 * y[i]);
    const idx = pickLabelled(y, 80, 9);
    const fit = fitHeatKernelRegression(spec, idx, Float64Array.from(idx, (i) => target[i]));
    const p = fit.predict();
    let se = 0;
    for (let i = 0; i < X.n; i++) se += (p.mean[i] - target[i]) ** 2;
    const rmse = Math.sqrt(se / X.n);
    assert.ok(rmse < 0.15, `rmse ${rmse}`);
    assert.ok(fit.t > 0 && fit.noise > 0);
  });
});

import { strict as assert } from 'assert';
import { RngStream } from '../../../core/rng';
import { kmeansAnchors, Matrix, nearestAnchors } from '../../../data/domains/anchors';
import { laeAffinity, seAffinity, SparseZ } from '../../../data/domains/affinity';
import { heatKernelBlock, invSqrtColSums, spectrumFromZ } from '../../../data/domains/spectrum';
import { symEig } from '../../../core/linalg';

function blob(n: number, seed: number): Matrix {
  const rng = RngStream.of(seed, 'spec-blob');
  return { data: Float64Array.from({ length: 2 * n }, () => rng.normal()), n, d: 2 };
}

/** Dense n×n W = A Aᵀ with A = Z Λ^{-1/2}. */
function denseW(Z: SparseZ): Float64Array {
  const lam = invSqrtColSums(Z);
  const A = new Float64Array(Z.n * Z.s);
  for (let i = 0; i < Z.n; i++) for (let q = 0; q < Z.r; q++) A[i * Z.s + Z.idx[i * Z.r + q]] += Z.val[i * Z.r + q] * lam[Z.idx[i * Z.r + q]];
  const W = new Float64Array(Z.n * Z.n);
  for (let i = 0; i < Z.n; i++) for (let j = 0; j < Z.n; j++) {
    let v = 0;
    for (let k = 0; k < Z.s; k++) v += A[i * Z.s + k] * A[j * Z.s + k];
    W[i * Z.n + j] = v;
  }
  return W;
}

describe('data/domains/spectrum', () => {
  const X = blob(200, 1);
  const U = kmeansAnchors(X, { s: 20, seed: 1 });
  const nb = nearestAnchors(X, U, 3);

  for (const kind of ['se', 'lae'] as const) {
    it(`${kind}: eigenpairs via the s×s problem equal those of the dense n×n A·Aᵀ (values 1e-10, vectors |cos| 1 − 1e-8)`, () => {
      const Z = kind === 'se' ? seAffinity(nb, U.n, 0.05) : laeAffinity(X, U, nb);
      const spec = spectrumFromZ(Z, 20);
      const dense = symEig(denseW(Z), X.n);
      const n = X.n;
      for (let k = 0; k < spec.K; k++) {
        assert.ok(Math.abs(spec.sigma2[k] - dense.values[k]) < 1e-10, `eigenvalue ${k}: ${spec.sigma2[k]} vs ${dense.values[k]}`);
        const gap = Math.min(k > 0 ? dense.values[k - 1] - dense.values[k] : Infinity, dense.values[k] - dense.values[k + 1]);
        if (gap < 1e-6) continue; // a degenerate pair's basis is not unique
        let c = 0;
        for (let i = 0; i < n; i++) c += (spec.phi[i * spec.K + k] / Math.sqrt(n)) * dense.vectors[i * n + k];
        assert.ok(Math.abs(Math.abs(c) - 1) < 1e-8, `eigenvector ${k}: |cos| = ${Math.abs(c)}`);
      }
      // Everything past the s-th eigenvalue of W is zero: the rank is at most s.
      assert.ok(Math.abs(dense.values[U.n]) < 1e-12);
    });
  }

  it('the top eigenpair of the row-stochastic W is (1, constant vector), so μ_1 = 0', () => {
    const spec = spectrumFromZ(seAffinity(nb, U.n, 0.05), 10);
    assert.ok(Math.abs(spec.sigma2[0] - 1) < 1e-12);
    assert.equal(spec.mu[0] < 1e-12, true);
    const first = Math.abs(spec.phi[0]);
    for (let i = 0; i < X.n; i++) assert.ok(Math.abs(Math.abs(spec.phi[i * spec.K]) - 1) < 1e-9 && Math.abs(Math.abs(spec.phi[i * spec.K]) - first) < 1e-9);
  });

  it('heat-kernel blocks are symmetric and shrink to the constant kernel as t grows', () => {
    const spec = spectrumFromZ(seAffinity(nb, U.n, 0.05), 20);
    const rows = [0, 5, 17, 40];
    const C = heatKernelBlock(spec, 2, rows, rows);
    for (let a = 0; a < 4; a++) for (let b = 0; b < 4; b++) assert.ok(Math.abs(C[a * 4 + b] - C[b * 4 + a]) < 1e-12);
    const far = heatKernelBlock(spec, 1e6, rows, rows);
    for (const v of far) assert.ok(Math.abs(v - 1) < 1e-9);
  });
});

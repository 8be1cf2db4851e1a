import { strict as assert } from 'assert';
import { RngStream } from '../../../core/rng';
import { kmeansAnchors, nearestAnchors } from '../../../data/domains/anchors';
import { laeAffinity, localAnchorEmbedding, projectToSimplex, seAffinity } from '../../../data/domains/affinity';
import { concentricCircles } from '../../../data/domains/synthetic';

function reconErr(x: ArrayLike<number>, U: Float64Array, d: number, idx: ArrayLike<number>, z: ArrayLike<number>): number {
  let e = 0;
  for (let k = 0; k < d; k++) {
    let v = x[k];
    for (let q = 0; q < idx.length; q++) v -= z[q] * U[idx[q] * d + k];
    e += v * v;
  }
  return e;
}

describe('data/domains/affinity', () => {
  const { X } = concentricCircles({ n: 600, seed: 3 });
  const U = kmeansAnchors(X, { s: 40, seed: 3 });
  const nb = nearestAnchors(X, U, 3);

  it('projectToSimplex: known projections', () => {
    assert.deepEqual(Array.from(projectToSimplex([0.2, 0.3, 0.5])), [0.2, 0.3, 0.5]);
    assert.deepEqual(Array.from(projectToSimplex([2, 0, 0])), [1, 0, 0]);
    const z = projectToSimplex([0.5, 0.5, 0.5]);
    for (const v of z) assert.ok(Math.abs(v - 1 / 3) < 1e-15);
  });

  it('LAE weights lie on the simplex and reconstruct every point at least as well as uniform weights', () => {
    const Z = laeAffinity(X, U, nb);
    let better = 0;
    for (let i = 0; i < X.n; i++) {
      const z = Z.val.subarray(i * 3, i * 3 + 3);
      let sum = 0;
      for (const v of z) {
        assert.ok(v >= 0);
        sum += v;
      }
      assert.ok(Math.abs(sum - 1) < 1e-12);
      const x = X.data.subarray(i * 2, i * 2 + 2);
      const idx = nb.idx.subarray(i * 3, i * 3 + 3);
      const eLae = reconErr(x, U.data, 2, idx, z);
      const eUni = reconErr(x, U.data, 2, idx, [1 / 3, 1 / 3, 1 / 3]);
      assert.ok(eLae <= eUni + 1e-12, `point ${i}: LAE ${eLae} > uniform ${eUni}`);
      if (eLae < 0.5 * eUni) better++;
    }
    assert.ok(better > 0.9 * X.n, `LAE halves the uniform error for only ${better}/${X.n} points`);
  });

  it('LAE matches a brute-force simplex grid search on a random 5-d problem', () => {
    const rng = RngStream.of(9, 'spec-lae');
    const d = 5;
    const Ud = { data: Float64Array.from({ length: 3 * d }, () => rng.normal()), n: 3, d };
    const x = Float64Array.from({ length: d }, () => rng.normal());
    const z = localAnchorEmbedding(x, Ud, [0, 1, 2]);
    const best = reconErr(x, Ud.data, d, [0, 1, 2], z);
    for (let a = 0; a <= 200; a++) for (let b = 0; a + b <= 200; b++) {
      const g = [a / 200, b / 200, (200 - a - b) / 200];
      assert.ok(best <= reconErr(x, Ud.data, d, [0, 1, 2], g) + 1e-9);
    }
  });

  it('SE rows sum to 1 and weight nearer anchors more', () => {
    const Z = seAffinity(nb, U.n, 0.01);
    for (let i = 0; i < X.n; i++) {
      const o = i * 3;
      assert.ok(Math.abs(Z.val[o] + Z.val[o + 1] + Z.val[o + 2] - 1) < 1e-12);
      assert.ok(Z.val[o] >= Z.val[o + 1] && Z.val[o + 1] >= Z.val[o + 2]);
    }
  });
});

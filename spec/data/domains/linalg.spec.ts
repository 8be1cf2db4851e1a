import { strict as assert } from 'assert';
import { RngStream } from '../../../core/rng';
import { cholesky, cholLogDet, cholSolve, symEig } from '../../../data/domains/linalg';

function randomSymmetric(n: number, seed: number): Float64Array {
  const rng = RngStream.of(seed, 'spec-linalg');
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) a[i * n + j] = a[j * n + i] = rng.normal();
  return a;
}

describe('data/domains/linalg', () => {
  it('symEig returns A v = λ v with orthonormal vectors and descending values (residual < 1e-10)', () => {
    const n = 40;
    const a = randomSymmetric(n, 1);
    const { values, vectors } = symEig(a, n);
    for (let k = 1; k < n; k++) assert.ok(values[k] <= values[k - 1]);
    for (let k = 0; k < n; k++) {
      for (let i = 0; i < n; i++) {
        let av = 0;
        for (let j = 0; j < n; j++) av += a[i * n + j] * vectors[j * n + k];
        assert.ok(Math.abs(av - values[k] * vectors[i * n + k]) < 1e-10);
      }
      for (let l = 0; l < n; l++) {
        let d = 0;
        for (let i = 0; i < n; i++) d += vectors[i * n + k] * vectors[i * n + l];
        assert.ok(Math.abs(d - (k === l ? 1 : 0)) < 1e-12);
      }
    }
  });

  it('symEig handles a diagonal matrix with repeated eigenvalues exactly', () => {
    const { values } = symEig(Float64Array.from([2, 0, 0, 0, 5, 0, 0, 0, 2]), 3);
    assert.deepEqual(Array.from(values), [5, 2, 2]);
  });

  it('Cholesky solves SPD systems and gives log det', () => {
    const n = 30;
    const g = randomSymmetric(n, 2);
    const a = new Float64Array(n * n); // a = g gᵀ + n I
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
      let s = i === j ? n : 0;
      for (let k = 0; k < n; k++) s += g[i * n + k] * g[j * n + k];
      a[i * n + j] = s;
    }
    const L = cholesky(a, n);
    const b = Float64Array.from({ length: n }, (_, i) => Math.sin(i));
    const x = cholSolve(L, n, b);
    for (let i = 0; i < n; i++) {
      let r = 0;
      for (let j = 0; j < n; j++) r += a[i * n + j] * x[j];
      assert.ok(Math.abs(r - b[i]) < 1e-10);
    }
    const eig = symEig(a, n);
    const logdet = Array.from(eig.values).reduce((s, v) => s + Math.log(v), 0);
    assert.ok(Math.abs(cholLogDet(L, n) - logdet) < 1e-9);
  });

  it('Cholesky refuses a matrix that is not positive definite', () => {
    assert.throws(() => cholesky(Float64Array.from([1, 2, 2, 1]), 2), /not positive definite/);
  });
});

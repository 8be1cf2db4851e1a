import { strict as assert } from 'assert';
import { RngStream } from '../../core/rng';
import { DataError } from '../../core/errors';
import { backSolve, cholesky, choleskyInPlace, cholLogDet, cholSolve, forwardSolve, kmeans, mulRowLower, solveRowLower, symEig } from '../../core/linalg';

function randomSymmetric(n: number, seed: number): Float64Array {
  const rng = RngStream.of(seed, 'spec-linalg');
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) a[i * n + j] = a[j * n + i] = rng.normal();
  return a;
}

describe('core/linalg', () => {
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

  it('choleskyInPlace writes the same lower factor as cholesky, keeps the upper triangle, and says false when not SPD', () => {
    const n = 12;
    const g = randomSymmetric(n, 3);
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
      let s = i === j ? n : 0;
      for (let k = 0; k < n; k++) s += g[i * n + k] * g[j * n + k];
      a[i * n + j] = s;
    }
    const L = cholesky(a, n);
    const inPlace = Float64Array.from(a);
    assert.equal(choleskyInPlace(inPlace, n), true);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) assert.equal(inPlace[i * n + j], j <= i ? L[i * n + j] : a[i * n + j]);
    assert.equal(choleskyInPlace(Float64Array.from([1, 2, 2, 1]), 2), false);
    assert.throws(() => cholesky(Float64Array.from([1, 2, 2, 1]), 2, 'here'), (e: unknown) => e instanceof DataError && e.where === 'here' && /pivot 1 = -3/.test(e.message));
  });

  it('row-vector forms: solveRowLower inverts mulRowLower and equals backSolve (Lᵀ x = y) bit for bit', () => {
    const n = 9;
    const L = cholesky(Float64Array.from({ length: n * n }, (_, k) => (k % (n + 1) === 0 ? 4 : 1 / (1 + Math.abs((k % n) - Math.floor(k / n))))), n);
    const x = Float64Array.from({ length: n }, (_, i) => Math.cos(3 * i));
    const y = new Float64Array(n + 2);
    mulRowLower(x, 0, L, n, y, 2);
    const back = new Float64Array(n);
    solveRowLower(y, 2, L, n, back);
    for (let i = 0; i < n; i++) assert.ok(Math.abs(back[i] - x[i]) < 1e-12);
    assert.deepEqual(back, backSolve(L, n, y.subarray(2)));
    // forwardSolve solves L z = b
    const z = forwardSolve(L, n, x);
    for (let i = 0; i < n; i++) {
      let r = 0;
      for (let k = 0; k <= i; k++) r += L[i * n + k] * z[k];
      assert.ok(Math.abs(r - x[i]) < 1e-12);
    }
  });

  it('k-means finds separated clusters under both stop rules, and a seed fixes the result bit for bit', () => {
    const rng = RngStream.of(5, 'spec-kmeans');
    const centres = [[0, 0], [10, 0], [0, 10]];
    const n = 90;
    const X = new Float64Array(n * 2);
    for (let i = 0; i < n; i++) for (let d = 0; d < 2; d++) X[i * 2 + d] = centres[i % 3][d] + 0.1 * rng.normal();
    for (const stop of ['inertia', 'assignments'] as const) {
      const run = () => kmeans(X, n, 2, 3, RngStream.of(9, 'k'), { stop });
      const r = run();
      for (const c of centres) {
        const hit = [0, 1, 2].some((j) => Math.hypot(r.centroids[j * 2] - c[0], r.centroids[j * 2 + 1] - c[1]) < 0.2);
        assert.ok(hit, `${stop}: no centroid near ${c}`);
      }
      for (let i = 3; i < n; i++) assert.equal(r.assign[i], r.assign[i % 3]);
      assert.deepEqual(run(), r);
    }
    // 'assignments' stops one iteration after the assignment settles.
    const a = kmeans(X, n, 2, 3, RngStream.of(9, 'k'), { stop: 'assignments', maxIter: 50 });
    assert.ok(a.iterations >= 2 && a.iterations < 50, String(a.iterations));
  });
});

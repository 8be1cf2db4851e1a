/**
 * CHESS sparse kernels (arXiv 2409.01366, section 3.4): on the same masked input a sparse
 * kernel equals the dense kernel written in the same loop style, bitwise.
 */
import { strict as assert } from 'assert';
import { RngStream } from '../../core/rng';
import { ffnDense, ffnScratch, ffnSparse, matVec, matVecRows, rowDots, rowDotsSparse, activeByThreshold, FfnWeights } from '../../inference/sparse/kernels';

const rnd = (n: number, tag: string) => RngStream.of(3, tag).normalArray(n, 1);

function transpose(W: Float32Array, r: number, c: number): Float32Array {
  const T = new Float32Array(W.length);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) T[j * r + i] = W[i * c + j];
  return T;
}

describe('sparse kernels', () => {
  const d = 24;
  const h = 40;
  it('matVecRows over the kept rows equals matVec on the input with dropped entries zeroed (bitwise)', () => {
    const x = rnd(h, 'x');
    const W = rnd(h * d, 'W');
    const idx = new Int32Array(h);
    const n = activeByThreshold(x, h, 0.7, idx);
    assert.ok(n > 5 && n < h - 5, `kept ${n}`);
    const masked = x.map((v) => (Math.abs(v) >= 0.7 ? v : 0));
    assert.deepEqual(matVecRows(x, W, idx, n, d, new Float32Array(d)), matVec(masked, W, h, d, new Float32Array(d)));
  });

  it('rowDotsSparse equals rowDots on the kept channels and is zero elsewhere (bitwise)', () => {
    const x = rnd(d, 'x2');
    const WT = rnd(h * d, 'W2');
    const cols = Int32Array.from([0, 3, 4, 17, 39]);
    const sparse = rowDotsSparse(x, WT, d, h, cols, cols.length, new Float32Array(h));
    const dense = rowDots(x, WT, d, h, new Float32Array(h));
    for (let j = 0; j < h; j++) assert.equal(sparse[j], cols.includes(j) ? dense[j] : 0, `channel ${j}`);
  });

  it('ffnSparse equals the dense SwiGLU with the gate activation masked by the thresholds (bitwise)', () => {
    const x = rnd(d, 'x3');
    const gate = rnd(d * h, 'g');
    const up = rnd(d * h, 'u');
    const down = rnd(h * d, 'dn');
    const w: FfnWeights = { gate, upT: transpose(up, d, h), down, d, h };
    const tau = Float32Array.from({ length: h }, (_, i) => (i % 3) * 0.4);
    const s = ffnScratch(h);
    const ySparse = new Float32Array(d);
    const kept = ffnSparse(w, x, tau, s, ySparse);
    // Reference: dense gate and up, then zero the dropped channels of silu(gate) ⊙ up.
    const g = matVec(x, gate, d, h, new Float32Array(h)).map((v) => v / (1 + Math.exp(-v)));
    const u = rowDots(x, w.upT, d, h, new Float32Array(h));
    const act = new Float32Array(h);
    let n = 0;
    for (let j = 0; j < h; j++) if (Math.abs(g[j]) >= tau[j]) { act[j] = g[j] * u[j]; n++; }
    assert.equal(kept, n);
    assert.deepEqual(ySparse, matVec(act, down, h, d, new Float32Array(d)));
  });

  it('ffnSparse with all thresholds zero equals ffnDense (bitwise)', () => {
    const x = rnd(d, 'x4');
    const w: FfnWeights = { gate: rnd(d * h, 'g4'), upT: rnd(d * h, 'u4'), down: rnd(h * d, 'd4'), d, h };
    const a = ffnDense(w, x, ffnScratch(h), new Float32Array(d));
    const b = new Float32Array(d);
    assert.equal(ffnSparse(w, x, new Float32Array(h), ffnScratch(h), b), h);
    assert.deepEqual(b, a);
  });
});

import { strict as assert } from 'assert';
import { TreeAccumulator } from '../../trainer/treeSum';
import { canonicalTreeSum } from '../../parallel/tree';
import { RngStream } from '../../core/rng';

function leaves(n: number, len: number, seed: number): Float32Array[] {
  const r = RngStream.of(seed, 'leaves');
  // Awkward magnitudes so that summation order changes the float32 result.
  return Array.from({ length: n }, (_, i) => Float32Array.from({ length: len }, () => (r.normal() * 10 ** ((i % 5) - 2))));
}

describe('trainer/treeSum', () => {
  for (const n of [1, 2, 3, 4, 5, 6, 7, 8, 13, 16]) {
    it(`streaming accumulation equals the recursive canonical tree for M=${n}`, () => {
      const parts = leaves(n, 257, n);
      const ref = canonicalTreeSum(parts);
      const acc = new TreeAccumulator();
      for (const p of parts) acc.push(Float32Array.from(p));
      assert.deepEqual(Buffer.from(acc.result().buffer), Buffer.from(ref.buffer));
    });
  }

  it('a subtree computed elsewhere and combined in tree order gives the same bits (world size 2 and 4)', () => {
    const parts = leaves(8, 1000, 99);
    const ref = canonicalTreeSum(parts);
    for (const W of [2, 4]) {
      const per = 8 / W;
      const sub = Array.from({ length: W }, (_, r) => canonicalTreeSum(parts.slice(r * per, (r + 1) * per)));
      assert.deepEqual(Buffer.from(canonicalTreeSum(sub).buffer), Buffer.from(ref.buffer));
    }
  });

  for (const n of [5, 8, 13, 16]) {
    it(`buffers handed back by release() and reused for later leaves keep the bits; M=${n} needs at most log2(M) + 2 buffers`, () => {
      const parts = leaves(n, 257, 7 * n);
      const ref = canonicalTreeSum(parts);
      const free: Float32Array[] = [];
      let allocated = 0;
      const acc = new TreeAccumulator((b) => free.push(b));
      for (const p of parts) {
        const buf = free.pop() ?? (allocated++, new Float32Array(p.length));
        buf.set(p);
        acc.push(buf);
      }
      assert.deepEqual(Buffer.from(acc.result().buffer), Buffer.from(ref.buffer));
      assert.ok(allocated <= Math.floor(Math.log2(n)) + 2, `${allocated} buffers for ${n} leaves`);
      assert.ok(allocated < n, 'buffers were reused');
    });
  }

  it('the order matters: a left-to-right sum differs from the tree (so the tests above can fail)', () => {
    const parts = leaves(8, 1000, 7);
    const seq = Float32Array.from(parts[0]);
    for (let i = 1; i < parts.length; i++) for (let j = 0; j < seq.length; j++) seq[j] += parts[i][j];
    assert.notDeepEqual(Buffer.from(seq.buffer), Buffer.from(canonicalTreeSum(parts).buffer));
  });
});

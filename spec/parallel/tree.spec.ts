import { strict as assert } from 'assert';
import { blockNodes, canonicalTreeSum, leftSize, shardRange, treeFromNodes } from '../../parallel/tree';
import { TreeAccumulator } from '../../trainer/treeSum';
import { awkward, hash, M, microGrad } from '../fixtures/parallel-data';

const naive = (parts: Float32Array[]) => {
  const acc = Float32Array.from(parts[0]);
  for (let i = 1; i < parts.length; i++) for (let j = 0; j < acc.length; j++) acc[j] += parts[i][j];
  return acc;
};

describe('canonical tree', () => {
  it('splits n leaves at the largest power of two below n', () => {
    assert.deepEqual([2, 3, 4, 5, 8, 9, 12].map(leftSize), [1, 2, 2, 4, 4, 8, 8]);
  });

  it('matches trainer/treeSum (streaming) bit for bit for M = 1..19', () => {
    for (let m = 1; m <= 19; m++) {
      const parts = Array.from({ length: m }, (_, i) => awkward(i + 7 * m, 257));
      const acc = new TreeAccumulator();
      parts.forEach((p) => acc.push(Float32Array.from(p)));
      assert.equal(hash(canonicalTreeSum(parts)), hash(acc.result()), `M=${m} streaming`);
    }
  });

  it('is order-sensitive on the test data: a naive left-to-right sum differs (so the multi-rank tests can fail)', () => {
    const parts = Array.from({ length: M }, (_, i) => microGrad(i));
    assert.notEqual(hash(canonicalTreeSum(parts)), hash(naive(parts)));
  });

  it('does not modify its inputs', () => {
    const parts = [awkward(1, 10), awkward(2, 10), awkward(3, 10)];
    const before = parts.map(hash);
    canonicalTreeSum(parts);
    assert.deepEqual(parts.map(hash), before);
  });

  it('decomposes a block into maximal tree nodes', () => {
    assert.deepEqual(blockNodes(4, 8, 16), [{ lo: 4, hi: 8 }]);
    assert.deepEqual(blockNodes(3, 9, 16), [{ lo: 3, hi: 4 }, { lo: 4, hi: 8 }, { lo: 8, hi: 9 }]);
    assert.deepEqual(blockNodes(0, 11, 11), [{ lo: 0, hi: 11 }]);
    assert.deepEqual(blockNodes(8, 11, 11), [{ lo: 8, hi: 11 }]);
    assert.deepEqual(blockNodes(2, 2, 11), []);
  });

  it('evaluates the tree from node values of any block tiling identically', () => {
    const parts = Array.from({ length: 11 }, (_, i) => awkward(100 + i, 64));
    const want = hash(canonicalTreeSum(parts));
    for (const cuts of [[0, 11], [0, 3, 5, 9, 11], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [0, 8, 11]]) {
      const values = new Map<string, Float32Array>();
      for (let k = 0; k + 1 < cuts.length; k++) {
        for (const n of blockNodes(cuts[k], cuts[k + 1], 11)) values.set(`${n.lo}:${n.hi}`, canonicalTreeSum(parts.slice(n.lo, n.hi)));
      }
      assert.equal(hash(treeFromNodes(values, 11)), want, `cuts ${cuts}`);
    }
  });

  it('shards n elements over W ranks contiguously, remainder to the lower ranks', () => {
    assert.deepEqual([0, 1, 2, 3].map((r) => shardRange(10, 4, r)), [[0, 3], [3, 6], [6, 8], [8, 10]]);
    assert.deepEqual([0, 1, 2].map((r) => shardRange(2, 3, r)), [[0, 1], [1, 2], [2, 2]]);
  });
});

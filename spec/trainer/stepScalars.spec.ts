/**
 * The typed packer of a step's reduced scalars: named fields land where the trainer's layout
 * says, two ranks' packs sum exactly into the single-process pack, and bad indices are refused.
 */
import { strict as assert } from 'assert';
import { MICRO_FIELDS, StepScalars } from '../../trainer/stepScalars';
import { MoeStats } from '../../model/moe/layer';

const M = 4;
const L = 2;
const N = 3;

function stats(seed: number): MoeStats[] {
  return Array.from({ length: L }, (_, l) => ({
    tokens: 10 + seed + l,
    ffnCounts: Int32Array.from({ length: N }, (_, e) => seed * 7 + l * 3 + e),
    ffnRows: 20 + seed * 2 + l,
    zeroSlots: 1,
  }));
}

function micro(m: number) {
  return { lm: 0.1 * (m + 1), balance: 0.01 * m, z: 0.5 / (m + 1), hiddenRms: 1 + m, hiddenMax: 3 * m, tokens: 64 };
}

describe('StepScalars (typed packer of the reduced step scalars)', () => {
  it('places fields at f·M + m, counts at 6M + l·N + e, layer tokens and FFN rows after them', () => {
    const s = new StepScalars(M, L, N);
    assert.equal(s.data.length, 6 * M + L * N + 2 * L);
    s.setMicro(2, micro(2));
    MICRO_FIELDS.forEach((f, i) => assert.equal(s.data[i * M + 2], micro(2)[f]));
    const st = stats(1);
    s.addRouting(st);
    for (let l = 0; l < L; l++) {
      for (let e = 0; e < N; e++) assert.equal(s.data[6 * M + l * N + e], st[l].ffnCounts[e]);
      assert.equal(s.data[6 * M + L * N + l], st[l].tokens);
      assert.equal(s.data[6 * M + L * N + L + l], st[l].ffnRows);
      assert.deepEqual(Array.from(s.expertCounts(l)), Array.from(st[l].ffnCounts));
      assert.equal(s.layerTokens(l), st[l].tokens);
      assert.equal(s.layerFfnRows(l), st[l].ffnRows);
    }
  });

  it('two ranks holding microbatches {0,1} and {2,3} sum exactly to one rank holding all four', () => {
    const one = new StepScalars(M, L, N);
    const ranks = [new StepScalars(M, L, N), new StepScalars(M, L, N)];
    for (let m = 0; m < M; m++) {
      const r = ranks[m < 2 ? 0 : 1];
      one.setMicro(m, micro(m));
      one.addRouting(stats(m));
      r.setMicro(m, micro(m));
      r.addRouting(stats(m));
    }
    const sum = new Float64Array(one.data.length);
    for (const r of ranks) for (let i = 0; i < sum.length; i++) sum[i] += r.data[i];
    assert.deepEqual(sum, one.data);
    const g = one.over(sum);
    for (let m = 0; m < M; m++) for (const f of MICRO_FIELDS) assert.equal(g.micro(f, m), micro(m)[f]);
  });

  it('refuses a microbatch index outside the step and a buffer of the wrong size', () => {
    const s = new StepScalars(M, L, N);
    assert.throws(() => s.setMicro(M, micro(0)), /microbatch 4 outside \[0, 4\)/);
    assert.throws(() => s.micro('lm', -1), /microbatch -1 outside/);
    assert.throws(() => s.over(new Float64Array(3)), /buffer of 3 values, layout needs 34/);
  });
});

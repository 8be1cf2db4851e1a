import { strict as assert } from 'assert';
import { candidate, logBirthPriorProposal, logChoose, moveProbabilities } from '../../analysis/knots';

describe('analysis/knots', () => {
  it('places candidate i at i/(n+1)', () => {
    assert.equal(candidate(0, 9), 0.1);
    assert.equal(candidate(8, 9), 0.9);
  });

  it('computes log C(n, k)', () => {
    assert.ok(Math.abs(logChoose(10, 3) - Math.log(120)) < 1e-12);
    assert.ok(Math.abs(logChoose(400, 2) - Math.log(79800)) < 1e-9);
    assert.equal(logChoose(5, 0), 0);
    assert.equal(logChoose(5, 6), -Infinity);
  });

  it('has birth/death/relocate probabilities that sum to 1 with b_k + d_k <= 2c', () => {
    for (const gamma of [0, 0.5, 1, 1.5]) {
      for (const k of [0, 1, 5, 200, 399, 400]) {
        const p = moveProbabilities(k, 400, gamma, 0.3);
        assert.ok(Math.abs(p.birth + p.death + p.relocate - 1) < 1e-15);
        assert.ok(p.birth <= 0.3 && p.death <= 0.3 && p.relocate >= 0.4 - 1e-15);
      }
      assert.equal(moveProbabilities(0, 400, gamma, 0.3).death, 0);
      assert.equal(moveProbabilities(400, 400, gamma, 0.3).birth, 0);
    }
  });

  it('makes prior ratio x proposal ratio exactly 1 for births and deaths (Green 1995)', () => {
    for (const gamma of [0, 1, 1.5])
      for (const k of [0, 1, 3, 50, 398]) assert.ok(Math.abs(logBirthPriorProposal(k, 400, gamma, 0.3)) < 1e-9, `gamma=${gamma} k=${k}`);
  });
});

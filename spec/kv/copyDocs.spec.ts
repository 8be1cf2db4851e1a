/**
 * The copy curriculum of the passkey model (scripts/experiments/a2ats/copyDocs.ts): documents are
 * a pure function of (seed, index), every value asked at the end is the one stated in the body
 * under the same label, and pair lines are exact copies. Also the passkey grader that the
 * A2ATS tables and lengthProbe share.
 */
import { strict as assert } from 'assert';
import { copyDoc, pairsDoc } from '../../scripts/experiments/a2ats/copyDocs';
import { gradePasskey } from '../../scripts/experiments/a2ats/passkey';

const SENTS = ['Call me Ishmael. ', 'Some years ago I went to sea. ', 'It is a way I have. ', 'The whale was white. '];

describe('passkey curriculum: copy documents', () => {
  it('labelled documents state 1..3 values in the body and ask exactly those, by label, at the end', () => {
    const counts = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const doc = copyDoc(SENTS, 0, i, 200);
      const [body, tail] = doc.split('\n\n');
      assert.ok(tail !== undefined, `document ${i} has no question part`);
      const stated = [...body.matchAll(/The (\w+) is ([a-z0-9]{4,12})\./g)].map((m) => `${m[1]}=${m[2]}`);
      const asked = [...tail.matchAll(/The (\w+) is ([a-z0-9]{4,12})\./g)].map((m) => `${m[1]}=${m[2]}`);
      assert.ok(stated.length >= 1 && stated.length <= 3, `document ${i}: ${stated.length} statements`);
      assert.deepEqual([...asked].sort(), [...stated].sort(), `document ${i}`);
      assert.equal(new Set(stated.map((s) => s.split('=')[0])).size, stated.length, `document ${i}: labels repeat`);
      counts.add(stated.length);
    }
    assert.deepEqual([...counts].sort(), [1, 2, 3]);
  });

  it('pair documents are 2..4 lines S|S with S of 8..47 characters', () => {
    for (let i = 0; i < 200; i++) {
      const lines = pairsDoc(0, i).split('\n');
      assert.ok(lines.length >= 2 && lines.length <= 4);
      for (const l of lines) {
        const [a, b] = l.split('|');
        assert.equal(a, b);
        assert.match(a, /^[a-z0-9]{8,47}$/);
      }
    }
  });

  it('is deterministic per (seed, index) and differs across seeds and indices', () => {
    assert.equal(copyDoc(SENTS, 3, 17, 300), copyDoc(SENTS, 3, 17, 300));
    assert.equal(pairsDoc(3, 17), pairsDoc(3, 17));
    assert.notEqual(pairsDoc(3, 17), pairsDoc(4, 17));
    assert.notEqual(pairsDoc(3, 17), pairsDoc(3, 18));
    assert.notEqual(copyDoc(SENTS, 3, 17, 300), copyDoc(SENTS, 4, 17, 300));
  });
});

describe('passkey grading', () => {
  it('takes the first 5-digit number and scores digits in place', () => {
    assert.deepEqual(gradePasskey(' 48213.', '48213'), { exact: true, digits: 1 });
    assert.deepEqual(gradePasskey(' 48211.', '48213'), { exact: false, digits: 0.8 });
    assert.deepEqual(gradePasskey(' 4 8 2 1 3', '48213'), { exact: false, digits: 0 }); // no 5-digit number
    assert.deepEqual(gradePasskey(' 12 then 48213', '48213'), { exact: true, digits: 1 }); // skips shorter runs
    assert.deepEqual(gradePasskey(' the whale', '48213'), { exact: false, digits: 0 });
  });
});

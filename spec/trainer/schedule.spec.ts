import { strict as assert } from 'assert';
import { lrAt } from '../../trainer/schedule';

describe('trainer/schedule', () => {
  const base = { warmupSteps: 10, totalSteps: 100, decaySteps: 20, minLrRatio: 0.1 };
  it('warms up linearly to the peak', () => {
    assert.equal(lrAt(0, 1, { type: 'wsd', ...base }), 0.1);
    assert.equal(lrAt(9, 1, { type: 'wsd', ...base }), 1);
  });
  it('WSD holds the peak, then decays linearly to minLr at the end', () => {
    assert.equal(lrAt(50, 1, { type: 'wsd', ...base }), 1);
    assert.equal(lrAt(79, 1, { type: 'wsd', ...base }), 1);
    assert.ok(Math.abs(lrAt(89, 1, { type: 'wsd', ...base }) - 0.55) < 1e-12);
    assert.ok(Math.abs(lrAt(99, 1, { type: 'wsd', ...base }) - 0.1) < 1e-12);
  });
  it('cosine reaches minLr at totalSteps and is monotone after warmup', () => {
    let prev = Infinity;
    for (let s = 10; s < 100; s++) {
      const lr = lrAt(s, 1, { type: 'cosine', ...base });
      assert.ok(lr <= prev);
      prev = lr;
    }
    assert.ok(Math.abs(lrAt(99, 1, { type: 'cosine', ...base }) - 0.1) < 1e-12);
  });
});

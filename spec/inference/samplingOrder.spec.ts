/**
 * sampling.descendingOrder (one native numeric sort of packed keys) gives exactly the order of
 * the comparator sort it replaced: descending logit, ties (and -0 vs +0) by ascending id.
 */
import { strict as assert } from 'assert';
import { descendingOrder } from '../../inference/sampling';

describe('sampling order', () => {
  it('equals sort((a, b) => z[b] - z[a] || a - b) with ties, signed zeros and infinities', () => {
    let s = 99;
    const rnd = () => {
      s = (s * 1664525 + 1013904223) >>> 0;
      return s / 2 ** 32;
    };
    for (let t = 0; t < 200; t++) {
      const n = 1 + Math.floor(rnd() * 3000);
      const z = Float32Array.from({ length: n }, () => {
        const r = rnd();
        return r < 0.1 ? 0 : r < 0.15 ? -0 : r < 0.3 ? Math.round((rnd() - 0.5) * 4) : (rnd() - 0.5) * 40;
      });
      if (t % 7 === 0) z[0] = Infinity;
      if (t % 11 === 0) z[n - 1] = -Infinity;
      const ref = Array.from(z.keys()).sort((a, b) => z[b] - z[a] || a - b);
      assert.deepEqual(descendingOrder(z), ref, `case ${t} (n = ${n})`);
    }
  });
});

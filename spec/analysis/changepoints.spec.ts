import { strict as assert } from 'assert';
import { binMedians, detectChanges, medianFilter } from '../../analysis/changepoints';
import { makeCurve, randomSpec, scoreDetections } from '../../analysis/synthetic';

const SEEDS = [1, 2, 3, 4, 5, 6, 7, 8];

describe('analysis/changepoints', () => {
  it('finds level shifts and slope changes with F1 >= 0.9 (window +-1% of steps, kind must match)', () => {
    let f1 = 0;
    let events = 0;
    for (const seed of SEEDS) {
      const spec = randomSpec(seed);
      events += spec.events.length;
      const c = makeCurve(spec, seed);
      const found = detectChanges(c.steps, c.loss, { seed }).changes;
      f1 += scoreDetections(spec.events, found, 0.01 * spec.steps).f1;
    }
    assert.ok(events >= 12, 'the synthetic set has both kinds of events');
    assert.ok(f1 / SEEDS.length >= 0.9, `mean F1 ${f1 / SEEDS.length}`);
  });

  it('reports a jump as a jump and a slope change as a slope change, with posterior probabilities', () => {
    const spec = { steps: 2000, noise: 0.01, spikes: [], spikeSize: 0, events: [{ kind: 'jump' as const, step: 700, size: 0.12 }, { kind: 'slope' as const, step: 1400, size: -0.8 }] };
    const c = makeCurve(spec, 3);
    const found = detectChanges(c.steps, c.loss, { seed: 3 }).changes;
    assert.equal(found.length, 2, JSON.stringify(found));
    assert.equal(found[0].kind, 'jump');
    assert.ok(Math.abs(found[0].step - 700) <= 20);
    assert.equal(found[1].kind, 'slope');
    assert.ok(Math.abs(found[1].step - 1400) <= 20);
    for (const f of found) assert.ok(f.probability >= 0.9 && f.probability <= 1);
  });

  it('raises no false alarms on clean power-law curves (noise and spikes, no events)', () => {
    for (const seed of SEEDS) {
      const spec = { ...randomSpec(seed), events: [] };
      const c = makeCurve(spec, seed);
      const found = detectChanges(c.steps, c.loss, { seed }).changes;
      assert.deepEqual(found, [], `seed ${seed}: ${JSON.stringify(found)}`);
    }
  });

  it('never reports single-step spikes, even 20 large ones', () => {
    const spec = { ...randomSpec(11, { spikes: 20 }), events: [] };
    spec.spikeSize = 1.0; // 100 noise sd
    const c = makeCurve(spec, 11);
    assert.deepEqual(detectChanges(c.steps, c.loss, { seed: 11 }).changes, []);
  });

  it('reduces a curve with bin medians, which drop an isolated spike', () => {
    const y = [1, 1, 9, 1, 1, 2, 2, 2, 50, 2];
    const b = binMedians(y.map((_, i) => i), y, 5);
    assert.deepEqual(Array.from(b.y), [1, 2]);
    assert.deepEqual(Array.from(b.x), [2, 7]);
    assert.deepEqual(Array.from(medianFilter([0, 0, 5, 0, 0], 3)), [0, 0, 0, 0, 0]);
  });

  it('works on a log-step axis', () => {
    const spec = { steps: 3000, noise: 0.01, spikes: [40, 900], spikeSize: 0.5, events: [{ kind: 'jump' as const, step: 1500, size: -0.15 }] };
    const c = makeCurve(spec, 5);
    const found = detectChanges(c.steps, c.loss, { seed: 5, logX: true }).changes;
    assert.equal(found.length, 1, JSON.stringify(found));
    assert.equal(found[0].kind, 'jump');
    assert.ok(Math.abs(found[0].step - 1500) <= 30);
  });
});

import { strict as assert } from 'assert';
import { adamwStep, newAdamWState } from '../../trainer/adamw';

describe('trainer/adamw', () => {
  it('first step moves each weight by lr·sign(g) (bias-corrected Adam) plus decoupled decay', () => {
    const p = new Float32Array([1, -2, 0.5]);
    const g = new Float32Array([0.3, -0.1, 2]);
    const st = newAdamWState(3);
    adamwStep(p, g, st, [{ offset: 0, size: 3, group: 'hidden' }], 0.01, { beta1: 0.9, beta2: 0.95, eps: 1e-16, weightDecay: 0.1 }, {});
    const want = [1 - 0.01 * (1 + 0.1 * 1), -2 - 0.01 * (-1 + 0.1 * -2), 0.5 - 0.01 * (1 + 0.1 * 0.5)];
    want.forEach((w, i) => assert.ok(Math.abs(p[i] - w) < 1e-6, `${p[i]} vs ${w}`));
    assert.equal(st.t, 1);
  });
  it('per-group LR scales apply and norms/embeddings get no weight decay', () => {
    const p = new Float32Array([1, 1]);
    const st = newAdamWState(2);
    adamwStep(p, new Float32Array([0, 0]), st, [{ offset: 0, size: 1, group: 'norm' }, { offset: 1, size: 1, group: 'hidden' }], 0.1, { beta1: 0.9, beta2: 0.95, eps: 1e-16, weightDecay: 0.5 }, { hidden: 0.5 });
    assert.equal(p[0], 1);
    assert.ok(Math.abs(p[1] - (1 - 0.1 * 0.5 * 0.5)) < 1e-7);
  });
  it('the clipping scale multiplies the gradient', () => {
    const a = new Float32Array([1]);
    const b = new Float32Array([1]);
    const cfg = { beta1: 0.9, beta2: 0.95, eps: 1e-3, weightDecay: 0 };
    adamwStep(a, new Float32Array([0.01]), newAdamWState(1), [{ offset: 0, size: 1, group: 'hidden' }], 1, cfg, {}, 0.5);
    adamwStep(b, new Float32Array([0.005]), newAdamWState(1), [{ offset: 0, size: 1, group: 'hidden' }], 1, cfg, {}, 1);
    assert.equal(a[0], b[0]);
  });
});

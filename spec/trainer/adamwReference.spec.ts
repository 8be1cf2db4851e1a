/**
 * AdamW against a float64 textbook reference over many steps. At t = 1 the bias-corrected update
 * is sign(g) for any beta, so only a multi-step run with varying gradients can tell a wrong beta1,
 * beta2 or bias correction; the last test shows each of those mistakes moves the weights by far
 * more than the tolerance used here.
 */
import { strict as assert } from 'assert';
import { adamwStep, adamwStepJs, AdamWConfig, newAdamWState, ParamSlice } from '../../trainer/adamw';
import { RngStream } from '../../core/rng';

const N = 64;
const STEPS = 30;
const cfg: AdamWConfig = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
const slices: ParamSlice[] = [{ offset: 0, size: 40, group: 'hidden' }, { offset: 40, size: 24, group: 'norm' }];
const lrAt = (t: number): number => 0.01 * (1 - t / (2 * STEPS));

/** Gradients whose sign and size change from step to step. */
function grads(): Float32Array[] {
  const r = RngStream.of(11, 'spec:adamw');
  return Array.from({ length: STEPS }, (_, t) => Float32Array.from(r.normalArray(N, 1), (x, i) => x * (1 + ((t * 7 + i) % 5)) * (t % 3 === 0 ? 0.1 : 1)));
}

function initial(): Float32Array {
  return Float32Array.from(RngStream.of(12, 'spec:adamw:p').normalArray(N, 1));
}

type Variant = { beta1: number; beta2: number; biasCorrection: boolean };

/** Decoupled-weight-decay Adam in float64 (Loshchilov & Hutter), weights kept as doubles. */
function reference(gs: Float32Array[], v: Variant = { beta1: cfg.beta1, beta2: cfg.beta2, biasCorrection: true }): Float64Array {
  const p = Float64Array.from(initial());
  const m = new Float64Array(N);
  const s = new Float64Array(N);
  for (let t = 1; t <= STEPS; t++) {
    const g = gs[t - 1];
    const c1 = v.biasCorrection ? 1 - v.beta1 ** t : 1;
    const c2 = v.biasCorrection ? 1 - v.beta2 ** t : 1;
    for (let i = 0; i < N; i++) {
      m[i] = v.beta1 * m[i] + (1 - v.beta1) * g[i];
      s[i] = v.beta2 * s[i] + (1 - v.beta2) * g[i] * g[i];
      const wd = i < 40 ? cfg.weightDecay : 0; // norms get no decay
      p[i] -= lrAt(t) * (m[i] / c1 / (Math.sqrt(s[i] / c2) + cfg.eps) + wd * p[i]);
    }
  }
  return p;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

const TOL = 2e-6;

describe('trainer/adamw against a multi-step reference', () => {
  const gs = grads();
  const want = reference(gs);

  for (const [name, step] of [['adamwStep (native when built)', adamwStep], ['adamwStepJs', adamwStepJs]] as const) {
    it(`${name}: ${STEPS} steps with varying gradients match the float64 reference`, () => {
      const p = initial();
      const st = newAdamWState(N);
      for (let t = 1; t <= STEPS; t++) step(p, gs[t - 1], st, slices, lrAt(t), cfg, {});
      assert.equal(st.t, STEPS);
      const d = maxDiff(p, want);
      assert.ok(d < TOL, `max |p - reference| = ${d}`);
    });
  }

  it('a wrong beta1, beta2 or a missing bias correction moves the weights by far more than the tolerance', () => {
    const wrong: Variant[] = [
      { beta1: 0.8, beta2: cfg.beta2, biasCorrection: true },
      { beta1: cfg.beta1, beta2: 0.99, biasCorrection: true },
      { beta1: cfg.beta2, beta2: cfg.beta1, biasCorrection: true },
      { beta1: cfg.beta1, beta2: cfg.beta2, biasCorrection: false },
    ];
    for (const v of wrong) {
      const d = maxDiff(reference(gs, v), want);
      assert.ok(d > 100 * TOL, `${JSON.stringify(v)}: only ${d} away`);
    }
  });
});

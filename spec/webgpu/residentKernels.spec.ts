/**
 * The GPU-resident optimizer kernels (core/webgpu/optimizer.ts) against their host references:
 * AdamW against trainer/adamw.ts (float32 on the device, float64 intermediates in JS), the block
 * sums of squares against a float64 loop, the router similarity against stability.ts, and
 * each kernel twice for the same bits.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { adamwMomentsOnDevice, adamwParamOnDevice, blockSquareSumsOnDevice, normBlocks, routerSimilarityOnDevice, NORM_BLOCK } from '../../core/webgpu/optimizer';
import { adamwStepJs, newAdamWState, ParamSlice } from '../../trainer/adamw';
import { routerSimilarity } from '../../trainer/stability';
import { ParamGroup } from '../../model/params';
import { useTestBackend } from '../helpers/backend';
import { webgpuOrSkip } from './helpers';

function random(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return ((s / 2 ** 32) * 2 - 1) * scale;
  });
}

function maxRel(a: ArrayLike<number>, b: ArrayLike<number>, floor: number): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(floor, Math.abs(b[i])));
  return worst;
}

const sameBits = (a: Float32Array, b: Float32Array) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

describe('webgpu: optimizer kernels of GPU-resident training', function () {
  this.timeout(120000);
  before(async function () {
    await webgpuOrSkip(this);
  });
  after(async () => {
    await useTestBackend();
  });

  it('AdamW (moments + per-parameter update, clip factor, bias correction, decay only off norm/embedding, per-group lr) matches trainer/adamw.ts', () => {
    const slices: ParamSlice[] = [
      { offset: 0, size: 300, group: 'norm' },
      { offset: 300, size: 1000, group: 'hidden' },
      { offset: 1300, size: 77, group: 'embedding' },
    ];
    const n = 1377;
    const cfg = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
    const lrScale: Partial<Record<ParamGroup, number>> = { hidden: 0.5 };
    const host = { p: random(n, 1), state: newAdamWState(n) };
    let p: tf.Tensor[] = slices.map((s) => tf.tensor1d(host.p.slice(s.offset, s.offset + s.size)));
    let m = tf.zeros([n]);
    let v = tf.zeros([n]);
    for (let t = 1; t <= 3; t++) {
      const g = random(n, 10 + t, 0.01);
      const clip = t === 2 ? 0.5 : 1;
      adamwStepJs(host.p, g, host.state, slices, 1e-2, cfg, lrScale, clip);
      const gt = tf.tensor1d(g);
      const [m2, v2] = adamwMomentsOnDevice(gt, m, v, { beta1: cfg.beta1, beta2: cfg.beta2, scale: clip });
      const c1 = 1 - cfg.beta1 ** t;
      const c2 = 1 - cfg.beta2 ** t;
      const p2 = slices.map((s, k) => adamwParamOnDevice(p[k], m2, v2, { offset: s.offset, lr: 1e-2 * (lrScale[s.group] ?? 1), wd: s.group === 'hidden' ? 0.1 : 0, c1, c2, eps: cfg.eps }));
      tf.dispose([gt, m, v, ...p]);
      [m, v, p] = [m2, v2, p2];
    }
    // Floors near the typical magnitude: m and v cancel where g and the old moment disagree.
    const devP = new Float32Array(n);
    slices.forEach((s, k) => devP.set(p[k].dataSync() as Float32Array, s.offset));
    assert.ok(maxRel(m.dataSync(), host.state.m, 1e-4) < 1e-5, `m differs by ${maxRel(m.dataSync(), host.state.m, 1e-4)}`);
    assert.ok(maxRel(v.dataSync(), host.state.v, 1e-7) < 1e-5, `v differs by ${maxRel(v.dataSync(), host.state.v, 1e-7)}`);
    assert.ok(maxRel(devP, host.p, 1e-3) < 1e-6, `weights differ by ${maxRel(devP, host.p, 1e-3)}`);
    tf.dispose([m, v, ...p]);
  });

  it('block sums of squares: blocks tile each parameter, partials match float64 sums, reruns give the same bits', () => {
    const slices = [
      { offset: 0, size: 5 },
      { offset: 5, size: NORM_BLOCK * 2 + 3 },
      { offset: 5 + NORM_BLOCK * 2 + 3, size: NORM_BLOCK },
    ];
    const n = 5 + NORM_BLOCK * 3 + 3;
    const b = normBlocks(slices);
    assert.deepEqual(Array.from(b.len), [5, NORM_BLOCK, NORM_BLOCK, 3, NORM_BLOCK]);
    assert.deepEqual(Array.from(b.slice), [0, 1, 1, 1, 2]);
    const x = random(n, 7, 0.1);
    const [xt, st, lt] = [tf.tensor1d(x), tf.tensor1d(b.start, 'int32'), tf.tensor1d(b.len, 'int32')];
    const run = () => {
      const t = blockSquareSumsOnDevice(xt, st, lt);
      const out = t.dataSync() as Float32Array;
      t.dispose();
      return out;
    };
    const first = run();
    const ref = Array.from(b.start, (s, k) => {
      let acc = 0;
      for (let i = s; i < s + b.len[k]; i++) acc += x[i] * x[i];
      return acc;
    });
    assert.ok(maxRel(first, ref, 1e-12) < 1e-5, `partials differ by ${maxRel(first, ref, 1e-12)}`);
    assert.ok(sameBits(first, run()));
    tf.dispose([xt, st, lt]);
  });

  it('router similarity partials give stability.routerSimilarity, with zero columns counted as norm 1', () => {
    const [d, E] = [16, 6];
    const w = random(d * E, 3);
    for (let i = 0; i < d; i++) w[i * E + 4] = 0;
    const wt = tf.tensor2d(w, [d, E]);
    const t = routerSimilarityOnDevice(wt);
    const partials = t.dataSync() as Float32Array;
    tf.dispose([wt, t]);
    const mean = Array.from(partials).reduce((a, x) => a + x, 0) / ((E * (E - 1)) / 2);
    const ref = routerSimilarity(w, d, E);
    assert.ok(Math.abs(mean - ref) < 1e-6, `device ${mean} vs host ${ref}`);
  });
});

/**
 * Zero-computation experts (DESIGN.md section 2): a zero expert is the identity and costs no
 * FLOPs. A token routed only to zero experts comes out as sum_k g_k·x to the bit, and the FFN
 * row evaluations equal the slots that land on FFN experts.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { parseModelConfig } from '../../model/config';
import { initParams, paramSpecs, ParamStore } from '../../model/params';
import { moeLayer } from '../../model/moe/layer';
import { planDispatch, selectExperts } from '../../model/moe/router';
import { swiglu } from '../../model/ops';
import { RngStream } from '../../core/rng';
import { useTestBackend } from '../helpers/backend';

const c = parseModelConfig({
  vocabSize: 260,
  dModel: 8,
  nLayers: 1,
  attention: { type: 'gqa', nHeads: 2, nKvHeads: 1, headDim: 4 },
  ffnHidden: 8,
  moe: { nExperts: 4, nZeroExperts: 2, topK: 2, expertHidden: 6, routedScalingFactor: 2.5, targetFfnPerToken: 1 },
  maxSeqLen: 16,
  initStd: 0.3,
});
const N = c.moe.nExperts;
const E = N + c.moe.nZeroExperts;
const K = c.moe.topK;
const d = c.dModel;
const T = 8;
const prefix = 'model.layers.0.mlp';

/** Runs fn in a tf scope and returns host values (tf.tidy only returns tensors). */
function tidyHost<R>(fn: () => R): R {
  let r: R | undefined;
  tf.tidy(() => {
    r = fn();
  });
  return r as R;
}

function input(seed: number, sign?: (t: number) => number): Float32Array {
  const u = RngStream.of(seed, 'spec:u').normalArray(T * d, 1);
  if (sign) for (let t = 0; t < T; t++) u[t * d] = 2 * sign(t);
  return u;
}

/** A getter that records which parameters the MoE layer reads. */
function spyGetter(store: ParamStore): { P: (n: string) => tf.Tensor; read: Set<string> } {
  const read = new Set<string>();
  return { P: (n) => (read.add(n), store.get(n)), read };
}

function expertsRead(read: Set<string>): number[] {
  const out = new Set<number>();
  for (const n of read) {
    const m = /\.experts\.(\d+)\./.exec(n);
    if (m) out.add(Number(m[1]));
  }
  return [...out].sort((a, b) => a - b);
}

describe('model/moe zero experts', () => {
  let store: ParamStore;
  before(async () => {
    await useTestBackend();
    const values = initParams(c, 7);
    // Router: zero-expert columns answer +3·u[0], FFN-expert columns −3·u[0] (plus noise), so the
    // sign of u[t,0] decides whether token t goes to zero experts or to FFN experts.
    const wr = values.get(`${prefix}.router.classifier.weight`)!;
    for (let e = 0; e < E; e++) wr[e] = e < N ? -3 : 3;
    store = new ParamStore(paramSpecs(c), values);
  });
  after(() => store.dispose());

  it('a token routed only to zero experts comes out as sum_k g_k·x, bit for bit', () => {
    const bias = new Float32Array(E);
    bias.fill(10, N); // force both slots of every token onto the two zero experts
    const x = input(1);
    const { P } = spyGetter(store);
    const { out, probs, routing } = tidyHost(() => {
      const r = moeLayer(c, P, prefix, tf.tensor2d(x, [T, d]), bias, { B: 1, S: T });
      return { out: r.out.dataSync() as Float32Array, probs: r.probs.dataSync() as Float32Array, routing: r.routing };
    });
    for (let slot = 0; slot < T * K; slot++) assert.ok(routing.idx[slot] >= N, `slot ${slot} went to FFN expert ${routing.idx[slot]}`);
    for (let t = 0; t < T; t++) {
      // float32 reference from the same gates: g_k = fl(s·scale), fl(fl(g_0·x) + fl(g_1·x)).
      const g = [0, 1].map((k) => Math.fround(probs[t * E + routing.idx[t * K + k]] * c.moe.routedScalingFactor));
      for (let i = 0; i < d; i++) {
        const xi = x[t * d + i];
        const want = Math.fround(Math.fround(g[0] * xi) + Math.fround(g[1] * xi));
        assert.ok(Object.is(out[t * d + i], want), `token ${t} dim ${i}: ${out[t * d + i]} !== ${want}`);
      }
    }
  });

  it('when every slot is a zero expert, no FFN expert runs: ffnRows 0, no expert weight read, only the router matmul', async () => {
    const bias = new Float32Array(E);
    bias.fill(10, N);
    const { P, read } = spyGetter(store);
    let stats: { ffnRows: number; ffnCounts: Int32Array; zeroSlots: number } | undefined;
    const prof = await tf.profile(() => {
      tf.tidy(() => {
        stats = moeLayer(c, P, prefix, tf.tensor2d(input(2), [T, d]), bias, { B: 1, S: T }).stats;
      });
    });
    assert.equal(stats!.ffnRows, 0);
    assert.deepEqual([...stats!.ffnCounts], [0, 0, 0, 0]);
    assert.equal(stats!.zeroSlots, T * K);
    assert.deepEqual(expertsRead(read), []);
    const matmuls = prof.kernels.filter((k) => k.name === 'BatchMatMul' || k.name === '_FusedMatMul');
    assert.equal(matmuls.length, 1, `matmul kernels: ${matmuls.map((k) => JSON.stringify(k.inputShapes)).join(' ')}`);
  });

  it('in a mixed batch, ffnRows === sum(ffnCounts) === slots with idx < N, and the expert matmuls see exactly those rows', async () => {
    const x = input(3, (t) => (t % 2 === 0 ? 1 : -1)); // even tokens -> zero experts, odd -> FFN
    const { P, read } = spyGetter(store);
    let res: { stats: { ffnRows: number; ffnCounts: Int32Array }; idx: Int32Array } | undefined;
    const prof = await tf.profile(() => {
      tf.tidy(() => {
        const r = moeLayer(c, P, prefix, tf.tensor2d(x, [T, d]), new Float32Array(E), { B: 1, S: T });
        res = { stats: r.stats, idx: r.routing.idx };
      });
    });
    const { stats, idx } = res!;
    const ffnSlots = [...idx].filter((e) => e < N).length;
    assert.equal(ffnSlots, (T / 2) * K, 'the router signal splits the batch as intended');
    assert.equal(stats.ffnRows, ffnSlots);
    assert.equal(stats.ffnCounts.reduce((a, b) => a + b, 0), ffnSlots);
    const used = [...stats.ffnCounts.keys()].filter((e) => stats.ffnCounts[e] > 0);
    assert.deepEqual(expertsRead(read), used, 'only experts with routed rows read their weights');
    // Down projections [n, H] x [H, d]: one per used expert, rows summing to ffnRows.
    const H = c.moe.expertHidden;
    const downs = prof.kernels.filter((k) => k.name === 'BatchMatMul' && k.inputShapes[1]?.join() === [1, H, d].join());
    const downs2d = prof.kernels.filter((k) => k.name === 'BatchMatMul' && k.inputShapes[1]?.join() === [H, d].join());
    const all = downs.length ? downs : downs2d;
    assert.equal(all.length, used.length);
    const rows = all.reduce((n, k) => n + k.inputShapes[0][k.inputShapes[0].length - 2], 0);
    assert.equal(rows, stats.ffnRows);
  });

  it('a mixed batch equals the dense reference sum_k g_k·E_k(x) (zero-expert tokens exactly)', () => {
    const x = input(4, (t) => (t % 3 === 0 ? 1 : -1));
    const P = (n: string) => store.get(n);
    const { out, probs, idx } = tidyHost(() => {
      const r = moeLayer(c, P, prefix, tf.tensor2d(x, [T, d]), new Float32Array(E), { B: 1, S: T });
      return { out: r.out.dataSync() as Float32Array, probs: r.probs.dataSync() as Float32Array, idx: r.routing.idx };
    });
    for (let t = 0; t < T; t++) {
      const xt = x.subarray(t * d, (t + 1) * d);
      const want = new Float64Array(d);
      for (let k = 0; k < K; k++) {
        const e = idx[t * K + k];
        const g = Math.fround(probs[t * E + e] * c.moe.routedScalingFactor);
        const y = e >= N
          ? xt
          : tf.tidy(() => swiglu(tf.tensor2d(xt, [1, d]), P(`${prefix}.experts.${e}.gate_proj.weight`), P(`${prefix}.experts.${e}.up_proj.weight`), P(`${prefix}.experts.${e}.down_proj.weight`)).dataSync());
        for (let i = 0; i < d; i++) want[i] += g * y[i];
      }
      const allZero = [0, 1].every((k) => idx[t * K + k] >= N);
      for (let i = 0; i < d; i++) {
        const got = out[t * d + i];
        if (allZero) assert.ok(Math.abs(got - want[i]) <= 1e-6 * Math.abs(want[i]), `identity token ${t}: ${got} vs ${want[i]}`);
        else assert.ok(Math.abs(got - want[i]) <= 1e-5 * (1 + Math.abs(want[i])), `token ${t} dim ${i}: ${got} vs ${want[i]}`);
      }
    }
  });

  it('the dispatch plan gives each FFN expert one contiguous block of its tokens and sends zero slots to x', () => {
    const probs = new Float32Array([
      0.5, 0.1, 0.1, 0.1, 0.1, 0.1,
      0.1, 0.1, 0.1, 0.1, 0.3, 0.3,
      0.1, 0.4, 0.1, 0.1, 0.3, 0.0,
    ]);
    const r = selectExperts(probs, new Float32Array(E), 3, E, K, N);
    // Ties break toward the lower index: token 0 takes experts 0 then 1.
    assert.deepEqual([...r.idx], [0, 1, 4, 5, 1, 4]);
    assert.deepEqual([...r.ffnCounts], [1, 2, 0, 0]);
    assert.equal(r.zeroSlots, 3);
    const plan = planDispatch(r, N);
    assert.deepEqual([...plan.expertOffsets], [0, 1, 3, 3, 3]);
    assert.deepEqual([...plan.rowToken], [0, 0, 2]);
    assert.deepEqual([...plan.slotSource], [0, 1, 3 + 1, 3 + 1, 2, 3 + 2]);
  });
});

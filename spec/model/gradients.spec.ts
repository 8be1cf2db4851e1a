/**
 * Gradients of every parameter group match central finite differences on a tiny model, on the
 * cpu and wasm backends, with the routing held fixed (a perturbation that flips a top-K choice
 * makes the loss non-differentiable there, so such coordinates are detected and skipped).
 * And the two backends agree with each other (guards the wasm OneHot/float32 bug).
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { ModelConfig, parseModelConfig } from '../../model/config';
import { initParams, numel, paramSpecs, ParamStore } from '../../model/params';
import { weightedCrossEntropy } from '../../model/ops';
import { initialBiases } from '../../model/transformer';
import { moeLayer } from '../../model/moe/layer';
import { microbatchLoss } from '../../trainer/losses';
import { Batch } from '../../data/batch';
import { RngStream } from '../../core/rng';
import { BackendName } from '../../core/backend';
import { useTestBackend, withBackend } from '../helpers/backend';

const base = {
  vocabSize: 260,
  dModel: 16,
  nLayers: 1,
  ffnHidden: 16,
  moe: { nExperts: 4, nZeroExperts: 2, topK: 2, expertHidden: 8, routedScalingFactor: 2, targetFfnPerToken: 1.5, balanceAlpha: 0.1, expertGroups: 2 },
  maxSeqLen: 16,
  initStd: 0.3,
};
const mlaConfig = parseModelConfig({ ...base, layerType: 'scmoe', attention: { type: 'mla', nHeads: 2, qLoraRank: 8, kvLoraRank: 8, nopeHeadDim: 4, ropeHeadDim: 4, vHeadDim: 4 } });
const gqaConfig = parseModelConfig({ ...base, layerType: 'sequential', attention: { type: 'gqa', nHeads: 4, nKvHeads: 2, headDim: 4 } });

const B = 2;
const S = 4;

function batch(c: ModelConfig): Batch {
  const r = RngStream.of(5, 'spec:batch');
  const inputs = new Int32Array(B * S).map(() => r.int(c.vocabSize));
  const targets = new Int32Array(B * S).map(() => r.int(c.vocabSize));
  return { inputs, targets, lossMask: new Float32Array(B * S).fill(1), batchSize: B, seqLen: S };
}

/** Init with random (non-unit) norm weights so their gradients are generic. */
function values(c: ModelConfig, seed: number): Map<string, Float32Array> {
  const v = initParams(c, seed);
  for (const s of paramSpecs(c)) {
    if (s.group !== 'norm') continue;
    const noise = RngStream.of(seed, `spec:norm:${s.name}`).normalArray(numel(s.shape), 0.2);
    v.set(s.name, v.get(s.name)!.map((x, i) => x + noise[i]));
  }
  return v;
}

/** Spacing of float32 numbers at x. */
function ulp(x: number): number {
  return 2 ** (Math.floor(Math.log2(Math.abs(x))) - 23);
}

interface Eval {
  loss: number;
  routing: string;
}

function lossOf(c: ModelConfig, store: ParamStore, mb: Batch): tf.Scalar {
  return microbatchLoss(c, (n) => store.get(n), mb, { globalTokens: B * S, globalSeqs: B }, { biases: initialBiases(c), zLossCoef: 0.01 }).total;
}

/** Loss and the exact top-K selection of every layer (to detect a routing flip). */
function evaluate(c: ModelConfig, store: ParamStore, mb: Batch): Eval {
  const P = (n: string) => store.get(n);
  const biases = initialBiases(c);
  const sel: string[] = [];
  let loss = 0;
  tf.tidy(() => {
    const parts = microbatchLoss(c, P, mb, { globalTokens: B * S, globalSeqs: B }, {
      biases,
      zLossCoef: 0.01,
      moe: (l) => (u) => {
        const r = moeLayer(c, P, `model.layers.${l}.mlp`, u, biases[l], { B, S }, { balance: true });
        sel.push(r.routing.idx.join(','));
        return r;
      },
    });
    loss = parts.total.dataSync()[0];
  });
  return { loss, routing: sel.join('|') };
}

function analyticGrads(c: ModelConfig, store: ParamStore, mb: Batch): Map<string, Float32Array> {
  const vars = [...store.vars.values()];
  const { value, grads } = tf.variableGrads(() => lossOf(c, store, mb), vars);
  const out = new Map<string, Float32Array>();
  for (const s of store.specs) {
    const g = grads[store.get(s.name).name];
    out.set(s.name, g ? (g.dataSync() as Float32Array).slice() : new Float32Array(numel(s.shape)));
  }
  tf.dispose([value, ...Object.values(grads)]);
  return out;
}

interface FdReport {
  /** Parameters none of whose checked coordinates had |g| ≥ 10× the noise floor. */
  unpowered: string[];
  /** Parameters with at least one checked coordinate. */
  names: Set<string>;
  checked: number;
  skipped: number;
  worst: { name: string; i: number; g: number; fd: number; err: number };
}

/**
 * Central differences on the coordinates with the largest |gradient| of each parameter (and one
 * random coordinate), with h = eps·max(1, |w|) and the actual float32 step in the denominator.
 */
function fdCheck(c: ModelConfig, mb: Batch, seed: number, opts: { eps: number; rtol: number; ulpMul: number; perParam: number }): FdReport {
  const specs = paramSpecs(c);
  const vals = values(c, seed);
  const store = new ParamStore(specs, vals);
  try {
    const grads = analyticGrads(c, store, mb);
    const base0 = evaluate(c, store, mb);
    const powered = new Set<string>();
    const rep: FdReport = { unpowered: [], names: new Set(), checked: 0, skipped: 0, worst: { name: '', i: -1, g: 0, fd: 0, err: 0 } };
    for (const s of specs) {
      const g = grads.get(s.name)!;
      const w = vals.get(s.name)!;
      const order = [...g.keys()].sort((a, b) => Math.abs(g[b]) - Math.abs(g[a]));
      const coords = [...order.slice(0, opts.perParam), RngStream.of(seed, `spec:coord:${s.name}`).int(g.length)];
      for (const i of coords) {
        const w0 = w[i];
        const h = opts.eps * Math.max(1, Math.abs(w0));
        const at = (x: number): Eval => {
          const arr = w.slice();
          arr[i] = x;
          tf.tidy(() => store.get(s.name).assign(tf.tensor(arr, s.shape, 'float32')));
          return evaluate(c, store, mb);
        };
        const xp = Math.fround(w0 + h);
        const xm = Math.fround(w0 - h);
        const ep = at(xp);
        const em = at(xm);
        tf.tidy(() => store.get(s.name).assign(tf.tensor(w, s.shape, 'float32')));
        if (ep.routing !== base0.routing || em.routing !== base0.routing) {
          rep.skipped++;
          continue;
        }
        const fd = (ep.loss - em.loss) / (xp - xm);
        // Noise floor: the float32 loss is only known to ~an ulp, so fd carries ulpMul·ulp(L)/step.
        const atol = (opts.ulpMul * ulp(base0.loss)) / (xp - xm);
        const err = Math.abs(fd - g[i]) / (atol + opts.rtol * Math.max(Math.abs(fd), Math.abs(g[i])));
        if (Math.abs(g[i]) >= 10 * atol) powered.add(s.name);
        if (process.env.MOECAT_SPEC_DEBUG) console.log(s.name, i, g[i], fd, err.toFixed(3));
        rep.checked++;
        rep.names.add(s.name);
        if (err > rep.worst.err) rep.worst = { name: s.name, i, g: g[i], fd, err };
      }
    }
    rep.unpowered = specs.map((s) => s.name).filter((n) => !powered.has(n));
    return rep;
  } finally {
    store.dispose();
  }
}

describe('model gradients vs finite differences', function () {
  this.timeout(120000);
  before(useTestBackend);
  // Tolerance: |fd − g| ≤ 2e-2·max(|fd|, |g|) + 4·ulp(L)/(2h), with h = 1e-2·max(1, |w|).
  const opts = { eps: 1e-2, rtol: 2e-2, ulpMul: 4, perParam: 2 };
  for (const be of ['cpu', 'wasm'] as BackendName[]) {
    for (const [kind, c] of [['MLA + ScMoE', mlaConfig], ['GQA + sequential', gqaConfig]] as const) {
      it(`${be}: every parameter (${kind}) matches central differences`, async () => {
        const rep = await withBackend(be, () => fdCheck(c, batch(c), 11, opts));
        console.log(`      ${be} ${kind}: ${rep.checked} coordinates checked, ${rep.skipped} skipped (routing flipped), worst err/tol ${rep.worst.err.toFixed(2)} at ${rep.worst.name}[${rep.worst.i}]`);
        assert.ok(rep.worst.err <= 1, `worst ${JSON.stringify(rep.worst)}`);
        const missing = paramSpecs(c).map((s) => s.name).filter((n) => !rep.names.has(n));
        assert.deepEqual(missing, [], 'every parameter has a checked coordinate');
        // Experts that got no tokens have an exactly-zero gradient (FD is exactly 0 too); every
        // other parameter must have a coordinate whose gradient is well above the FD noise.
        assert.deepEqual(rep.unpowered.filter((n) => !/\.experts\./.test(n)), [], 'checks with power');
      });
    }
  }
});

describe('model gradients: wasm vs cpu', function () {
  this.timeout(120000);
  before(useTestBackend);

  it('weightedCrossEntropy value and gradient match the closed form on cpu and wasm', async () => {
    const z = [[0.1, 0.5, -0.3, 2.0], [1.0, 0.2, 0.0, -1.5], [0.3, 0.3, 0.3, 0.3]];
    const y = new Int32Array([1, 0, 3]);
    const w = new Float32Array([0.5, 0.25, 0.25]);
    let wantLoss = 0;
    const wantGrad = z.map((row, t) => {
      const m = Math.max(...row);
      const se = row.reduce((a, v) => a + Math.exp(v - m), 0);
      wantLoss += w[t] * (m + Math.log(se) - row[y[t]]);
      return row.map((v, j) => w[t] * (Math.exp(v - m) / se - (j === y[t] ? 1 : 0)));
    });
    for (const be of ['cpu', 'wasm'] as BackendName[]) {
      await withBackend(be, () => {
        const { value, grads } = tf.tidy(() => {
          const zt = tf.tensor2d(z);
          const f = (x: tf.Tensor) => weightedCrossEntropy(x as tf.Tensor2D, y, w);
          const r = tf.valueAndGrad(f)(zt);
          return { value: r.value, grads: r.grad };
        });
        const l = value.dataSync()[0];
        const g = grads.dataSync();
        tf.dispose([value, grads]);
        assert.ok(Math.abs(l - wantLoss) <= 1e-6 * wantLoss, `${be}: loss ${l} vs ${wantLoss}`);
        wantGrad.flat().forEach((v, i) => assert.ok(Math.abs(g[i] - v) <= 1e-6, `${be}: grad[${i}] ${g[i]} vs ${v}`));
      });
    }
  });

  it('full-model loss and gradients on wasm and cpu agree (same routing; rel. 1e-4 of each gradient norm)', async () => {
    const c = parseModelConfig({ ...base, nLayers: 2, layerType: 'scmoe', initStd: 0.1, attention: { type: 'mla', nHeads: 2, qLoraRank: 8, kvLoraRank: 8, nopeHeadDim: 4, ropeHeadDim: 4, vHeadDim: 4 } });
    const mb = batch(c);
    const run = (be: BackendName) =>
      withBackend(be, () => {
        const store = new ParamStore(paramSpecs(c), values(c, 3));
        const e = evaluate(c, store, mb);
        const g = analyticGrads(c, store, mb);
        store.dispose();
        return { e, g };
      });
    const a = await run('cpu');
    const b = await run('wasm');
    assert.equal(a.e.routing, b.e.routing, 'routing differs between backends');
    assert.ok(Math.abs(a.e.loss - b.e.loss) <= 1e-5 * a.e.loss, `loss ${a.e.loss} vs ${b.e.loss}`);
    let worst = 0;
    for (const [name, ga] of a.g) {
      const gb = b.g.get(name)!;
      let diff = 0;
      let norm = 0;
      for (let i = 0; i < ga.length; i++) {
        diff += (ga[i] - gb[i]) ** 2;
        norm += ga[i] ** 2;
      }
      if (norm === 0) {
        assert.equal(diff, 0, `${name}: zero on cpu, nonzero on wasm`);
        continue;
      }
      const rel = Math.sqrt(diff / norm);
      worst = Math.max(worst, rel);
      assert.ok(rel <= 1e-4, `${name}: |g_cpu − g_wasm|/|g_cpu| = ${rel}`);
    }
    console.log(`      worst relative gradient difference wasm vs cpu: ${worst.toExponential(2)}`);
  });
});

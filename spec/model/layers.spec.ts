/**
 * The layer equations of DESIGN.md section 2, checked against direct references:
 * ScMoE and sequential layers composed in the test from attention(), swiglu, rmsNorm and
 * moeLayer; MLA and GQA against a float64 host implementation written from the equations
 * (including MLA's sqrt(d_model/lora) corrections and (d_nope+d_rope)^-0.5 softmax scale);
 * and causal masking on the whole model.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { latentNormEps, ModelConfig, parseModelConfig } from '../../model/config';
import { initParams, numel, paramSpecs, ParamStore } from '../../model/params';
import { attention, AttnContext, causalMask, ropeDim } from '../../model/attention';
import { gatherRows, rmsNorm, ropeTables, swiglu } from '../../model/ops';
import { moeLayer } from '../../model/moe/layer';
import { scmoeLayer } from '../../model/scmoeLayer';
import { forward } from '../../model/transformer';
import { RngStream } from '../../core/rng';
import { useTestBackend } from '../helpers/backend';

const base = {
  vocabSize: 260,
  dModel: 16,
  nLayers: 1,
  ffnHidden: 16,
  moe: { nExperts: 4, nZeroExperts: 2, topK: 2, expertHidden: 8, routedScalingFactor: 2, targetFfnPerToken: 1.5 },
  maxSeqLen: 16,
  initStd: 0.5,
};
const mla = { type: 'mla', nHeads: 2, qLoraRank: 4, kvLoraRank: 8, nopeHeadDim: 4, ropeHeadDim: 4, vHeadDim: 6 } as const;
const gqa = { type: 'gqa', nHeads: 4, nKvHeads: 2, headDim: 4 } as const;
const B = 2;
const S = 5;
const T = B * S;

function tidyHost<R>(fn: () => R): R {
  let r: R | undefined;
  tf.tidy(() => {
    r = fn();
  });
  return r as R;
}

/** Params with random norm weights (so a missing or misplaced norm weight shows). */
function values(c: ModelConfig, seed: number): Map<string, Float32Array> {
  const v = initParams(c, seed);
  for (const s of paramSpecs(c)) {
    if (s.group !== 'norm') continue;
    const noise = RngStream.of(seed, `spec:norm:${s.name}`).normalArray(numel(s.shape), 0.3);
    v.set(s.name, v.get(s.name)!.map((x, i) => x + noise[i]));
  }
  return v;
}

function context(c: ModelConfig): AttnContext {
  const r = ropeTables(S, ropeDim(c), c.ropeBase);
  const half = ropeDim(c) / 2;
  return { B, S, cos: tf.tensor2d(r.cos, [S, half]), sin: tf.tensor2d(r.sin, [S, half]), mask: causalMask(S) };
}

function bitsEqual(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) assert.ok(Object.is(a[i], b[i]), `${what}[${i}]: ${a[i]} !== ${b[i]}`);
}

// ---- float64 host reference for attention, written from the equations ----

type M = Float64Array[];
function mat(v: Float32Array, rows: number, cols: number): M {
  return Array.from({ length: rows }, (_, r) => Float64Array.from(v.subarray(r * cols, (r + 1) * cols)));
}
function mm(a: M, w: M): M {
  return a.map((row) => {
    const out = new Float64Array(w[0].length);
    row.forEach((x, k) => w[k].forEach((y, j) => (out[j] += x * y)));
    return out;
  });
}
function rms(a: M, w: Float32Array, eps: number): M {
  return a.map((row) => {
    const r = 1 / Math.sqrt(row.reduce((s, x) => s + x * x, 0) / row.length + eps);
    return row.map((x, i) => x * r * w[i]);
  });
}
/** Rotate-half RoPE of one vector at position pos. */
function rope(v: Float64Array, pos: number, base: number): Float64Array {
  const D = v.length;
  const h = D / 2;
  const out = new Float64Array(D);
  for (let i = 0; i < h; i++) {
    const a = pos * Math.pow(base, (-2 * i) / D);
    out[i] = v[i] * Math.cos(a) - v[i + h] * Math.sin(a);
    out[i + h] = v[i + h] * Math.cos(a) + v[i] * Math.sin(a);
  }
  return out;
}
/** Causal softmax attention per sequence and head from per-token q, k, v vectors. */
function attend(q: (t: number, h: number) => Float64Array, k: (t: number, h: number) => Float64Array, v: (t: number, h: number) => Float64Array, H: number, dv: number, scale: number): M {
  const out: M = Array.from({ length: T }, () => new Float64Array(H * dv));
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < S; i++) {
        const qi = q(b * S + i, h);
        const sc = Array.from({ length: i + 1 }, (_, j) => scale * k(b * S + j, h).reduce((s, x, n) => s + x * qi[n], 0));
        const mx = Math.max(...sc);
        const p = sc.map((x) => Math.exp(x - mx));
        const z = p.reduce((a, x) => a + x, 0);
        for (let j = 0; j <= i; j++) v(b * S + j, h).forEach((x, n) => (out[b * S + i][h * dv + n] += (p[j] / z) * x));
      }
    }
  }
  return out;
}

interface MlaVariant {
  qScale?: boolean;
  kvScale?: boolean;
  softmaxScale?: 'nope+rope' | 'nope';
}

function mlaRef(c: ModelConfig, w: (n: string) => Float32Array, p: string, x: M, v: MlaVariant = {}): M {
  const a = c.attention;
  if (a.type !== 'mla') throw new Error('mla only');
  const { nHeads: H, nopeHeadDim: dn, ropeHeadDim: dr, vHeadDim: dv, qLoraRank: ql, kvLoraRank: kl } = a;
  const d = c.dModel;
  const qs = v.qScale === false ? 1 : Math.sqrt(d / ql);
  const ks = v.kvScale === false ? 1 : Math.sqrt(d / kl);
  const qa = rms(mm(x, mat(w(`${p}.q_a_proj.weight`), d, ql)), w(`${p}.q_a_layernorm.weight`), latentNormEps(c));
  const q = mm(qa, mat(w(`${p}.q_b_proj.weight`), ql, H * (dn + dr))).map((r) => r.map((y) => y * qs));
  const kva = mm(x, mat(w(`${p}.kv_a_proj_with_mqa.weight`), d, kl + dr));
  const latent = rms(kva.map((r) => r.slice(0, kl)), w(`${p}.kv_a_layernorm.weight`), latentNormEps(c)).map((r) => r.map((y) => y * ks));
  const kvb = mm(latent, mat(w(`${p}.kv_b_proj.weight`), kl, H * (dn + dv)));
  const pos = (t: number) => t % S;
  const qv = (t: number, h: number) => {
    const qh = q[t].slice(h * (dn + dr), (h + 1) * (dn + dr));
    return Float64Array.from([...qh.slice(0, dn), ...rope(qh.slice(dn), pos(t), c.ropeBase)]);
  };
  const kv = (t: number, h: number) => Float64Array.from([...kvb[t].slice(h * (dn + dv), h * (dn + dv) + dn), ...rope(kva[t].slice(kl), pos(t), c.ropeBase)]);
  const vv = (t: number, h: number) => kvb[t].slice(h * (dn + dv) + dn, (h + 1) * (dn + dv));
  const scale = 1 / Math.sqrt(v.softmaxScale === 'nope' ? dn : dn + dr);
  return mm(attend(qv, kv, vv, H, dv, scale), mat(w(`${p}.o_proj.weight`), H * dv, d));
}

function gqaRef(c: ModelConfig, w: (n: string) => Float32Array, p: string, x: M): M {
  const a = c.attention;
  if (a.type !== 'gqa') throw new Error('gqa only');
  const { nHeads: H, nKvHeads: Hk, headDim: D } = a;
  const d = c.dModel;
  const q = mm(x, mat(w(`${p}.q_proj.weight`), d, H * D));
  const k = mm(x, mat(w(`${p}.k_proj.weight`), d, Hk * D));
  const v = mm(x, mat(w(`${p}.v_proj.weight`), d, Hk * D));
  const g = H / Hk;
  const qv = (t: number, h: number) => rope(q[t].slice(h * D, (h + 1) * D), t % S, c.ropeBase);
  const kv = (t: number, h: number) => rope(k[t].slice(Math.floor(h / g) * D, (Math.floor(h / g) + 1) * D), t % S, c.ropeBase);
  const vv = (t: number, h: number) => v[t].slice(Math.floor(h / g) * D, (Math.floor(h / g) + 1) * D);
  return mm(attend(qv, kv, vv, H, D, 1 / Math.sqrt(D)), mat(w(`${p}.o_proj.weight`), H * D, d));
}

/** max |a − ref| / max |ref| */
function relErr(a: Float32Array, ref: M): number {
  let num = 0;
  let den = 0;
  ref.forEach((row, t) => row.forEach((y, i) => {
    num = Math.max(num, Math.abs(a[t * row.length + i] - y));
    den = Math.max(den, Math.abs(y));
  }));
  return num / den;
}

describe('model layers against direct references', () => {
  before(useTestBackend);

  function setup(attn: typeof mla | typeof gqa, layerType: 'scmoe' | 'sequential' = 'scmoe') {
    const c = parseModelConfig({ ...base, layerType, attention: attn });
    const vals = values(c, 21);
    const store = new ParamStore(paramSpecs(c), vals);
    const x = RngStream.of(21, 'spec:x').normalArray(T * c.dModel, 1);
    return { c, vals, store, x, P: (n: string) => store.get(n) as tf.Tensor };
  }

  it('MLA equals the host reference with the sqrt(d/q_lora), sqrt(d/kv_lora) and (d_nope+d_rope)^-0.5 scales (rel. 1e-5)', () => {
    const { c, vals, store, x, P } = setup(mla);
    const got = tidyHost(() => attention(c, P, 'model.layers.0.self_attn.0', tf.tensor2d(x, [T, c.dModel]), context(c)).out.dataSync() as Float32Array);
    store.dispose();
    const w = (n: string) => vals.get(n)!;
    const xm = mat(x, T, c.dModel);
    const p = 'model.layers.0.self_attn.0';
    const err = relErr(got, mlaRef(c, w, p, xm));
    assert.ok(err < 1e-5, `MLA vs reference: ${err}`);
    // The test has power: dropping any one correction moves the output far beyond the tolerance.
    for (const v of [{ qScale: false }, { kvScale: false }, { softmaxScale: 'nope' }] as MlaVariant[]) {
      const e = relErr(got, mlaRef(c, w, p, xm, v));
      assert.ok(e > 1e-2, `variant ${JSON.stringify(v)} is indistinguishable (${e})`);
    }
  });

  it('GQA (4 query heads sharing 2 KV heads) equals the host reference (rel. 1e-5)', () => {
    const { c, vals, store, x, P } = setup(gqa);
    const got = tidyHost(() => attention(c, P, 'model.layers.0.self_attn.1', tf.tensor2d(x, [T, c.dModel]), context(c)).out.dataSync() as Float32Array);
    store.dispose();
    const err = relErr(got, gqaRef(c, (n) => vals.get(n)!, 'model.layers.0.self_attn.1', mat(x, T, c.dModel)));
    assert.ok(err < 1e-5, `GQA vs reference: ${err}`);
  });

  it('the ScMoE layer computes h1 = x+Attn0(RMS x), u = RMS h1, m = MoE(u), h2 = h1+FFN0(u), h3 = h2+Attn1(RMS h2), y = h3+FFN1(RMS h3)+m, bit for bit', () => {
    const { c, store, x, P } = setup(mla, 'scmoe');
    const bias = new Float32Array([0, 0.01, 0, 0, 0, 0.02]);
    const p = 'model.layers.0';
    const [got, want, moeOnly, mOut] = tidyHost(() => {
      const ctx = context(c);
      const xt = tf.tensor2d(x, [T, c.dModel]);
      const got = scmoeLayer(c, P, 0, xt, ctx, bias).out.dataSync() as Float32Array;
      const norm = (t: tf.Tensor, n: string) => rmsNorm(t, P(`${p}.${n}.weight`), c.rmsEps) as tf.Tensor2D;
      const ffn = (t: tf.Tensor2D, j: number) => swiglu(t, P(`${p}.mlps.${j}.gate_proj.weight`), P(`${p}.mlps.${j}.up_proj.weight`), P(`${p}.mlps.${j}.down_proj.weight`));
      const h1 = tf.add(xt, attention(c, P, `${p}.self_attn.0`, norm(xt, 'input_layernorm.0'), ctx).out) as tf.Tensor2D;
      const u = norm(h1, 'post_attention_layernorm.0');
      const m = moeLayer(c, P, `${p}.mlp`, u, bias, { B, S }).out;
      const h2 = tf.add(h1, ffn(u, 0)) as tf.Tensor2D;
      const h3 = tf.add(h2, attention(c, P, `${p}.self_attn.1`, norm(h2, 'input_layernorm.1'), ctx).out) as tf.Tensor2D;
      const y = tf.add(tf.add(h3, ffn(norm(h3, 'post_attention_layernorm.1'), 1)), m);
      // With the MoE branch replaced by zeros, y differs by the shortcut term m (up to rounding of y).
      const zero = scmoeLayer(c, P, 0, xt, ctx, bias, { moe: (uu) => ({ ...moeLayer(c, P, `${p}.mlp`, uu, bias, { B, S }), out: tf.zerosLike(uu) }) }).out;
      return [got, y.dataSync() as Float32Array, tf.sub(tf.tensor2d(got, [T, c.dModel]), zero).dataSync() as Float32Array, m.dataSync() as Float32Array];
    });
    store.dispose();
    bitsEqual(got, want, 'scmoe');
    const yMax = Math.max(...got.map(Math.abs));
    assert.ok(mOut.some((v) => v !== 0), 'the MoE branch contributes');
    mOut.forEach((v, i) => assert.ok(Math.abs(moeOnly[i] - v) <= 1e-6 * yMax, `shortcut term [${i}]: ${moeOnly[i]} vs m ${v}`));
  });

  it('the sequential layer computes h2 = h1 + MoE(u) in FFN0\'s place and y = h3 + FFN1(RMS h3), bit for bit', () => {
    const { c, store, x, P } = setup(gqa, 'sequential');
    assert.ok(!store.has('model.layers.0.mlps.0.gate_proj.weight'), 'a sequential layer has no FFN0');
    const bias = new Float32Array(6);
    const p = 'model.layers.0';
    const [got, want] = tidyHost(() => {
      const ctx = context(c);
      const xt = tf.tensor2d(x, [T, c.dModel]);
      const got = scmoeLayer(c, P, 0, xt, ctx, bias).out.dataSync() as Float32Array;
      const norm = (t: tf.Tensor, n: string) => rmsNorm(t, P(`${p}.${n}.weight`), c.rmsEps) as tf.Tensor2D;
      const h1 = tf.add(xt, attention(c, P, `${p}.self_attn.0`, norm(xt, 'input_layernorm.0'), ctx).out) as tf.Tensor2D;
      const u = norm(h1, 'post_attention_layernorm.0');
      const h2 = tf.add(h1, moeLayer(c, P, `${p}.mlp`, u, bias, { B, S }).out) as tf.Tensor2D;
      const h3 = tf.add(h2, attention(c, P, `${p}.self_attn.1`, norm(h2, 'input_layernorm.1'), ctx).out) as tf.Tensor2D;
      const y = tf.add(h3, swiglu(norm(h3, 'post_attention_layernorm.1'), P(`${p}.mlps.1.gate_proj.weight`), P(`${p}.mlps.1.up_proj.weight`), P(`${p}.mlps.1.down_proj.weight`)));
      return [got, y.dataSync() as Float32Array];
    });
    store.dispose();
    bitsEqual(got, want, 'sequential');
  });

  it('forward = lm_head(RMS(layers(embed(tokens)))) with untied embeddings, bit for bit', () => {
    const { c, store, P } = setup(mla);
    const tokens = new Int32Array(T).map((_, i) => (i * 37 + 5) % c.vocabSize);
    const bias = [new Float32Array(6)];
    const [got, want] = tidyHost(() => {
      const got = forward(c, P, tokens, B, S, { biases: bias }).logits!.dataSync() as Float32Array;
      const e = gatherRows(P('model.embed_tokens.weight') as tf.Tensor2D, tokens);
      const y = scmoeLayer(c, P, 0, e, context(c), bias[0]).out;
      const logits = tf.matMul(rmsNorm(y, P('model.norm.weight'), c.rmsEps) as tf.Tensor2D, P('lm_head.weight') as tf.Tensor2D);
      return [got, logits.dataSync() as Float32Array];
    });
    store.dispose();
    bitsEqual(got, want, 'logits');
  });

  for (const [name, attn] of [['MLA', mla], ['GQA', gqa]] as const) {
    it(`causal masking (${name}): logits at positions ≤ i are bitwise unchanged when tokens after i change`, () => {
      const c = parseModelConfig({ ...base, nLayers: 2, attention: attn });
      const store = new ParamStore(paramSpecs(c), values(c, 5));
      const P = (n: string) => store.get(n) as tf.Tensor;
      const L = 8;
      const i = 3;
      const a = new Int32Array(L).map((_, t) => (t * 31 + 7) % c.vocabSize);
      const b = a.map((v, t) => (t > i ? (v + 100 + t) % c.vocabSize : v));
      const run = (tok: Int32Array) => tidyHost(() => forward(c, P, tok, 1, L, { biases: [new Float32Array(6), new Float32Array(6)] }).logits!.dataSync() as Float32Array);
      const la = run(a);
      const lb = run(b);
      store.dispose();
      const V = c.vocabSize;
      bitsEqual(la.subarray(0, (i + 1) * V), lb.subarray(0, (i + 1) * V), 'prefix logits');
      for (let t = i + 1; t < L; t++) {
        assert.ok(la.subarray(t * V, (t + 1) * V).some((v, j) => v !== lb[t * V + j]), `position ${t} should see its changed token`);
      }
    });
  }
});

/**
 * Batch-1 decode in plain JS with activation sparsity (CHESS, arXiv 2409.01366). One call of
 * `step` runs one token through the model at position `past`, growing a host KV cache. Each
 * layer is model/layer.ts's `runLayer` over host Float32Arrays; the attention, FFN and MoE
 * hooks mirror model/attention.ts, model/ops.ts and model/moe/layer.ts op for op
 * (RMSNorm with eps inside the root, rotate-half RoPE, MLA latents and scales, GQA head
 * groups, softmax router over N+Z experts with the expert bias used for selection only, zero
 * experts as identity); spec/sparse checks it against model forward.
 *
 * Sparsity (plan != null): FFN gate activations below their threshold are dropped (CHESS
 * channel-wise or CATS layer-wise), and with `attention` the q_proj/q_a_proj and o_proj
 * inputs below their layer threshold are dropped; the k/v projections stay dense (selective
 * sparsification, section 3.3). Without a plan every matVec runs densely in the same kernels.
 */
import { latentNormEps, ModelConfig } from '../../model/config';
import { ropeDim } from '../../model/attention';
import { selectExperts } from '../../model/moe/router';
import { MoeResult, runLayer } from '../../model/layer';
import { HostModel } from './hostModel';
import { activeByThreshold, ffnDense, ffnScratch, ffnSparse, FfnScratch, matVec, matVecRows } from './kernels';
import { SparsityPlan } from './thresholds';
import { jsKernels } from '../decodeKernels';

/** Observes activations during a dense pass (calibration statistics). */
export interface ActivationObserver {
  /** An FFN ran: a_g = silu(x·Wg) and a_u = x·Wu, length = its hidden width. */
  ffn?(prefix: string, ag: Float32Array, au: Float32Array): void;
  /** An attention block's q-projection input (`q`) or o_proj input (`o`). */
  attention?(prefix: string, which: 'q' | 'o', x: Float32Array): void;
}

/** Channels kept and seen, for realised sparsity. */
export interface SparsityCounters {
  ffnKept: number;
  ffnTotal: number;
  attnKept: number;
  attnTotal: number;
  ffnExpertRows: number;
  tokens: number;
}

export function newCounters(): SparsityCounters {
  return { ffnKept: 0, ffnTotal: 0, attnKept: 0, attnTotal: 0, ffnExpertRows: 0, tokens: 0 };
}

interface BlockCache {
  k: Float32Array; // [maxSeq, H, dk]
  v: Float32Array; // [maxSeq, H, dv]
}

/** Host KV caches for one sequence: keys/values per head, for every attention block. */
export class HostKvCache {
  readonly blocks: BlockCache[];
  length = 0;
  constructor(c: ModelConfig) {
    const a = c.attention;
    const [Hk, dk, dv] = a.type === 'mla' ? [a.nHeads, a.nopeHeadDim + a.ropeHeadDim, a.vHeadDim] : [a.nKvHeads, a.headDim, a.headDim];
    this.blocks = Array.from({ length: 2 * c.nLayers }, () => ({ k: new Float32Array(c.maxSeqLen * Hk * dk), v: new Float32Array(c.maxSeqLen * Hk * dv) }));
  }
}

function rmsNormInto(x: Float32Array, w: Float32Array, eps: number, n: number, out: Float32Array): Float32Array {
  let ms = 0;
  for (let i = 0; i < n; i++) ms += x[i] * x[i];
  const r = 1 / Math.sqrt(ms / n + eps);
  for (let i = 0; i < n; i++) out[i] = x[i] * r * w[i];
  return out;
}

/** Rotate-half RoPE in place on v[off .. off+dim). */
function rope(v: Float32Array, off: number, dim: number, cos: Float32Array, sin: Float32Array): void {
  const half = dim / 2;
  for (let i = 0; i < half; i++) {
    const x1 = v[off + i];
    const x2 = v[off + half + i];
    v[off + i] = x1 * cos[i] - x2 * sin[i];
    v[off + half + i] = x2 * cos[i] + x1 * sin[i];
  }
}

/** The batch-1 decoder: scratch buffers sized once per model. */
export class SparseDecoder {
  readonly c: ModelConfig;
  private readonly fs: FfnScratch;
  private readonly buf: Record<string, Float32Array> = {};
  private readonly idx: Int32Array;
  counters = newCounters();

  constructor(readonly m: HostModel) {
    this.c = m.config;
    const c = this.c;
    this.fs = ffnScratch(Math.max(c.ffnHidden, c.moe.expertHidden));
    const big = Math.max(c.dModel, c.vocabSize, c.ffnHidden, c.maxSeqLen, 4096);
    this.idx = new Int32Array(big);
    for (const n of ['x', 'n', 'ffnOut', 'moe', 'tmp', 'q', 'qa', 'kv', 'kvb', 'o', 'attnOut', 'scores', 'logits', 'probs']) this.buf[n] = new Float32Array(big);
  }

  private buffer(name: string, n: number): Float32Array {
    let b = this.buf[name];
    if (!b || b.length < n) b = this.buf[name] = new Float32Array(n);
    return b;
  }

  /** Linear layer on an input that may be sparsified at threshold tau (null = dense). */
  private linear(x: Float32Array, W: Float32Array, inDim: number, outDim: number, y: Float32Array, tau: number | null): void {
    if (tau === null) {
      matVec(x, W, inDim, outDim, y);
      return;
    }
    const n = activeByThreshold(x, inDim, tau, this.idx);
    this.counters.attnKept += n;
    this.counters.attnTotal += inDim;
    matVecRows(x, W, this.idx, n, outDim, y);
  }

  private ffn(prefix: string, x: Float32Array, y: Float32Array, plan: SparsityPlan | null, obs?: ActivationObserver): void {
    const w = this.m.ffn.get(prefix)!;
    if (plan?.ffn) {
      const t = plan.thresholds.ffn.get(prefix)!;
      const tau = plan.ffn === 'chess' ? t.chess : this.catsTau(prefix, t.cats, w.h);
      this.counters.ffnKept += ffnSparse(w, x, tau, this.fs, y);
      this.counters.ffnTotal += w.h;
      return;
    }
    ffnDense(w, x, this.fs, y);
    obs?.ffn?.(prefix, this.fs.ag.subarray(0, w.h), this.fs.au.subarray(0, w.h));
  }

  private catsCache = new Map<string, Float32Array>();
  private catsTau(prefix: string, tau: number, h: number): Float32Array {
    let t = this.catsCache.get(prefix);
    if (!t || t[0] !== tau) {
      t = new Float32Array(h).fill(tau);
      this.catsCache.set(prefix, t);
    }
    return t;
  }

  private attention(prefix: string, block: BlockCache, x: Float32Array, pos: number, cos: Float32Array, sin: Float32Array, out: Float32Array, plan: SparsityPlan | null, obs?: ActivationObserver): void {
    const c = this.c;
    const a = c.attention;
    const W = (n: string) => this.m.w(`${prefix}.${n}.weight`);
    const th = plan?.attention ? plan.thresholds.attention.get(prefix)! : null;
    const d = c.dModel;
    obs?.attention?.(prefix, 'q', x.subarray(0, d));
    let H: number, Hk: number, dk: number, dv: number, dq: number, dr: number;
    const q = this.buffer('q', a.nHeads * (a.type === 'mla' ? a.nopeHeadDim + a.ropeHeadDim : a.headDim));
    if (a.type === 'gqa') {
      H = a.nHeads; Hk = a.nKvHeads; dk = a.headDim; dv = a.headDim; dq = a.headDim; dr = a.headDim;
      this.linear(x, W('q_proj'), d, H * dk, q, th ? th.q : null);
      for (let h = 0; h < H; h++) rope(q, h * dk, dk, cos, sin);
      const kRow = block.k.subarray(pos * Hk * dk, (pos + 1) * Hk * dk);
      matVec(x, W('k_proj'), d, Hk * dk, kRow);
      for (let h = 0; h < Hk; h++) rope(kRow, h * dk, dk, cos, sin);
      matVec(x, W('v_proj'), d, Hk * dv, block.v.subarray(pos * Hk * dv, (pos + 1) * Hk * dv));
    } else {
      H = a.nHeads; Hk = H; dr = a.ropeHeadDim; dk = a.nopeHeadDim + dr; dv = a.vHeadDim; dq = dk;
      const qa = this.buffer('qa', a.qLoraRank);
      this.linear(x, W('q_a_proj'), d, a.qLoraRank, qa, th ? th.q : null);
      rmsNormInto(qa, W('q_a_layernorm'), latentNormEps(c), a.qLoraRank, qa);
      matVec(qa, W('q_b_proj'), a.qLoraRank, H * dk, q);
      const qs = Math.fround(Math.sqrt(d / a.qLoraRank));
      for (let i = 0; i < H * dk; i++) q[i] *= qs;
      for (let h = 0; h < H; h++) rope(q, h * dk + a.nopeHeadDim, dr, cos, sin);
      const kv = this.buffer('kv', a.kvLoraRank + dr);
      matVec(x, W('kv_a_proj_with_mqa'), d, a.kvLoraRank + dr, kv);
      rope(kv, a.kvLoraRank, dr, cos, sin);
      const lat = this.buffer('tmp', a.kvLoraRank);
      rmsNormInto(kv, W('kv_a_layernorm'), latentNormEps(c), a.kvLoraRank, lat);
      const ls = Math.fround(Math.sqrt(d / a.kvLoraRank));
      for (let i = 0; i < a.kvLoraRank; i++) lat[i] *= ls;
      const kvb = this.buffer('kvb', H * (a.nopeHeadDim + dv));
      matVec(lat, W('kv_b_proj'), a.kvLoraRank, H * (a.nopeHeadDim + dv), kvb);
      const kRow = block.k.subarray(pos * H * dk, (pos + 1) * H * dk);
      const vRow = block.v.subarray(pos * H * dv, (pos + 1) * H * dv);
      const stride = a.nopeHeadDim + dv;
      for (let h = 0; h < H; h++) {
        for (let i = 0; i < a.nopeHeadDim; i++) kRow[h * dk + i] = kvb[h * stride + i];
        for (let i = 0; i < dr; i++) kRow[h * dk + a.nopeHeadDim + i] = kv[a.kvLoraRank + i];
        for (let i = 0; i < dv; i++) vRow[h * dv + i] = kvb[h * stride + a.nopeHeadDim + i];
      }
    }
    void dr;
    // Softmax attention of each query head over positions 0..pos of its KV head (dq = dk here):
    // the batched host decode path's plain-JS kernel, so both decoders attend with the same bits.
    const o = this.buffer('o', H * dv);
    jsKernels.attend(q, block.k, block.v, o, pos + 1, H, Hk, dk, dv, 1 / Math.sqrt(dq));
    obs?.attention?.(prefix, 'o', o.subarray(0, H * dv));
    this.linear(o, W('o_proj'), H * dv, d, out, th ? th.o : null);
  }

  private moe(l: number, u: Float32Array, out: Float32Array, plan: SparsityPlan | null, obs?: ActivationObserver): void {
    const c = this.c;
    const d = c.dModel;
    const N = c.moe.nExperts;
    const E = N + c.moe.nZeroExperts;
    const K = c.moe.topK;
    const p = `model.layers.${l}.mlp`;
    const probs = this.buffer('probs', E);
    matVec(u, this.m.w(`${p}.router.classifier.weight`), d, E, probs);
    let max = -Infinity;
    for (let e = 0; e < E; e++) if (probs[e] > max) max = probs[e];
    let z = 0;
    for (let e = 0; e < E; e++) z += probs[e] = Math.exp(probs[e] - max);
    for (let e = 0; e < E; e++) probs[e] /= z;
    const r = selectExperts(probs.subarray(0, E), this.m.biases[l], 1, E, K, N);
    out.fill(0, 0, d);
    const tmp = this.buffer('tmp', d);
    for (let k = 0; k < K; k++) {
      const e = r.idx[k];
      const gate = Math.fround(probs[e] * c.moe.routedScalingFactor);
      if (e < N) {
        this.ffn(`${p}.experts.${e}`, u, tmp, plan, obs);
        this.counters.ffnExpertRows++;
        for (let i = 0; i < d; i++) out[i] += gate * tmp[i];
      } else {
        for (let i = 0; i < d; i++) out[i] += gate * u[i];
      }
    }
  }

  /** Runs token `id` at position cache.length; returns the logits (a view into a reused buffer). */
  step(id: number, cache: HostKvCache, plan: SparsityPlan | null, obs?: ActivationObserver): Float32Array {
    const c = this.c;
    const d = c.dModel;
    const pos = cache.length;
    if (pos >= c.maxSeqLen) throw new Error(`position ${pos} is past the context of ${c.maxSeqLen}`);
    const dim = ropeDim(c);
    const half = dim / 2;
    const cos = new Float32Array(half);
    const sin = new Float32Array(half);
    for (let i = 0; i < half; i++) {
      const ang = pos * Math.pow(c.ropeBase, (-2 * i) / dim);
      cos[i] = Math.cos(ang);
      sin[i] = Math.sin(ang);
    }
    const x = this.buffer('x', d);
    x.set(this.m.w('model.embed_tokens.weight').subarray(id * d, (id + 1) * d));
    const n = this.buffer('n', d);
    const a = this.buffer('attnOut', d);
    const f = this.buffer('ffnOut', d);
    const m = this.buffer('moe', d);
    const u = new Float32Array(d);
    const add = (acc: Float32Array, y: Float32Array) => {
      for (let i = 0; i < d; i++) acc[i] += y[i];
      return acc;
    };
    for (let l = 0; l < c.nLayers; l++) {
      const p = `model.layers.${l}`;
      // The residual stream stays in x (adds run in place); u = RMS(h1) has a buffer of its
      // own (the MoE and FFN0 read it), the other norms share n.
      runLayer<Float32Array, MoeResult<Float32Array>>(c.layerType, x, {
        norm: (t, name) => rmsNormInto(t, this.m.w(`${p}.${name}.weight`), c.rmsEps, d, name === 'post_attention_layernorm.0' ? u : n),
        attention: (t, j) => {
          this.attention(`${p}.self_attn.${j}`, cache.blocks[2 * l + j], t, pos, cos, sin, a, plan, obs);
          return a;
        },
        ffn: (t, j) => {
          this.ffn(`${p}.mlps.${j}`, t, f, plan, obs);
          return f;
        },
        moe: (t) => {
          this.moe(l, t, m, plan, obs);
          return { out: m };
        },
        add,
      });
    }
    cache.length = pos + 1;
    this.counters.tokens++;
    const h = rmsNormInto(x, this.m.w('model.norm.weight'), c.rmsEps, d, n);
    return matVec(h, this.m.w('lm_head.weight'), d, c.vocabSize, this.buffer('logits', c.vocabSize)).subarray(0, c.vocabSize);
  }
}

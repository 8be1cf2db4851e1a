/**
 * The serving engine's batched decode path on host Float32Arrays (issue 28). One `run` takes M
 * rows (token, position, sequence) from any number of sequences and runs them through the
 * model at once: every matrix product is one call over all M rows (decodeKernels.ts: the
 * native addon's decodeMatmul streams each weight once per step for all rows), each row's
 * attention runs against its own sequence's cache, the router picks experts per row and each
 * FFN expert runs once on the rows routed to it (zero experts run nothing), and lm_head runs
 * only for the rows whose logits are wanted.
 *
 * A prompt is the same thing: its tokens are rows of one sequence at positions 0..n−1 (keys
 * and values of a layer are written for every row before any row attends, so row t sees
 * positions 0..t). Every kernel is row-independent (an output row depends only on its input row
 * and its own cache), so a token's logits are the same bits whether it runs alone, in a decode
 * batch with any other rows, or inside its prompt: greedy output of the engine equals
 * `generate` (which runs here too) bit for bit.
 *
 * Each layer is model/layer.ts's `runLayer` over [M, d] row blocks; the hooks mirror
 * model/attention.ts, model/ops.ts and model/moe/layer.ts (RMSNorm with eps inside the root,
 * rotate-half RoPE, MLA latents and scales, GQA head groups, softmax router over N+Z experts
 * with the expert bias used for selection only, zero experts as identity);
 * spec/model/layerPaths checks the logits against the training forward. MLA attends absorbed,
 * over a latent cache (cacheShape, latentAttention): one shared latent per position and block
 * instead of nHeads expanded keys and values; with an AttentionCore (A2ATS) the core still gets
 * the expanded heads.
 *
 * With a SparsityPlan (CHESS, arXiv 2409.01366: `serve --sparsity`), each row's dense FFNs and
 * FFN experts run the thresholded SwiGLU (gate densely, then only the kept channels' up and
 * down rows), and with `attention` each row's q-projection and o_proj inputs below their
 * layer threshold are skipped along with their weight rows (decodeKernels.ts sparseFfn /
 * sparseRows, native/sparse.c: each kept weight row is read once per step for all rows that
 * keep it, and each row's sums run over its own kept channels only, so a row's bits do not
 * depend on the batch). With zero thresholds every channel is kept.
 */
import { latentNormEps, ModelConfig } from '../model/config';
import { ropeDim } from '../model/attention';
import { selectExperts } from '../model/moe/router';
import { MoeResult, runLayer } from '../model/layer';
import { ServingModel } from './loadModel';
import { decodeKernels, DecodeKernels } from './decodeKernels';
import { ActivationObserver, newCounters, SparsityCounters } from './sparse/observer';
import { SparsityPlan } from './sparse/thresholds';

/** silu in double (the calibration observer's activation, as CHESS thresholds it). */
const silu = (g: number): number => g / (1 + Math.exp(-g));

/** Key/value geometry of the attention heads: KV heads and key/value widths per head (MLA: expanded heads, what an AttentionCore receives). */
export function kvShape(c: ModelConfig): { Hk: number; dk: number; dv: number } {
  const a = c.attention;
  return a.type === 'mla' ? { Hk: a.nHeads, dk: a.nopeHeadDim + a.ropeHeadDim, dv: a.vHeadDim } : { Hk: a.nKvHeads, dk: a.headDim, dv: a.headDim };
}

/**
 * What a HostSequence caches per position and block. GQA: its KV heads. MLA: the latent of
 * absorbed attention, one "KV head" shared by every query head: keys [c_kv, k_rope]
 * (kvLoraRank + ropeHeadDim floats, c_kv the normalised, scaled latent, k_rope after RoPE) and
 * values c_kv (kvLoraRank floats), instead of nHeads expanded keys and values.
 */
export function cacheShape(c: ModelConfig): { Hk: number; dk: number; dv: number } {
  const a = c.attention;
  return a.type === 'mla' ? { Hk: 1, dk: a.kvLoraRank + a.ropeHeadDim, dv: a.kvLoraRank } : kvShape(c);
}

/** One sequence's keys and values, [positions, Hk, d] per attention block (cacheShape); grows by doubling. */
export class HostSequence {
  k: Float32Array[];
  v: Float32Array[];
  /** Positions written. */
  length = 0;
  private cap: number;
  private readonly stores: boolean;
  private readonly kw: number;
  private readonly vw: number;
  /** initial 0: a position counter only (no keys/values: an AttentionCore keeps them). */
  constructor(readonly c: ModelConfig, initial = 16) {
    const s = cacheShape(c);
    this.stores = initial > 0;
    this.kw = this.stores ? s.Hk * s.dk : 0;
    this.vw = this.stores ? s.Hk * s.dv : 0;
    this.cap = this.stores ? Math.min(initial, c.maxSeqLen) : c.maxSeqLen;
    this.k = Array.from({ length: 2 * c.nLayers }, () => new Float32Array(this.cap * this.kw));
    this.v = Array.from({ length: 2 * c.nLayers }, () => new Float32Array(this.cap * this.vw));
  }
  /** Makes room for positions < n. */
  reserve(n: number): void {
    if (n <= this.cap) return;
    if (n > this.c.maxSeqLen) throw new Error(`position ${n - 1} is past the context of ${this.c.maxSeqLen}`);
    let cap = this.cap;
    while (cap < n) cap *= 2;
    cap = Math.min(cap, this.c.maxSeqLen);
    const grow = (a: Float32Array, w: number) => {
      const b = new Float32Array(cap * w);
      b.set(a.subarray(0, this.length * w));
      return b;
    };
    this.k = this.k.map((a) => grow(a, this.kw));
    this.v = this.v.map((a) => grow(a, this.vw));
    this.cap = cap;
  }
  /** Bytes held. */
  get bytes(): number {
    return 4 * this.cap * (this.kw + this.vw) * this.k.length;
  }
}

/** One row of a step: token `token` of `seq` at position `pos`. */
export interface DecodeRow {
  seq: HostSequence;
  token: number;
  pos: number;
}

/**
 * Replaces the cached attention (A2ATS, inference/kv): receives each block's pre-RoPE queries
 * [M, H, dk], keys [M, Hk, dk] and values [M, Hk, dv] of every row, keeps its own K/V state,
 * and writes the attention output o [M, H, dv]. The rows' HostSequences then only count
 * positions (`new HostSequence(c, 0)` holds no keys/values).
 */
export interface AttentionCore {
  block(l: number, j: 0 | 1, q: Float32Array, k: Float32Array, v: Float32Array, o: Float32Array): void;
}

export interface RunResult {
  /** Logits of the wanted rows, [wanted, V] in the order asked. */
  logits: Float32Array;
  /** FFN experts run for each row, summed over layers. */
  ffnRows: Int32Array;
  /** FFN-expert rows run in each MoE layer. */
  layerFfnRows: number[];
}

function rmsRows(x: Float32Array, w: Float32Array, eps: number, M: number, n: number, out: Float32Array): Float32Array {
  for (let r = 0; r < M; r++) {
    const o = r * n;
    let ms = 0;
    for (let i = 0; i < n; i++) ms += x[o + i] * x[o + i];
    const s = 1 / Math.sqrt(ms / n + eps);
    for (let i = 0; i < n; i++) out[o + i] = x[o + i] * s * w[i];
  }
  return out;
}

/** Rotate-half RoPE in place on v[off .. off+dim) with tables at cs[co ..]. */
function rope(v: Float32Array, off: number, dim: number, cos: Float32Array, sin: Float32Array, co: number): void {
  const half = dim / 2;
  for (let i = 0; i < half; i++) {
    const x1 = v[off + i];
    const x2 = v[off + half + i];
    v[off + i] = x1 * cos[co + i] - x2 * sin[co + i];
    v[off + half + i] = x2 * cos[co + i] + x1 * sin[co + i];
  }
}

/** The batched decoder of one model: weights as host arrays, scratch reused across steps. */
export class HostDecoder {
  readonly c: ModelConfig;
  private readonly weights = new Map<string, Float32Array>();
  private readonly scratch = new Map<string, Float32Array>();
  private k: DecodeKernels = decodeKernels();
  private plan: SparsityPlan | null = null;
  private core: AttentionCore | null = null;
  private obs: ActivationObserver | null = null;
  private readonly upT = new Map<string, Float32Array>();
  private readonly catsTau = new Map<string, Float32Array>();
  private readonly absorb = new Map<string, { qb: Float32Array; uv: Float32Array[] }>();
  private readonly byPrefix = new Map<string, Map<string, Float32Array>>();
  /** Each layer's weight-name prefixes, built once. */
  private readonly names: { layer: string; attn: string[]; mlps: string[]; moe: string; experts: string[] }[];
  private slotRow = new Int32Array(0);
  private slots = new Int32Array(0);
  /** Channels kept and seen under a plan, FFN-expert rows and tokens, since construction. */
  readonly counters: SparsityCounters = newCounters();

  constructor(readonly m: ServingModel) {
    this.c = m.config;
    for (const s of m.store.specs) this.weights.set(s.name, m.store.get(s.name).dataSync() as Float32Array);
    this.names = Array.from({ length: this.c.nLayers }, (_, l) => {
      const p = `model.layers.${l}`;
      return {
        layer: p,
        attn: [0, 1].map((j) => `${p}.self_attn.${j}`),
        mlps: [0, 1].map((j) => `${p}.mlps.${j}`),
        moe: `${p}.mlp`,
        experts: Array.from({ length: this.c.moe.nExperts }, (_, e) => `${p}.mlp.experts.${e}`),
      };
    });
  }

  /** Weight `${prefix}.${nm}.weight`, looked up once per (prefix, nm): prefixes come from `names`, so the map keys are the same string objects every step (their hashes cached). */
  private pw(prefix: string, nm: string): Float32Array {
    let m = this.byPrefix.get(prefix);
    if (!m) {
      m = new Map();
      this.byPrefix.set(prefix, m);
    }
    let v = m.get(nm);
    if (!v) {
      v = this.w(`${prefix}.${nm}.weight`);
      m.set(nm, v);
    }
    return v;
  }

  w(name: string): Float32Array {
    const v = this.weights.get(name);
    if (!v) throw new Error(`weight ${name} is missing`);
    return v;
  }

  /** Drops the scratch buffers (sized by the largest step so far; the next step allocates what it needs). */
  releaseScratch(): void {
    this.scratch.clear();
  }

  private buf(name: string, n: number): Float32Array {
    let b = this.scratch.get(name);
    if (!b || b.length < n) {
      b = new Float32Array(Math.max(n, 2 * (b?.length ?? 0)));
      this.scratch.set(name, b);
    }
    return b;
  }

  private mm(x: Float32Array, W: Float32Array, out: string, M: number, K: number, N: number): Float32Array {
    const y = this.buf(out, M * N);
    this.k.matmul(x, W, y, M, K, N);
    return y;
  }

  /**
   * Runs the rows; `want[i]` asks for row i's logits. Rows of one sequence must be in position
   * order, starting at its length. Each sequence's length advances past its last row.
   * `observer` sees each row's FFN and attention-input activations (calibration).
   */
  run(rows: DecodeRow[], want: boolean[], plan: SparsityPlan | null = null, core: AttentionCore | null = null, observer: ActivationObserver | null = null): RunResult {
    this.k = decodeKernels();
    this.plan = plan;
    this.core = core;
    this.obs = observer;
    const c = this.c;
    const d = c.dModel;
    const M = rows.length;
    const seen = new Map<HostSequence, number>();
    for (const r of rows) {
      const next = seen.get(r.seq) ?? r.seq.length;
      if (r.pos !== next) throw new Error(`row at position ${r.pos}: its sequence expects position ${next}`);
      if (!Number.isInteger(r.token) || r.token < 0 || r.token >= c.vocabSize) throw new Error(`token id ${r.token} is outside the vocabulary [0, ${c.vocabSize})`);
      seen.set(r.seq, next + 1);
    }
    for (const [s, n] of seen) s.reserve(n);
    const dim = ropeDim(c);
    const half = dim / 2;
    const cos = new Float32Array(M * half);
    const sin = new Float32Array(M * half);
    rows.forEach((r, i) => {
      for (let j = 0; j < half; j++) {
        const ang = r.pos * Math.pow(c.ropeBase, (-2 * j) / dim);
        cos[i * half + j] = Math.cos(ang);
        sin[i * half + j] = Math.sin(ang);
      }
    });
    const x = this.buf('x', M * d);
    const emb = this.w('model.embed_tokens.weight');
    rows.forEach((r, i) => x.set(emb.subarray(r.token * d, (r.token + 1) * d), i * d));
    const ffnRows = new Int32Array(M);
    const layerFfnRows: number[] = [];
    const u = this.buf('u', M * d);
    const n = this.buf('n', M * d);
    const add = (a: Float32Array, b: Float32Array) => {
      for (let i = 0; i < M * d; i++) a[i] += b[i];
      return a;
    };
    for (let l = 0; l < c.nLayers; l++) {
      const names = this.names[l];
      const p = names.layer;
      runLayer<Float32Array, MoeResult<Float32Array>>(c.layerType, x, {
        norm: (t, name) => rmsRows(t, this.pw(p, name), c.rmsEps, M, d, name === 'post_attention_layernorm.0' ? u : n),
        attention: (t, j) => this.attention(names.attn[j], 2 * l + j, rows, t, cos, sin),
        ffn: (t, j) => this.ffn(names.mlps[j], t, M, c.ffnHidden, 'ffnOut'),
        moe: (t) => {
          const before = ffnRows.reduce((a, x) => a + x, 0);
          const out = this.moe(l, t, M, ffnRows);
          layerFfnRows.push(ffnRows.reduce((a, x) => a + x, 0) - before);
          return { out };
        },
        add,
      });
    }
    for (const [s, len] of seen) s.length = len;
    this.counters.tokens += M;
    for (const r of ffnRows) this.counters.ffnExpertRows += r;
    const idx = want.flatMap((w, i) => (w ? [i] : []));
    const h = this.buf('h', idx.length * d);
    const fin = this.w('model.norm.weight');
    const xn = rmsRows(x, fin, c.rmsEps, M, d, n);
    idx.forEach((i, r) => h.set(xn.subarray(i * d, (i + 1) * d), r * d));
    const logits = new Float32Array(idx.length * c.vocabSize);
    this.k.matmul(h, this.w('lm_head.weight'), logits, idx.length, d, c.vocabSize);
    return { logits, ffnRows, layerFfnRows };
  }

  private attention(prefix: string, block: number, rows: DecodeRow[], x: Float32Array, cos: Float32Array, sin: Float32Array): Float32Array {
    const c = this.c;
    const a = c.attention;
    const d = c.dModel;
    const M = rows.length;
    const W = (nm: string) => this.pw(prefix, nm);
    const { Hk, dk, dv } = kvShape(c);
    const H = a.nHeads;
    const half = ropeDim(c) / 2;
    let q: Float32Array;
    if (a.type === 'gqa') {
      q = this.linear(prefix, 'q', x, W('q_proj'), 'q', M, d, H * dk);
      const k = this.mm(x, W('k_proj'), 'k', M, d, Hk * dk);
      const v = this.mm(x, W('v_proj'), 'v', M, d, Hk * dv);
      if (this.core) return this.coreBlock(prefix, block, M, q, k, v);
      rows.forEach((r, i) => {
        for (let h = 0; h < H; h++) rope(q, (i * H + h) * dk, dk, cos, sin, i * half);
        for (let h = 0; h < Hk; h++) rope(k, (i * Hk + h) * dk, dk, cos, sin, i * half);
        r.seq.k[block].set(k.subarray(i * Hk * dk, (i + 1) * Hk * dk), r.pos * Hk * dk);
        r.seq.v[block].set(v.subarray(i * Hk * dv, (i + 1) * Hk * dv), r.pos * Hk * dv);
      });
    } else {
      const nope = a.nopeHeadDim;
      const dr = a.ropeHeadDim;
      const eps = latentNormEps(c);
      const qa = this.linear(prefix, 'q', x, W('q_a_proj'), 'qa', M, d, a.qLoraRank);
      rmsRows(qa, W('q_a_layernorm'), eps, M, a.qLoraRank, qa);
      // With the latent cache, q_b_proj folded with W_uk gives each head's query in the latent
      // directly ([M, H, kvLoraRank + rope], latentAttention); an attention core gets q as is.
      const qw = this.core ? dk : a.kvLoraRank + dr;
      q = this.mm(qa, this.core ? W('q_b_proj') : this.absorbed(prefix).qb, 'q', M, a.qLoraRank, H * qw);
      const qs = Math.fround(Math.sqrt(d / a.qLoraRank));
      for (let i = 0; i < M * H * qw; i++) q[i] *= qs;
      const kvw = a.kvLoraRank + dr;
      const kv = this.mm(x, W('kv_a_proj_with_mqa'), 'kv', M, d, kvw);
      const lat = this.buf('lat', M * a.kvLoraRank);
      const ls = Math.fround(Math.sqrt(d / a.kvLoraRank));
      const ln = W('kv_a_layernorm');
      for (let i = 0; i < M; i++) {
        if (!this.core) {
          for (let h = 0; h < H; h++) rope(q, (i * H + h) * qw + a.kvLoraRank, dr, cos, sin, i * half);
          rope(kv, i * kvw + a.kvLoraRank, dr, cos, sin, i * half);
        }
        let ms = 0;
        for (let j = 0; j < a.kvLoraRank; j++) ms += kv[i * kvw + j] * kv[i * kvw + j];
        const s = 1 / Math.sqrt(ms / a.kvLoraRank + eps);
        for (let j = 0; j < a.kvLoraRank; j++) {
          lat[i * a.kvLoraRank + j] = kv[i * kvw + j] * s * ln[j];
          lat[i * a.kvLoraRank + j] *= ls;
        }
      }
      if (this.core) {
        // Keys [k_nope_h, k_rope] and values per head, pre-RoPE, [M, H, d] blocks for the core.
        const stride = nope + dv;
        const kvb = this.mm(lat, W('kv_b_proj'), 'kvb', M, a.kvLoraRank, H * stride);
        const kAll = this.buf('kAll', M * H * dk);
        const vAll = this.buf('vAll', M * H * dv);
        for (let i = 0; i < M; i++) {
          for (let h = 0; h < H; h++) {
            const src = (i * H + h) * stride;
            const ko = (i * H + h) * dk;
            const vo = (i * H + h) * dv;
            for (let j = 0; j < nope; j++) kAll[ko + j] = kvb[src + j];
            for (let j = 0; j < dr; j++) kAll[ko + nope + j] = kv[i * kvw + a.kvLoraRank + j];
            for (let j = 0; j < dv; j++) vAll[vo + j] = kvb[src + nope + j];
          }
        }
        return this.coreBlock(prefix, block, M, q, kAll, vAll);
      }
      return this.latentAttention(prefix, block, rows, q, kv, lat);
    }
    const o = this.buf('o', M * H * dv);
    this.attendCached(rows, block, q, o, H, Hk, dk, dv, 1 / Math.sqrt(dk));
    return this.linear(prefix, 'o', o, W('o_proj'), 'attnOut', M, H * dv, d);
  }

  /** Each row's queries q [M, H, dk] against its sequence's cache of `block` into o [M, H, dv]. */
  private attendCached(rows: DecodeRow[], block: number, q: Float32Array, o: Float32Array, H: number, Hk: number, dk: number, dv: number, scale: number): void {
    const M = rows.length;
    // One call per run of consecutive rows of one sequence (a prompt's rows, or a decode row).
    for (let i = 0; i < M; ) {
      const r = rows[i];
      let n = 1;
      while (i + n < M && rows[i + n].seq === r.seq && rows[i + n].pos === r.pos + n) n++;
      this.k.attendRows(q.subarray(i * H * dk, (i + n) * H * dk), r.seq.k[block], r.seq.v[block], o.subarray(i * H * dv, (i + n) * H * dv), r.pos, n, H, Hk, dk, dv, scale);
      i += n;
    }
  }

  /**
   * Absorbed MLA over the latent cache (DeepSeek-V2's inference form; cacheShape). Head h's score
   * q_nope_h·(W_uk_hᵀ c_t) + q_rope_h·k_rope_t equals [W_uk_h q_nope_h, q_rope_h]·[c_t, k_rope_t], and
   * its output Σ_t p_t (W_uv_hᵀ c_t) equals W_uv_hᵀ (Σ_t p_t c_t): every head attends over the same
   * cached latent (one shared KV head, keys kvLoraRank + ropeHeadDim wide, values kvLoraRank),
   * with its query in the latent (q_b_proj folded with W_uk: `absorbed`) and its output mapped
   * out by W_uv_h before o_proj. qAbs: [M, H, kvLoraRank + rope] after RoPE; kv: kv_a_proj's
   * rows (k_rope after RoPE); lat: the normalised latents.
   */
  private latentAttention(prefix: string, block: number, rows: DecodeRow[], qAbs: Float32Array, kv: Float32Array, lat: Float32Array): Float32Array {
    const c = this.c;
    const a = c.attention;
    if (a.type !== 'mla') throw new Error('latent attention needs an MLA model');
    const M = rows.length;
    const H = a.nHeads;
    const r = a.kvLoraRank;
    const dv = a.vHeadDim;
    const lw = r + a.ropeHeadDim;
    rows.forEach((row, i) => {
      const K = row.seq.k[block];
      K.set(lat.subarray(i * r, (i + 1) * r), row.pos * lw);
      K.set(kv.subarray(i * lw + r, (i + 1) * lw), row.pos * lw + r);
      row.seq.v[block].set(lat.subarray(i * r, (i + 1) * r), row.pos * r);
    });
    const oLat = this.buf('oLat', M * H * r);
    this.attendCached(rows, block, qAbs, oLat, H, 1, lw, r, 1 / Math.sqrt(a.nopeHeadDim + a.ropeHeadDim));
    // Outputs out of the latent: W_uv_hᵀ (Σ_t p_t c_t) per row and head, then o_proj (whose
    // input CHESS may sparsify and calibration observes, so it stays a product of its own).
    const { uv } = this.absorbed(prefix);
    const o = this.buf('o', M * H * dv);
    const olh = this.buf('oLatHead', M * r);
    const oh = this.buf('oHead', M * dv);
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < M; i++) olh.set(oLat.subarray((i * H + h) * r, (i * H + h + 1) * r), i * r);
      this.k.matmul(olh, uv[h], oh, M, r, dv);
      for (let i = 0; i < M; i++) o.set(oh.subarray(i * dv, (i + 1) * dv), (i * H + h) * dv);
    }
    return this.linear(prefix, 'o', o, this.pw(prefix, 'o_proj'), 'attnOut', M, H * dv, c.dModel);
  }

  /**
   * Absorbed weights of an MLA block, built once: qb, q_b_proj folded with W_uk ([qLoraRank,
   * H·(kvLoraRank + rope)]: head h's columns are W_qb_h,nope · W_uk_hᵀ, each sum in double and
   * rounded once, then its rope columns as they are), and W_uv_h [kvLoraRank, vHeadDim] per head,
   * both cut from kv_b_proj ([kvLoraRank, H·(nope + v)]).
   */
  private absorbed(prefix: string): { qb: Float32Array; uv: Float32Array[] } {
    let w = this.absorb.get(prefix);
    if (!w) {
      const a = this.c.attention;
      if (a.type !== 'mla') throw new Error('absorbed weights need an MLA model');
      const H = a.nHeads;
      const nope = a.nopeHeadDim;
      const dr = a.ropeHeadDim;
      const dv = a.vHeadDim;
      const r = a.kvLoraRank;
      const R = a.qLoraRank;
      const dq = nope + dr;
      const lw = r + dr;
      const stride = nope + dv;
      const B = this.pw(prefix, 'kv_b_proj');
      const Q = this.pw(prefix, 'q_b_proj');
      const qb = new Float32Array(R * H * lw);
      for (let i = 0; i < R; i++) {
        for (let h = 0; h < H; h++) {
          const qo = i * H * dq + h * dq;
          const out = i * H * lw + h * lw;
          for (let ci = 0; ci < r; ci++) {
            const bo = ci * H * stride + h * stride;
            let sum = 0;
            for (let j = 0; j < nope; j++) sum += Q[qo + j] * B[bo + j];
            qb[out + ci] = sum;
          }
          for (let j = 0; j < dr; j++) qb[out + r + j] = Q[qo + nope + j];
        }
      }
      const uv = Array.from({ length: H }, () => new Float32Array(r * dv));
      for (let ci = 0; ci < r; ci++) {
        for (let h = 0; h < H; h++) {
          const src = ci * H * stride + h * stride + nope;
          for (let j = 0; j < dv; j++) uv[h][ci * dv + j] = B[src + j];
        }
      }
      w = { qb, uv };
      this.absorb.set(prefix, w);
    }
    return w;
  }

  /** Attention through the core (pre-RoPE q, k, v of every row), then o_proj. */
  private coreBlock(prefix: string, block: number, M: number, q: Float32Array, k: Float32Array, v: Float32Array): Float32Array {
    const c = this.c;
    const H = c.attention.nHeads;
    const { Hk, dk, dv } = kvShape(c);
    const o = this.buf('o', M * H * dv);
    this.core!.block(block >> 1, (block & 1) as 0 | 1, q.subarray(0, M * H * dk), k.subarray(0, M * Hk * dk), v.subarray(0, M * Hk * dv), o.subarray(0, M * H * dv));
    return this.linear(prefix, 'o', o, this.pw(prefix, 'o_proj'), 'attnOut', M, H * dv, c.dModel);
  }

  /** A projection whose input the plan may sparsify (CHESS attention: q and o inputs). */
  private linear(prefix: string, which: 'q' | 'o', x: Float32Array, W: Float32Array, out: string, M: number, K: number, N: number): Float32Array {
    if (this.obs?.attention) for (let r = 0; r < M; r++) this.obs.attention(prefix, which, x.subarray(r * K, (r + 1) * K));
    const th = this.plan?.attention ? this.plan.thresholds.attention.get(prefix) : undefined;
    if (!th) return this.mm(x, W, out, M, K, N);
    const y = this.buf(out, M * N);
    this.counters.attnKept += this.k.sparseRows(x, W, y, M, K, N, th[which]);
    this.counters.attnTotal += M * K;
    return y;
  }

  /** SwiGLU FFN `prefix` on M rows of x into scratch `out`. */
  private ffn(prefix: string, x: Float32Array, M: number, h: number, out: string): Float32Array {
    const d = this.c.dModel;
    const t = this.plan?.ffn ? this.plan.thresholds.ffn.get(prefix) : undefined;
    if (t) {
      const tau = this.plan!.ffn === 'chess' ? t.chess : this.catsTaus(prefix, t.cats, h);
      // The gate densely for all rows (CHESS thresholds its activation), then only the kept
      // channels' up and down rows (native/sparse.c).
      const g = this.mm(x, this.w(`${prefix}.gate_proj.weight`), 'gate', M, d, h);
      const y = this.buf(out, M * d);
      this.counters.ffnKept += this.k.sparseFfn(x, g, this.upTransposed(prefix, h), this.pw(prefix, 'down_proj'), tau, y, M, d, h);
      this.counters.ffnTotal += M * h;
      return y;
    }
    const y = this.buf(out, M * d);
    const Wg = this.pw(prefix, 'gate_proj');
    const Wu = this.pw(prefix, 'up_proj');
    // Calibration sees the gate and up activations; the output still comes from the one FFN
    // kernel, so an observed decode has the bits of an unobserved one.
    if (this.obs?.ffn) this.observeFfn(prefix, this.mm(x, Wg, 'gate', M, d, h), this.mm(x, Wu, 'up', M, d, h), M, h);
    this.k.ffn(x, Wg, Wu, this.pw(prefix, 'down_proj'), y, M, d, h);
    return y;
  }

  private observeFfn(prefix: string, g: Float32Array, up: Float32Array, M: number, h: number): void {
    const ag = new Float32Array(h);
    for (let r = 0; r < M; r++) {
      for (let i = 0; i < h; i++) ag[i] = silu(g[r * h + i]);
      this.obs!.ffn!(prefix, ag, up.subarray(r * h, (r + 1) * h));
    }
  }

  /** The up projection as [h, d] (a kept channel's weights are one contiguous row). */
  private upTransposed(prefix: string, h: number): Float32Array {
    let t = this.upT.get(prefix);
    if (!t) {
      const d = this.c.dModel;
      const W = this.pw(prefix, 'up_proj');
      t = new Float32Array(d * h);
      for (let i = 0; i < d; i++) for (let j = 0; j < h; j++) t[j * d + i] = W[i * h + j];
      this.upT.set(prefix, t);
    }
    return t;
  }

  private catsTaus(prefix: string, tau: number, h: number): Float32Array {
    let t = this.catsTau.get(prefix);
    if (!t || t[0] !== tau) {
      t = new Float32Array(h).fill(tau);
      this.catsTau.set(prefix, t);
    }
    return t;
  }

  private moe(l: number, u: Float32Array, M: number, ffnRows: Int32Array): Float32Array {
    const c = this.c;
    const d = c.dModel;
    const N = c.moe.nExperts;
    const E = N + c.moe.nZeroExperts;
    const K = c.moe.topK;
    const probs = this.mm(u, this.pw(this.names[l].moe, 'router.classifier'), 'probs', M, d, E);
    for (let r = 0; r < M; r++) {
      const o = r * E;
      let max = -Infinity;
      for (let e = 0; e < E; e++) if (probs[o + e] > max) max = probs[o + e];
      let z = 0;
      for (let e = 0; e < E; e++) z += probs[o + e] = Math.exp(probs[o + e] - max);
      for (let e = 0; e < E; e++) probs[o + e] /= z;
    }
    const route = selectExperts(probs.subarray(0, M * E), this.m.biases[l], M, E, K, N);
    // Each FFN expert runs once on the rows routed to it; its output row for slot s goes to
    // row slotRow[s] of slotOut. Zero experts run nothing (slotRow −1).
    const slotRow = this.slotRow.length >= M * K ? this.slotRow : (this.slotRow = new Int32Array(2 * M * K));
    slotRow.fill(-1, 0, M * K);
    const slotOut = this.buf('slotOut', M * K * d);
    const slots = this.slots.length >= M * K ? this.slots : (this.slots = new Int32Array(2 * M * K));
    let filled = 0;
    for (let e = 0; e < N; e++) {
      const n = route.ffnCounts[e];
      if (!n) continue;
      let m = 0;
      for (let s = 0; s < M * K && m < n; s++) if (route.idx[s] === e) slots[m++] = s;
      const xin = this.buf('expertIn', n * d);
      for (let i = 0; i < n; i++) {
        const r = Math.floor(slots[i] / K);
        xin.set(u.subarray(r * d, (r + 1) * d), i * d);
      }
      const y = this.ffn(this.names[l].experts[e], xin, n, c.moe.expertHidden, 'expertOut');
      slotOut.set(y.subarray(0, n * d), filled * d);
      for (let i = 0; i < n; i++) {
        slotRow[slots[i]] = filled + i;
        ffnRows[Math.floor(slots[i] / K)]++;
      }
      filled += n;
    }
    const out = this.buf('moe', M * d);
    out.fill(0, 0, M * d);
    for (let r = 0; r < M; r++) {
      const o = r * d;
      for (let k = 0; k < K; k++) {
        const s = r * K + k;
        const e = route.idx[s];
        const gate = Math.fround(probs[r * E + e] * c.moe.routedScalingFactor);
        const y = slotRow[s] >= 0 ? slotOut : u;
        const yo = slotRow[s] >= 0 ? slotRow[s] * d : o;
        for (let i = 0; i < d; i++) out[o + i] += gate * y[yo + i];
      }
    }
    return out;
  }
}

const decoders = new WeakMap<ServingModel, HostDecoder>();

/** The model's decoder (weights copied to the host once per model). */
export function hostDecoder(m: ServingModel): HostDecoder {
  let d = decoders.get(m);
  if (!d) {
    d = new HostDecoder(m);
    decoders.set(m, d);
  }
  return d;
}

/** The model's decoder if one was made (the engine's idle release must not make one). */
export function existingHostDecoder(m: ServingModel): HostDecoder | undefined {
  return decoders.get(m);
}

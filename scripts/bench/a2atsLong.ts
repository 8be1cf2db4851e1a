/**
 * A2ATS (arXiv 2502.12665) end to end on a model trained here with a 2048-token context
 * (scripts/experiments/a2ats/train.sh, docs/a2ats-longctx.md). Prints JSON lines; `bench`
 * names the table. Unlike scripts/bench/a2ats.ts (retrieval quality on vectors laid end to end),
 * every number here comes from running the whole model over real 2k-token contexts.
 *
 * Methods (the same checkpoint and prompt for every row):
 *  - full-engine: exact attention, the tfjs engine path of `moecat generate` (no --kv);
 *  - full-host:   exact attention on the host tier (inference/kv/model.ts with every key selected,
 *                 ratio 1), the same JS code path as A2ATS, to separate implementation speed from
 *                 the algorithm;
 *  - a2ats@r:     WRoPE + query-aware VQ codebooks from `moecat calibrate --method a2ats` (held-out
 *                 prose), K = ceil(r·length) far keys per head + window 64 + sinks 8;
 *  - plainVQ@r:   the same with plain k-means codebooks (queryAware false) trained here on the same
 *                 calibration tokens, M and seed (the ablation);
 *  - postRope@r (--postRopeRatios): query-aware codebooks on post-RoPE keys (`calibrate --keys
 *                 post-rope`: keys rotated by their position, tables from R_pos q), same tokens,
 *                 M and seed;
 *  - oracle@r (--oracleRatios): the exact top-K far keys (same K, window, sinks): what any
 *                 retrieval at this budget can reach; window+sinks (--windowOnly 1): K = 0.
 *
 * Tables:
 *  - a2ats-long.passkey: held-out passkey prompts (filler from Moby-Dick chapters never trained
 *    on, ending "What is the pass key? The pass key is"); the prompt is prefilled with exact
 *    attention once, the cache is copied per method, then ~8 tokens are greedy-decoded with the
 *    method (so the answer tokens are exactly the retrieval-attention ones). Accuracy = the first
 *    5-digit number decoded equals the key; digitAcc = share of the 5 digits right in place.
 *  - a2ats-long.passkey-tf (--tables passkey-tf): the same prompts teacher-forced: the prompt is
 *    prefilled exactly, then " " and the true digits are fed through the method's decode path;
 *    meanDigitLogprob / digitTop1 over the 5 digits (chance: log 0.1, 0.1); control-wrong-key
 *    scores another prompt's key with exact attention (what a model that does not copy gets).
 *  - a2ats-long.ppl: teacher-forced perplexity on held-out documents (Moby-Dick chapters 128..138,
 *    State of the Union 200..232), windows of `pplWindow` tokens: prefill the first `pplPrefill`
 *    with exact attention, then feed every further true token through the decode path (one token
 *    per step, the method's attention) and sum −log p(next true token). full-engine uses one
 *    exact forward over the window (the same quantity).
 *  - a2ats-long.speed: decode tokens/s at a ~`speedContext`-token context (prefill excluded) and
 *    KV bytes read per decoded token: per head per block full n·(d_k+d_v)·4, A2ATS n·2 (uint16
 *    codes) + attended·(d_k+d_v)·4 (as scripts/bench/a2ats.ts), also summed over all blocks/heads.
 *
 * Usage: node dist/scripts/bench/a2atsLong.js [--checkpoint runs/a2ats-long/model]
 *   [--passkey runs/a2ats-long/passkey-eval.jsonl] [--n 30] [--decode 8]
 *   [--ppl runs/a2ats-long/corpus/ppl.jsonl] [--pplWindows 2] [--pplWindow 2048] [--pplPrefill 256]
 *   [--calib runs/a2ats-long/prepared-calib] [--speedContext 2000] [--speedTokens 24]
 *   [--tables passkey,ppl,speed] [--plainRatios 0.06] [--oracleRatios ''] [--postRopeRatios ''] [--windowOnly 0]
 *   [--methods name,...] [--pplHostFull 0] [--backend cpu-native]
 */
import * as fs from 'fs';
import * as tf from '@tensorflow/tfjs';
import { selectBackend, BackendChoice } from '../../core/backend';
import { Tokenizer } from '../../data/tokenizer';
import { loadPrepared } from '../../data/prepared';
import { loadServingModel, ServingModel } from '../../inference/loadModel';
import { step } from '../../inference/generate';
import { argmax } from '../../inference/sampling';
import { forward } from '../../model/transformer';
import { A2ATSHeadGroup, A2ATSOptions, DEFAULT_A2ATS, KeyMode } from '../../inference/kv/attention';
import { dot } from '../../core/linalg';
import { rotate } from '../../inference/kv/rope';
import { A2ATSCache, blockLayout, hostForward } from '../../inference/kv/model';
import { calibrateModel, loadCodebooks } from '../../inference/kv/calibrate';
import { Codebook } from '../../inference/kv/quantizer';
import { gradePasskey } from '../experiments/a2ats/passkey';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}

const CK = arg('checkpoint', 'runs/a2ats-long/model');
const PASSKEY = arg('passkey', 'runs/a2ats-long/passkey-eval.jsonl');
const NPK = Number(arg('n', '30'));
const DECODE = Number(arg('decode', '8'));
const PPL = arg('ppl', 'runs/a2ats-long/corpus/ppl.jsonl');
const PPL_WINDOWS = Number(arg('pplWindows', '2'));
const PPL_WINDOW = Number(arg('pplWindow', '2048'));
const PPL_PREFILL = Number(arg('pplPrefill', '256'));
const CALIB = arg('calib', 'runs/a2ats-long/prepared-calib');
const SPEED_CTX = Number(arg('speedContext', '2000'));
const SPEED_TOKENS = Number(arg('speedTokens', '24'));
const TABLES = new Set(arg('tables', 'passkey,ppl,speed').split(','));
const RATIOS = [0.03, 0.06, 0.12];
const PLAIN_RATIOS = arg('plainRatios', '0.06').split(',').filter(Boolean).map(Number);
const ORACLE_RATIOS = arg('oracleRatios', '').split(',').filter(Boolean).map(Number);
const POST_ROPE_RATIOS = arg('postRopeRatios', '').split(',').filter(Boolean).map(Number);
/** Host methods to run (default all of the above); full-engine always runs. */
const ONLY = arg('methods', '').split(',').filter(Boolean);

interface Method {
  name: string;
  ratio: number;
  books: Map<string, Codebook> | null;
  /** Exact top-K far keys instead of the VQ ranking (the upper bound at this budget). */
  oracle?: boolean;
  /** Key mode of the codebooks (default wrope). */
  keys?: KeyMode;
}

/** Ranks far keys by their exact scores q_pos·k_s with RoPE: A2ATS's selection bound at the same K. */
class OracleHeadGroup extends A2ATSHeadGroup {
  protected override farScores(q: ArrayLike<number>, pos: number): Float64Array {
    const n = Math.min(this.length, pos + 1);
    const qr = rotate(q, pos, this.dims.rope);
    const sc = new Float64Array(n);
    for (let s = 0; s < n; s++) sc[s] = dot(qr, this.keysRot[s], this.dims.dk);
    return sc;
  }
}

const out = (o: Record<string, unknown>) => console.log(JSON.stringify(o));
const r4 = (x: number) => +x.toFixed(4);

/** A fresh cache holding a copy of `src`'s keys/values, encoded with `books`, decoding at `ratio`. */
function copyCache(m: ServingModel, src: A2ATSCache, books: Map<string, Codebook> | null, opts: A2ATSOptions, oracle = false): A2ATSCache {
  const c = new A2ATSCache(m.config, books, opts);
  c.groups.forEach((gl, l) => gl.forEach((gj, j) => gj.forEach((g0: A2ATSHeadGroup, h) => {
    const g = oracle ? (gj[h] = new OracleHeadGroup(g0.dims, null, opts)) : g0;
    const s = src.groups[l][j][h];
    for (let t = 0; t < s.length; t++) g.append(s.keys[t], s.values[t]);
  })));
  return c;
}

function logSoftmaxAt(logits: Float32Array, off: number, V: number, id: number): number {
  let mx = -Infinity;
  for (let i = 0; i < V; i++) if (logits[off + i] > mx) mx = logits[off + i];
  let z = 0;
  for (let i = 0; i < V; i++) z += Math.exp(logits[off + i] - mx);
  return logits[off + id] - mx - Math.log(z);
}

/** Exact-attention log-probs of ids[t+1] for t in [from, ids.length − 1), one engine forward. */
function engineLogprobs(m: ServingModel, ids: number[], from: number): number[] {
  const V = m.config.vocabSize;
  const logits = tf.tidy(() => forward(m.config, (n) => m.store.get(n), Int32Array.from(ids), 1, ids.length, { biases: m.biases }).logits!);
  const d = logits.dataSync() as Float32Array;
  logits.dispose();
  const lp: number[] = [];
  for (let t = from; t < ids.length - 1; t++) lp.push(logSoftmaxAt(d, t * V, V, ids[t + 1]));
  return lp;
}

async function main() {
  const t0 = Date.now();
  const backend = await selectBackend(arg('backend', 'cpu-native') as BackendChoice);
  const m = loadServingModel(CK);
  const lay = blockLayout(m.config);
  const { dk, dv } = lay;
  const blocksHeads = m.config.nLayers * 2 * lay.nKvHeads;
  const tok = Tokenizer.fromJSON(m.tokenizerJson!, CK);
  const loaded = loadCodebooks(CK);
  if (!loaded) throw new Error(`${CK} has no a2ats.safetensors: run moecat calibrate --method a2ats first`);
  const b = Number(loaded.meta.b ?? DEFAULT_A2ATS.b);
  const calTokens = Number(loaded.meta.tokens);
  const M = loaded.codebooks.values().next().value!.M;
  const base: A2ATSOptions = { ...DEFAULT_A2ATS, b };
  // Plain k-means codebooks on the same calibration tokens as the CLI (the first `calTokens` of
  // the calibration corpus, one source), same M and seed.
  const tPlain = Date.now();
  const calIds = Array.from(loadPrepared(CALIB).sources.values().next().value!.tokens.slice(0, calTokens));
  const plain = PLAIN_RATIOS.length ? calibrateModel(m, calIds, { codebookSize: M, seed: Number(loaded.meta.seed ?? 0), b, queryAware: false }) : null;
  // Post-RoPE codebooks (`calibrate --keys post-rope`) on the same tokens, M and seed.
  const tPost = Date.now();
  const postRope = POST_ROPE_RATIOS.length ? calibrateModel(m, calIds, { codebookSize: M, seed: Number(loaded.meta.seed ?? 0), keys: 'post-rope' }) : null;
  const postRopeSeconds = (Date.now() - tPost) / 1000;
  out({
    bench: 'a2ats-long.setup', checkpoint: CK, step: m.step, backend: backend.name, maxSeqLen: m.config.maxSeqLen, ropeBase: m.config.ropeBase,
    attention: m.config.attention, dk, dv, blocksTimesHeads: blocksHeads, codebookSize: M, calTokens, b, window: base.window, sinks: base.sinks,
    plainCodebookSeconds: (tPost - tPlain) / 1000,
    ...(postRope ? { postRopeCodebookSeconds: postRopeSeconds } : {}),
  });
  const methods: Method[] = [
    { name: 'full-host', ratio: 1, books: null },
    ...RATIOS.map((r) => ({ name: `a2ats@${r}`, ratio: r, books: loaded.codebooks })),
    ...PLAIN_RATIOS.map((r) => ({ name: `plainVQ@${r}`, ratio: r, books: plain })),
    ...POST_ROPE_RATIOS.map((r) => ({ name: `postRope@${r}`, ratio: r, books: postRope, keys: 'post-rope' as KeyMode })),
    ...ORACLE_RATIOS.map((r) => ({ name: `oracle@${r}`, ratio: r, books: null, oracle: true })),
    ...(arg('windowOnly', '0') === '1' ? [{ name: 'window+sinks', ratio: 0, books: null }] : []),
  ].filter((me) => ONLY.length === 0 || ONLY.includes(me.name));

  if (TABLES.has('passkey')) {
    const prompts = fs.readFileSync(PASSKEY, 'utf8').split('\n').filter(Boolean).slice(0, NPK).map((l) => JSON.parse(l) as { text: string; answer: string; depth: number });
    type Acc = { exact: number; digits: number; n: number; attended: number; available: number; examples: string[] };
    const acc = new Map<string, Acc>();
    const lens: number[] = [];
    const record = (name: string, ids: number[], answer: string, attended = 0, available = 0) => {
      const text = tok.decode(ids);
      const g = gradePasskey(text, answer);
      const a = acc.get(name) ?? { exact: 0, digits: 0, n: 0, attended: 0, available: 0, examples: [] };
      a.n++;
      if (g.exact) a.exact++;
      a.digits += g.digits;
      a.attended += attended; a.available += available;
      if (a.examples.length < 3) a.examples.push(`${answer}->${JSON.stringify(text)}`);
      acc.set(name, a);
    };
    for (const p of prompts) {
      const ids = tok.encode(p.text);
      lens.push(ids.length);
      // full-engine: the tfjs path of `moecat generate` (greedy).
      {
        let r = step(m, ids, 0, undefined);
        const gen: number[] = [];
        let past = ids.length;
        for (let i = 0; i < DECODE; i++) {
          const lg = r.logits.dataSync() as Float32Array;
          const id = argmax(lg);
          gen.push(id);
          const prev = r;
          if (i < DECODE - 1) r = step(m, [id], past++, prev.caches);
          tf.dispose([prev.logits, prev.ffn, ...prev.caches.flatMap((c) => [c[0].k, c[0].v, c[1].k, c[1].v])]);
        }
        record('full-engine', gen, p.answer);
      }
      // Host methods: one exact prefill, then the cache copied per method.
      const pre = new A2ATSCache(m.config, null, { ...base, ratio: 1 });
      const first = argmax(hostForward(m, pre, ids, false).logits);
      for (const me of methods) {
        const cache = copyCache(m, pre, me.books, { ...base, ratio: me.ratio, keys: me.keys }, me.oracle);
        const gen = [first];
        let attended = 0, available = 0;
        for (let i = 1; i < DECODE; i++) {
          const r = hostForward(m, cache, [gen[i - 1]], true);
          attended += r.stats.attended; available += r.stats.available;
          gen.push(argmax(r.logits));
        }
        record(me.name, gen, p.answer, attended, available);
      }
    }
    lens.sort((a, b2) => a - b2);
    const stats = { n: lens.length, min: lens[0], median: lens[lens.length >> 1], mean: Math.round(lens.reduce((a, x) => a + x, 0) / lens.length), max: lens[lens.length - 1] };
    for (const [name, a] of acc) {
      out({ bench: 'a2ats-long.passkey', method: name, prompts: a.n, promptTokens: stats, decodeTokens: DECODE, accuracy: r4(a.exact / a.n), digitAcc: r4(a.digits / a.n), attendedShare: a.available ? r4(a.attended / a.available) : 1, examples: a.examples });
    }
    out({ bench: 'a2ats-long.passkey-note', note: 'the first answer token comes from the exact prefill (identical for every method); tokens 2.. are decoded with the method', seconds: (Date.now() - t0) / 1000 });
  }

  if (TABLES.has('passkey-tf')) {
    // Teacher-forced answer scoring: exact prefill of the prompt, then " " and the 5 true digits
    // fed through the method's decode path; every digit's prediction comes from a decode step.
    // Control: the same scoring (exact attention) of another prompt's key, i.e. a random number.
    const prompts = fs.readFileSync(PASSKEY, 'utf8').split('\n').filter(Boolean).slice(0, NPK).map((l) => JSON.parse(l) as { text: string; answer: string });
    const acc = new Map<string, { lp: number; top1: number; n: number }>();
    const addTf = (name: string, lps: number[], top1: number) => {
      const a = acc.get(name) ?? { lp: 0, top1: 0, n: 0 };
      a.lp += lps.reduce((x, y) => x + y, 0); a.top1 += top1; a.n += lps.length;
      acc.set(name, a);
    };
    const V = m.config.vocabSize;
    prompts.forEach((p, i) => {
      const ids = tok.encode(p.text);
      const tail = (key: string) => {
        const all = tok.encode(`${p.text} ${key}.`);
        if (all.slice(0, ids.length).some((x, k) => x !== ids[k])) throw new Error('prompt tokens are not a prefix');
        return all.slice(ids.length, ids.length + 6); // " " d1..d5
      };
      const wrong = prompts[(i + 1) % prompts.length].answer;
      for (const [name, key] of [['full-engine', p.answer], ['control-wrong-key', wrong]] as const) {
        const full = [...ids, ...tail(key)];
        const lps = engineLogprobs(m, full, ids.length);
        const logits = tf.tidy(() => forward(m.config, (n) => m.store.get(n), Int32Array.from(full), 1, full.length, { biases: m.biases }).logits!);
        const d = logits.dataSync() as Float32Array;
        logits.dispose();
        let top1 = 0;
        for (let t = ids.length; t < full.length - 1; t++) if (argmax(d.subarray(t * V, (t + 1) * V)) === full[t + 1]) top1++;
        addTf(name, lps, top1);
      }
      const tl = tail(p.answer);
      const pre = new A2ATSCache(m.config, null, { ...base, ratio: 1 });
      hostForward(m, pre, ids, false);
      for (const me of methods) {
        const cache = copyCache(m, pre, me.books, { ...base, ratio: me.ratio, keys: me.keys }, me.oracle);
        const lps: number[] = [];
        let top1 = 0;
        for (let t = 0; t < 5; t++) {
          const r = hostForward(m, cache, [tl[t]], true);
          lps.push(logSoftmaxAt(r.logits, 0, V, tl[t + 1]));
          if (argmax(r.logits) === tl[t + 1]) top1++;
        }
        addTf(me.name, lps, top1);
      }
    });
    for (const [name, a] of acc) {
      out({ bench: 'a2ats-long.passkey-tf', method: name, prompts: prompts.length, digits: a.n, meanDigitLogprob: r4(a.lp / a.n), digitTop1: r4(a.top1 / a.n), chanceLogprob: r4(Math.log(0.1)) });
    }
  }

  if (TABLES.has('ppl')) {
    const docs = fs.readFileSync(PPL, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { id: string; text: string });
    // Windows: the first PPL_WINDOW tokens of held-out documents long enough, alternating prose/speech.
    const long = docs.map((d) => ({ id: d.id, ids: tok.encode(d.text) })).filter((d) => d.ids.length >= PPL_WINDOW);
    const prose = long.filter((d) => d.id.startsWith('moby')), speech = long.filter((d) => d.id.startsWith('sotu'));
    const wins: { id: string; ids: number[] }[] = [];
    for (let i = 0; wins.length < PPL_WINDOWS && (i < prose.length || i < speech.length); i++) {
      for (const src of [prose, speech]) if (i < src.length && wins.length < PPL_WINDOWS) wins.push({ id: src[i].id, ids: src[i].ids.slice(0, PPL_WINDOW) });
    }
    const nll = new Map<string, { sum: number; n: number; seconds: number; attended: number; available: number }>();
    const add = (name: string, lps: number[], seconds: number, attended = 0, available = 0) => {
      const a = nll.get(name) ?? { sum: 0, n: 0, seconds: 0, attended: 0, available: 0 };
      for (const x of lps) a.sum -= x;
      a.n += lps.length; a.seconds += seconds; a.attended += attended; a.available += available;
      nll.set(name, a);
    };
    for (const w of wins) {
      let ts = Date.now();
      add('full-engine', engineLogprobs(m, w.ids, PPL_PREFILL - 1), (Date.now() - ts) / 1000);
      const pre = new A2ATSCache(m.config, null, { ...base, ratio: 1 });
      const first = hostForward(m, pre, w.ids.slice(0, PPL_PREFILL), false).logits;
      const lp0 = logSoftmaxAt(first, 0, m.config.vocabSize, w.ids[PPL_PREFILL]);
      for (const me of methods) {
        if (me.name === 'full-host' && arg('pplHostFull', '0') !== '1') continue;
        ts = Date.now();
        const cache = copyCache(m, pre, me.books, { ...base, ratio: me.ratio, keys: me.keys }, me.oracle);
        const lps = [lp0];
        let attended = 0, available = 0;
        for (let t = PPL_PREFILL; t < w.ids.length - 1; t++) {
          const r = hostForward(m, cache, [w.ids[t]], true);
          attended += r.stats.attended; available += r.stats.available;
          lps.push(logSoftmaxAt(r.logits, 0, m.config.vocabSize, w.ids[t + 1]));
        }
        add(me.name, lps, (Date.now() - ts) / 1000, attended, available);
      }
      process.stderr.write(`ppl window ${w.id} done at ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
    }
    const full = nll.get('full-engine')!;
    const fullPpl = Math.exp(full.sum / full.n);
    for (const [name, a] of nll) {
      const ppl = Math.exp(a.sum / a.n);
      out({ bench: 'a2ats-long.ppl', method: name, windows: wins.map((w) => w.id), window: PPL_WINDOW, prefill: PPL_PREFILL, targets: a.n, nll: r4(a.sum / a.n), ppl: r4(ppl), relChange: r4(ppl / fullPpl - 1), attendedShare: a.available ? r4(a.attended / a.available) : 1, seconds: +a.seconds.toFixed(1) });
    }
  }

  if (TABLES.has('speed')) {
    const docs = fs.readFileSync(PPL, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { id: string; text: string });
    const ids = docs.map((d) => tok.encode(d.text)).find((x) => x.length >= SPEED_CTX + SPEED_TOKENS)!.slice(0, SPEED_CTX);
    const n = SPEED_CTX + SPEED_TOKENS / 2; // mean context over the decode steps
    const fullBytes = n * (dk + dv) * 4;
    // full-engine: tfjs KV cache (same as `moecat generate`), greedy, prefill excluded.
    {
      let r = step(m, ids, 0, undefined);
      let past = ids.length;
      let id = argmax(r.logits.dataSync() as Float32Array);
      const ts = performance.now();
      for (let i = 0; i < SPEED_TOKENS; i++) {
        const prev = r;
        r = step(m, [id], past++, prev.caches);
        tf.dispose([prev.logits, prev.ffn, ...prev.caches.flatMap((c) => [c[0].k, c[0].v, c[1].k, c[1].v])]);
        id = argmax(r.logits.dataSync() as Float32Array);
      }
      const s = (performance.now() - ts) / 1000;
      tf.dispose([r.logits, r.ffn, ...r.caches.flatMap((c) => [c[0].k, c[0].v, c[1].k, c[1].v])]);
      out({ bench: 'a2ats-long.speed', method: 'full-engine', context: SPEED_CTX, decodeTokens: SPEED_TOKENS, tokensPerS: +(SPEED_TOKENS / s).toFixed(2), msPerToken: +(1000 * s / SPEED_TOKENS).toFixed(1), kvBytesPerTokenPerHead: Math.round(fullBytes), kvBytesPerToken: Math.round(fullBytes * blocksHeads), kvReadShare: 1 });
    }
    const pre = new A2ATSCache(m.config, null, { ...base, ratio: 1 });
    const first = argmax(hostForward(m, pre, ids, false).logits);
    for (const me of methods) {
      const cache = copyCache(m, pre, me.books, { ...base, ratio: me.ratio, keys: me.keys }, me.oracle);
      let id = first, attended = 0;
      const ts = performance.now();
      for (let i = 0; i < SPEED_TOKENS; i++) {
        const r = hostForward(m, cache, [id], true);
        attended += r.stats.attended;
        id = argmax(r.logits);
      }
      const s = (performance.now() - ts) / 1000;
      const att = attended / SPEED_TOKENS / blocksHeads; // per head per block per token
      const bytes = me.ratio >= 1 ? fullBytes : n * 2 + att * (dk + dv) * 4;
      out({ bench: 'a2ats-long.speed', method: me.name, context: SPEED_CTX, decodeTokens: SPEED_TOKENS, tokensPerS: +(SPEED_TOKENS / s).toFixed(2), msPerToken: +(1000 * s / SPEED_TOKENS).toFixed(1), attendedKeysPerHead: +att.toFixed(1), kvBytesPerTokenPerHead: Math.round(bytes), kvBytesPerToken: Math.round(bytes * blocksHeads), kvReadShare: r4(bytes / fullBytes) });
    }
  }
  out({ bench: 'a2ats-long.done', seconds: (Date.now() - t0) / 1000 });
  m.store.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

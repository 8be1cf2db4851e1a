/**
 * A2ATS key mode 'post-rope' (`moecat calibrate --method a2ats --keys post-rope`): codebooks of
 * keys after RoPE at their own positions, far keys scored with the query at its own position
 * (R_pos q) instead of WRoPE's R_b q. Lookup-table identity and codes of the RoPE'd keys,
 * exactness at ratio 1 on a whole model (MLA and GQA), attention-mass recall against the exact
 * top-K on a model's real keys, the codebook-file metadata and the flag errors.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { RngStream } from '../../core/rng';
import { CheckpointError, ConfigError } from '../../core/errors';
import { cholesky, dot } from '../../core/linalg';
import { rotate, RopeSpec } from '../../inference/kv/rope';
import { encodeKey, lookupTable, queryCovariance, trainCodebook } from '../../inference/kv/quantizer';
import { A2ATSHeadGroup, A2ATSOptions, isPinned, KeyMode } from '../../inference/kv/attention';
import { A2ATSCache, A2ATSSequence, blockLayout, codebookKey, generateA2ATS, hostForward } from '../../inference/kv/model';
import { A2ATS_FILE, calibrateA2ATS, calibrateModel, loadCodebooks, writeCodebooks } from '../../inference/kv/calibrate';
import { loadKvMode } from '../../inference/kv/options';
import { Codebook } from '../../inference/kv/quantizer';
import { generate } from '../../inference/generate';
import { ServingModel } from '../../inference/loadModel';
import { ModelConfigInput } from '../../model/config';
import { makeModel, testTokenizer, tinyModelConfig, tmpDir, writeModelCheckpoint } from '../inference/fixtures';
import { testBackendName } from '../helpers/backend';

function randn(n: number, rng: RngStream): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal();
  return a;
}

const CALIBRATION = 'the quick brown fox jumps over the lazy dog; the model says hello there, then stops. Mixture of experts: zero experts cost nothing. ';

describe('A2ATS post-RoPE key mode: lookup table and codes', () => {
  const D = 8;
  const rope: RopeSpec = { offset: 2, dim: 6, base: 10000 };
  const opts: A2ATSOptions = { window: 16, sinks: 4, b: 128, ratio: 0.05 };

  it("table-lookup scores equal R_pos q · c(code) bitwise, and each code is that of the RoPE'd key R_s k", () => {
    const n = 120;
    const rng = RngStream.of(2, 'spec-postrope');
    const keys = randn(n * D, rng);
    const kr = new Float64Array(n * D);
    const qr = new Float64Array(n * D);
    const qs = randn(n * D, rng);
    for (let s = 0; s < n; s++) {
      kr.set(rotate(keys.subarray(s * D, (s + 1) * D), s, rope), s * D);
      qr.set(rotate(qs.subarray(s * D, (s + 1) * D), s, rope), s * D);
    }
    const cb = trainCodebook(kr, n, D, RngStream.of(2, 'spec-postrope-km'), { size: 16, queries: qr, nQueries: n });
    const dims = { dk: D, dv: D, groupSize: 1, rope, scale: 1 / Math.sqrt(D) };
    const g = new A2ATSHeadGroup(dims, cb, { ...opts, keys: 'post-rope' });
    const w = new A2ATSHeadGroup(dims, cb, { ...opts, keys: 'wrope' });
    for (let s = 0; s < n; s++) {
      g.append(keys.subarray(s * D, (s + 1) * D), keys.subarray(s * D, (s + 1) * D));
      w.append(keys.subarray(s * D, (s + 1) * D), keys.subarray(s * D, (s + 1) * D));
    }
    const q = randn(D, rng);
    const pos = n - 1; // != b: R_pos q and R_b q differ
    const qPos = rotate(q, pos, rope);
    const T = lookupTable(cb, qPos);
    const Tb = lookupTable(cb, rotate(q, opts.b, rope));
    const a = g.approxScores(q, pos);
    let notRb = 0;
    let notPre = 0;
    for (let s = 0; s < n; s++) {
      const c = g.codes[s];
      assert.equal(c, encodeKey(cb, g.keysRot[s]), `code of key ${s}`);
      assert.equal(a[s], T[c]);
      assert.equal(a[s], dot(qPos, cb.centroids, D, 0, c * D));
      if (Tb[c] !== a[s]) notRb++;
      if (w.codes[s] !== c) notPre++;
    }
    // The checks above tell the modes apart: R_b q and pre-RoPE codes give other values.
    assert.ok(notRb > n / 2, `${notRb} of ${n} scores differ from the R_b table`);
    assert.ok(notPre > n / 4, `${notPre} of ${n} codes differ from the pre-RoPE codes`);
  });
});

describe('A2ATS post-RoPE key mode on a whole model', function () {
  this.timeout(300000);
  const gqaConfig: ModelConfigInput = { ...tinyModelConfig, attention: { type: 'gqa', nHeads: 4, nKvHeads: 2, headDim: 8 } };
  const prompt = [5, 17, 99, 3, 42, 7, 7, 250, 31, 64, 12, 200];
  const calIds = () => testTokenizer().encode(CALIBRATION.repeat(4)).slice(0, 384);

  for (const [name, cfg] of [['MLA', tinyModelConfig], ['GQA', gqaConfig]] as const) {
    it(`${name}: calibrated post-rope codebooks encode the RoPE'd keys; ratio-1 greedy decode equals inference/generate token for token`, () => {
      const m = makeModel(cfg);
      try {
        const books = calibrateModel(m, calIds(), { codebookSize: 16, seed: 1, keys: 'post-rope' });
        const kv: Partial<A2ATSOptions> = { window: 4, sinks: 2, ratio: 1, keys: 'post-rope' };
        const seq = new A2ATSSequence(m, books, { window: 4, sinks: 2, b: 2048, ratio: 1, keys: 'post-rope' });
        seq.prefill(prompt);
        seq.cache.groups.forEach((gl, l) => gl.forEach((gj, j) => gj.forEach((g, h) => {
          const cb = books.get(codebookKey(l, j, h))!;
          for (let s = 0; s < g.length; s++) assert.equal(g.codes[s], encodeKey(cb, g.keysRot[s]), `code of key ${s} in ${codebookKey(l, j, h)}`);
        })));
        const o = { maxTokens: 20, temperature: 0, topP: 1, topK: 0, seed: 0 };
        const a = generateA2ATS(m, prompt, o, books, kv);
        const e = generate(m, prompt, o);
        assert.deepEqual(a.ids, e.ids);
        assert.equal(a.attendedShare, 1);
        const sparse = generateA2ATS(m, prompt, o, books, { ...kv, ratio: 0.1 });
        assert.equal(sparse.ids.length, 20);
        assert.ok(sparse.attendedShare < 1, `attended share ${sparse.attendedShare}`);
      } finally {
        m.store.dispose();
      }
    });
  }

  it('post-rope calibration: H comes from queries rotated by their own positions (L bitwise) and the codebook from keys rotated by theirs (M = keys: centroids are the R_t k)', () => {
    const m = makeModel(tinyModelConfig);
    try {
      const lay = blockLayout(m.config);
      const { nHeads: H, dk } = lay;
      const ids = Array.from({ length: 24 }, (_, i) => 3 + 11 * i);
      const qs = new Map<string, number[]>();
      const ks = new Map<string, Float64Array[]>();
      hostForward(m, new A2ATSCache(m.config, null, { window: 4, sinks: 2, b: 2048, ratio: 1 }), ids, false, (l, j, q, k, _v, S) => {
        for (let h = 0; h < H; h++) {
          const qa: number[] = [];
          const ka: Float64Array[] = [];
          for (let t = 0; t < S; t++) {
            qa.push(...rotate(q.subarray((t * H + h) * dk, (t * H + h + 1) * dk), t, lay.rope));
            ka.push(rotate(k.subarray((t * H + h) * dk, (t * H + h + 1) * dk), t, lay.rope));
          }
          qs.set(codebookKey(l, j, h), qa);
          ks.set(codebookKey(l, j, h), ka);
        }
      });
      const books = calibrateModel(m, ids, { codebookSize: ids.length, seed: 1, keys: 'post-rope' });
      for (const [key, cb] of books) {
        assert.deepEqual(Array.from(cb.L), Array.from(cholesky(queryCovariance(qs.get(key)!, ids.length, dk), dk)), `L of ${key}`);
        assert.equal(cb.M, ids.length);
        for (const kr of ks.get(key)!) {
          let best = Infinity;
          for (let c = 0; c < cb.M; c++) {
            let d = 0;
            for (let i = 0; i < dk; i++) d = Math.max(d, Math.abs(cb.centroids[c * dk + i] - kr[i]));
            best = Math.min(best, d);
          }
          assert.ok(best < 1e-9, `${key}: no centroid within 1e-9 of a RoPE'd key (${best})`);
        }
      }
    } finally {
      m.store.dispose();
    }
  });

  /**
   * Attention-mass recall of each decode query at positions 48..95 of `ids` (the real q/k/v of
   * every block and head, MLA: one query head per key head): mass of the A2ATS selection over the
   * mass of the pinned keys plus the exact top-K far keys (the best any K-key choice can do).
   */
  function recalls(m: ServingModel, ids: number[], books: Map<string, Codebook>, keys: KeyMode, o: A2ATSOptions): number[] {
    const lay = blockLayout(m.config);
    const { nHeads: H, nKvHeads: Hk, dk, dv } = lay;
    assert.equal(lay.groupSize, 1);
    const out: number[] = [];
    hostForward(m, new A2ATSCache(m.config, null, { ...o, ratio: 1 }), ids, false, (l, j, q, k, v, S) => {
      for (let h = 0; h < Hk; h++) {
        const g = new A2ATSHeadGroup(lay, books.get(codebookKey(l, j, h))!, { ...o, keys });
        for (let s = 0; s < S; s++) g.append(k.subarray((s * Hk + h) * dk, (s * Hk + h + 1) * dk), v.subarray((s * Hk + h) * dv, (s * Hk + h + 1) * dv));
        for (let pos = S / 2; pos < S; pos++) {
          const qh = q.subarray((pos * H + h) * dk, (pos * H + h + 1) * dk);
          const qr = rotate(qh, pos, lay.rope);
          const logit = Array.from({ length: pos + 1 }, (_, s) => dot(qr, g.keysRot[s], dk) * lay.scale);
          const mx = Math.max(...logit);
          const p = logit.map((x) => Math.exp(x - mx));
          const far: number[] = [];
          let best = 0;
          for (let s = 0; s <= pos; s++) if (isPinned(s, pos, o)) best += p[s]; else far.push(s);
          const K = Math.min(far.length, Math.ceil(o.ratio * (pos + 1)));
          for (const s of far.sort((a, b) => p[b] - p[a]).slice(0, K)) best += p[s];
          let got = 0;
          for (const s of g.select([qh], pos)) got += p[s];
          out.push(got / best);
        }
      }
    });
    return out;
  }
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;

  it('recall of attention mass vs exact top-K on the real keys: post-rope above wrope; lossless post-rope codebooks select the exact top-K', () => {
    const m = makeModel(tinyModelConfig);
    try {
      const rng = RngStream.of(7, 'spec-postrope-ids');
      const ids = Array.from({ length: m.config.maxSeqLen }, () => rng.int(m.config.vocabSize));
      const o: A2ATSOptions = { window: 4, sinks: 2, b: 512, ratio: 0.1 };
      const bound = (r: number[]) => r.forEach((x) => assert.ok(x > 0 && x <= 1 + 1e-9, `recall ${x} outside (0, 1]`));
      // Codebooks of 32 centroids from other tokens (the calibration text).
      const cal = calIds();
      const wrope = recalls(m, ids, calibrateModel(m, cal, { codebookSize: 32, seed: 1, b: o.b, keys: 'wrope' }), 'wrope', o);
      const post = recalls(m, ids, calibrateModel(m, cal, { codebookSize: 32, seed: 1, keys: 'post-rope' }), 'post-rope', o);
      bound(wrope);
      bound(post);
      assert.ok(mean(post) > mean(wrope) + 0.05, `mean recall post-rope ${mean(post)} vs wrope ${mean(wrope)}`);
      // One centroid per key, calibrated on these very keys: post-rope scores are exact (up to
      // float32 rounding of the cached keys), so the selection holds the exact top-K mass. WRoPE's
      // codes are as exact, yet its R_b q scores rank the far keys differently.
      const M = ids.length;
      const postExact = recalls(m, ids, calibrateModel(m, ids, { codebookSize: M, seed: 1, keys: 'post-rope' }), 'post-rope', o);
      const wropeExact = recalls(m, ids, calibrateModel(m, ids, { codebookSize: M, seed: 1, b: o.b, keys: 'wrope' }), 'wrope', o);
      bound(wropeExact);
      assert.ok(Math.min(...postExact) >= 1 - 1e-6, `lowest recall ${Math.min(...postExact)}`);
      assert.ok(mean(wropeExact) < 0.9, `wrope with lossless codes ${mean(wropeExact)}`);
    } finally {
      m.store.dispose();
    }
  });
});

describe('A2ATS post-RoPE key mode: codebook file and flags', function () {
  this.timeout(120000);

  it("calibration records meta.keys (post-rope without b); loading reads it; files without it are wrope; unknown modes and post-rope with b are refused", () => {
    const dir = tmpDir('moecat-a2ats-post-');
    try {
      const m0 = makeModel();
      writeModelCheckpoint(dir, m0.config, 7, testTokenizer().toJSON());
      m0.store.dispose();
      const r = calibrateA2ATS({ checkpoint: dir, text: CALIBRATION, codebookSize: 16, seed: 1, keys: 'post-rope' });
      const loaded = loadCodebooks(dir)!;
      assert.equal(loaded.meta.keys, 'post-rope');
      assert.equal(loaded.meta.b, undefined);
      assert.equal(loadKvMode(dir, 'a2ats', 0.25)!.opts.keys, 'post-rope');
      // A file from before the mode existed (no `keys`) is WRoPE with its b.
      writeCodebooks(r.file, loaded.codebooks, { b: '512', seed: '1' });
      const old = loadKvMode(dir, 'a2ats', 0.25)!;
      assert.equal(old.opts.keys, 'wrope');
      assert.equal(old.opts.b, 512);
      writeCodebooks(r.file, loaded.codebooks, { keys: 'pre-rope' });
      assert.throws(() => loadKvMode(dir, 'a2ats', 0.25), (e: unknown) => e instanceof CheckpointError && /unknown key mode 'pre-rope'/.test(e.message) && e.where === path.join(dir, A2ATS_FILE));
      for (const bad of [{ keys: 'post-rope' as const, b: 512 }, { keys: 'pre-rope' as KeyMode }]) {
        assert.throws(() => calibrateA2ATS({ checkpoint: dir, text: CALIBRATION, codebookSize: 16, ...bad }), (e: unknown) => e instanceof ConfigError && e.where === '--keys');
      }
      assert.equal(loadCodebooks(dir)!.meta.keys, 'pre-rope', 'refused before anything was written');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('`moecat calibrate --keys` is checked before any loading: an unknown mode or --method chess is refused (one line, exit 2); post-rope is accepted', () => {
    const cli = path.join(__dirname, '..', '..', 'cli', 'main.js');
    const env = { ...process.env, MOECAT_BACKEND: testBackendName() };
    const run = (extra: string[]) => spawnSync(process.execPath, [cli, 'calibrate', '--checkpoint', 'no-such-run', '--data', 'no-such-data', ...extra], { encoding: 'utf8', env, timeout: 60000 });
    for (const [extra, msg] of [
      [['--method', 'a2ats', '--keys', 'pre-rope'], /^error: --keys: --keys must be one of wrope, post-rope, got 'pre-rope'$/],
      [['--method', 'a2ats', '--keys', ''], /^error: --keys: --keys must be one of wrope, post-rope, got ''$/],
      [['--method', 'chess', '--keys', 'post-rope'], /^error: --keys: --keys applies to --method a2ats only$/],
    ] as const) {
      const r = run([...extra]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr.trim(), msg);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
    const ok = run(['--method', 'a2ats', '--keys', 'post-rope']);
    assert.equal(ok.status, 2, ok.stderr);
    assert.doesNotMatch(ok.stderr, /--keys/);
    assert.match(ok.stderr, /no-such-run/);
  });
});

/**
 * A2ATS (arXiv 2502.12665): query-aware VQ identities, WRoPE, retrieval invariants, exactness
 * at ratio 1 (head group and whole model), seeded k-means++, and calibration files.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { RngStream } from '../../core/rng';
import { loadCheckpoint } from '../../core/checkpoint';
import { cholesky, dot, kmeans } from '../../core/linalg';
import { rotate, RopeSpec } from '../../inference/kv/rope';
import { queryCovariance, trainCodebook, weightedError, lookupTable } from '../../inference/kv/quantizer';
import { A2ATSHeadGroup, A2ATSOptions, isPinned } from '../../inference/kv/attention';
import { A2ATSCache, generateA2ATS, hostForward } from '../../inference/kv/model';
import { A2ATS_FILE, calibrateA2ATS, calibrateA2ATSMethod, calibrateModel, defaultCodebookSize, loadCodebooks } from '../../inference/kv/calibrate';
import { PreparedData } from '../../data/prepared';
import { loadServingModel } from '../../inference/loadModel';
import { loadKvMode } from '../../inference/kv/options';
import { ConfigError } from '../../core/errors';
import { generate, step } from '../../inference/generate';
import { makeModel, testTokenizer, tinyModelConfig, tmpDir, writeModelCheckpoint } from '../inference/fixtures';
import { ModelConfigInput } from '../../model/config';
import * as tf from '@tensorflow/tfjs';

function randn(n: number, rng: RngStream, scales?: number[]): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * (scales ? scales[i % scales.length] : 1);
  return a;
}

const D = 8;
const rope: RopeSpec = { offset: 2, dim: 6, base: 10000 };
const opts: A2ATSOptions = { window: 16, sinks: 4, b: 128, ratio: 0.05 };

/** A head group of 2 query heads with n random keys and a small query-aware codebook. */
function group(n: number, ratio = opts.ratio) {
  const rng = RngStream.of(1, 'spec-a2ats-keys');
  const keys = randn(n * D, rng);
  const qs = randn(64 * D, rng);
  const cb = trainCodebook(keys, n, D, RngStream.of(1, 'spec-a2ats-km'), { size: 16, queries: qs, nQueries: 64 });
  const g = new A2ATSHeadGroup({ dk: D, dv: D, groupSize: 2, rope, scale: 1 / Math.sqrt(D) }, cb, { ...opts, ratio });
  const vals = randn(n * D, rng);
  for (let s = 0; s < n; s++) g.append(keys.subarray(s * D, (s + 1) * D), vals.subarray(s * D, (s + 1) * D));
  return { g, cb, q: [randn(D, rng), randn(D, rng)] };
}

describe('A2ATS query-aware vector quantisation', () => {
  it('query-weighted error (k−c)^T H (k−c) equals ||(k−c)·L||² after the Cholesky map (float64, rel 1e-12)', () => {
    const rng = RngStream.of(3, 'spec-qavq');
    const H = queryCovariance(randn(50 * D, rng, [3, 1, 0.2, 1, 5, 0.5, 1, 2]), 50, D);
    const L = cholesky(H, D);
    for (let t = 0; t < 20; t++) {
      const k = randn(D, rng);
      const c = randn(D, rng);
      let e = 0;
      for (let j = 0; j < D; j++) {
        let s = 0;
        for (let i = j; i < D; i++) s += (k[i] - c[i]) * L[i * D + j];
        e += s * s;
      }
      const w = weightedError(H, k, c, D);
      assert.ok(Math.abs(w - e) <= 1e-12 * Math.abs(w), `${w} vs ${e}`);
    }
  });

  it('H is scaled to unit RMS (plus 1e-6·I) and L·L^T reproduces it', () => {
    const rng = RngStream.of(4, 'spec-h');
    const H = queryCovariance(randn(40 * D, rng), 40, D);
    let ss = 0;
    for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) ss += (H[i * D + j] - (i === j ? 1e-6 : 0)) ** 2;
    assert.ok(Math.abs(Math.sqrt(ss / (D * D)) - 1) < 1e-12);
    const L = cholesky(H, D);
    for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) assert.ok(Math.abs(dot(L, L, D, i * D, j * D) - H[i * D + j]) < 1e-12);
  });

  it('query-aware codebooks approximate q·k better than plain k-means on anisotropic queries', () => {
    const rng = RngStream.of(5, 'spec-aniso');
    const n = 600;
    const keys = randn(n * D, rng);
    const qScale = [8, 0.1, 0.1, 0.1, 6, 0.1, 0.1, 0.1];
    const qs = randn(200 * D, rng, qScale);
    const mse = (queryAware: boolean) => {
      const cb = trainCodebook(keys, n, D, RngStream.of(5, 'km'), { size: 16, queries: queryAware ? qs : undefined, nQueries: 200 });
      const g = new A2ATSHeadGroup({ dk: D, dv: D, groupSize: 1, rope: { offset: 0, dim: 0, base: 10000 }, scale: 1 }, cb, opts);
      for (let s = 0; s < n; s++) g.append(keys.subarray(s * D, (s + 1) * D), keys.subarray(s * D, (s + 1) * D));
      let e = 0;
      for (let r = 0; r < 50; r++) {
        const q = qs.subarray(r * D, (r + 1) * D);
        const a = g.approxScores(q, n - 1);
        for (let s = 0; s < n; s++) e += (a[s] - dot(q, keys, D, 0, s * D)) ** 2;
      }
      return e;
    };
    assert.ok(mse(true) < 0.7 * mse(false), `query-aware ${mse(true)} vs plain ${mse(false)}`);
  });

  it('table-lookup scores equal R_b q · c(code) bitwise (same float64 accumulation order)', () => {
    const { g, cb, q } = group(120);
    const qb = rotate(q[0], opts.b, rope);
    const T = lookupTable(cb, qb);
    const a = g.approxScores(q[0], g.length - 1);
    for (let s = 0; s < g.length; s++) {
      const c = g.codes[s];
      assert.equal(a[s], T[c]);
      assert.equal(a[s], dot(qb, cb.centroids, D, 0, c * D));
    }
  });

  it('k-means++ is deterministic for a seed and changes with it', () => {
    const X = randn(300 * 4, RngStream.of(6, 'spec-km'));
    const a = kmeans(X, 300, 4, 12, RngStream.of(9, 'k'));
    const b = kmeans(X, 300, 4, 12, RngStream.of(9, 'k'));
    const c = kmeans(X, 300, 4, 12, RngStream.of(10, 'k'));
    assert.deepEqual(Array.from(a.centroids), Array.from(b.centroids));
    assert.deepEqual(Array.from(a.assign), Array.from(b.assign));
    assert.notDeepEqual(Array.from(a.centroids), Array.from(c.centroids));
  });
});

describe('A2ATS windowed RoPE and retrieval', () => {
  it('a key exactly b positions back scores the same under WRoPE as under exact RoPE (rel 1e-12)', () => {
    const { g, q } = group(140);
    const pos = 139;
    const s = pos - opts.b; // 11: outside the window of 16
    const w = g.wropeScores(q[0], pos)[s];
    const exact = dot(rotate(q[0], pos, rope), rotate(g.keys[s], s, rope), D);
    assert.ok(Math.abs(w - exact) <= 1e-12 * Math.max(1, Math.abs(exact)), `${w} vs ${exact}`);
  });

  it('the selection always holds the window and the sinks, plus at most K keys per query head', () => {
    const { g, q } = group(300);
    for (const pos of [40, 150, 299]) {
      const sel = new Set(g.select(q, pos));
      const n = pos + 1;
      let pinned = 0;
      for (let s = 0; s < n; s++) if (isPinned(s, pos, opts)) {
        pinned++;
        assert.ok(sel.has(s), `pinned key ${s} missing at ${pos}`);
      }
      assert.ok(sel.size <= pinned + 2 * Math.ceil(opts.ratio * n));
      assert.ok(sel.size > pinned);
      for (const s of sel) assert.ok(s <= pos);
    }
  });

  it('with ratio 1 the output equals exact attention bitwise, and exact attention matches an independent reference', () => {
    const { g, q } = group(90, 1);
    const pos = 89;
    const r = g.attend(q, pos);
    assert.equal(r.selected.length, 90);
    assert.deepEqual(r.out.map((o) => Array.from(o)), g.attendExact(q, pos).map((o) => Array.from(o)));
    // Reference: softmax(R_pos q · R_s k / sqrt(D)) · v in float64.
    const qr = rotate(q[0], pos, rope);
    const logits = g.keys.map((k, s) => dot(qr, rotate(k, s, rope), D) / Math.sqrt(D));
    const mx = Math.max(...logits);
    const p = logits.map((x) => Math.exp(x - mx));
    const z = p.reduce((a, b) => a + b, 0);
    for (let d = 0; d < D; d++) {
      const ref = p.reduce((a, w, s) => a + (w / z) * g.values[s][d], 0);
      assert.ok(Math.abs(r.out[0][d] - ref) < 1e-5, `${r.out[0][d]} vs ${ref}`);
    }
  });
});

describe('A2ATS whole-model decode', function () {
  this.timeout(300000);
  const gqaConfig: ModelConfigInput = { ...tinyModelConfig, attention: { type: 'gqa', nHeads: 4, nKvHeads: 2, headDim: 8 } };
  const prompt = [5, 17, 99, 3, 42, 7, 7, 250, 31, 64, 12, 200];

  for (const [name, cfg] of [['MLA', tinyModelConfig], ['GQA', gqaConfig]] as const) {
    it(`${name}: host-tier prefill logits match the tfjs model (abs 1e-4) and ratio-1 greedy decode equals inference/generate`, () => {
      const m = makeModel(cfg);
      try {
        const cache = new A2ATSCache(m.config, null, { window: 4, sinks: 2, b: 2048, ratio: 1 });
        const host = hostForward(m, cache, prompt, false).logits;
        const ref = step(m, prompt, 0, undefined);
        const refLogits = ref.logits.dataSync();
        tf.dispose([ref.logits, ref.ffn, ...ref.caches.flatMap((c) => [c[0].k, c[0].v, c[1].k, c[1].v])]);
        for (let i = 0; i < refLogits.length; i++) assert.ok(Math.abs(host[i] - refLogits[i]) < 1e-4, `logit ${i}: ${host[i]} vs ${refLogits[i]}`);
        const o = { maxTokens: 20, temperature: 0, topP: 1, topK: 0, seed: 0 };
        const a = generateA2ATS(m, prompt, o, null, { window: 4, sinks: 2, ratio: 1 });
        const e = generate(m, prompt, o);
        assert.deepEqual(a.ids, e.ids);
        assert.equal(a.attendedShare, 1);
      } finally {
        m.store.dispose();
      }
    });
  }

  it('calibrateA2ATS writes a2ats.safetensors beside the checkpoint; checksums still verify; codebooks round-trip; sparse decode runs', () => {
    const dir = tmpDir('moecat-a2ats-');
    try {
      const m0 = makeModel();
      const tok = testTokenizer();
      writeModelCheckpoint(dir, m0.config, 7, tok.toJSON());
      m0.store.dispose();
      const text = 'the quick brown fox jumps over the lazy dog; the model says hello there, then stops. '.repeat(3);
      assert.throws(() => loadKvMode(dir, 'a2ats', 0.1), (e: unknown) => e instanceof ConfigError && /a2ats\.safetensors/.test(e.message) && e.where === '--kv');
      const r = calibrateA2ATS({ checkpoint: dir, text, codebookSize: 32, seed: 1, b: 512 });
      assert.equal(path.basename(r.file), A2ATS_FILE);
      assert.ok(fs.existsSync(r.file));
      assert.equal(r.codebooks, 2 * 2 * 2); // layers × blocks × KV heads (MLA: one per head)
      assert.equal(r.codebookSize, 32);
      const ck = loadCheckpoint(dir); // verifies every listed checksum
      assert.ok(!ck.files.has(A2ATS_FILE));
      const loaded = loadCodebooks(dir)!;
      assert.equal(loadKvMode(dir, 'full', 0.1), null);
      assert.equal(loadKvMode(dir, 'a2ats', 0.25)!.opts.b, 512); // b travels with the codebooks
      assert.throws(() => loadKvMode(dir, 'a2ats', 0), (e: unknown) => e instanceof ConfigError && e.where === '--kv-ratio');
      assert.throws(() => loadKvMode(dir, 'sparse', 0.1), (e: unknown) => e instanceof ConfigError && e.where === '--kv');
      const m = makeModel();
      try {
        const again = calibrateModel(m, tok.encode(text), { codebookSize: 32, seed: 1, b: 512 });
        for (const [k, cb] of again) assert.deepEqual(Array.from(loaded.codebooks.get(k)!.centroids), Array.from(cb.centroids));
        const out = generateA2ATS(m, tok.encode('the quick brown fox jumps over the lazy dog; the model'), { maxTokens: 20, temperature: 0, topP: 1, topK: 0, seed: 0 }, loaded.codebooks, { window: 4, sinks: 2, ratio: 0.1, b: 512 });
        assert.equal(out.ids.length, 20);
        assert.ok(out.attendedShare < 1, `attended share ${out.attendedShare}`);
      } finally {
        m.store.dispose();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the `calibrate --method a2ats` entry reads a prepared corpus round-robin and writes codebooks of the default size', () => {
    const dir = tmpDir('moecat-a2ats-m-');
    try {
      const m0 = makeModel();
      writeModelCheckpoint(dir, m0.config, 7, testTokenizer().toJSON());
      m0.store.dispose();
      const src = (name: string, base: number) => ({ name, tokens: Int32Array.from({ length: 300 }, (_, i) => (base + i * 7) % 260), docOffsets: Int32Array.from([0, 300]), documents: 1 });
      const data = { dir: '(memory)', manifest: {}, tokenizerJson: '', sources: new Map([['a', src('a', 1)], ['b', src('b', 5)]]) } as unknown as PreparedData;
      const m = loadServingModel(dir);
      try {
        const r = calibrateA2ATSMethod(m, data, { tokens: 512, seqLen: 64, seed: 2 });
        assert.equal(r.summary.tokens, 512);
        assert.equal(r.summary.codebookSize, defaultCodebookSize(512));
        assert.equal(defaultCodebookSize(512), 32);
        assert.equal(loadCodebooks(dir)!.codebooks.size, 8);
        const sized = calibrateA2ATSMethod(m, data, { tokens: 512, seqLen: 64, seed: 2, codebookSize: 16 });
        assert.equal(sized.summary.codebookSize, 16);
        assert.equal((loadCodebooks(dir)!.codebooks.values().next().value as { M: number }).M, 16);
      } finally {
        m.store.dispose();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('`moecat calibrate --codebook-size` is refused before any loading when out of range or with chess (one line, exit 2)', () => {
    const cli = path.join(__dirname, '..', '..', 'cli', 'main.js');
    const run = (extra: string[]) => spawnSync(process.execPath, [cli, 'calibrate', '--checkpoint', 'no-such-run', '--data', 'no-such-data', '--tokens', '512', ...extra], { encoding: 'utf8', timeout: 30000 });
    for (const [extra, msg] of [
      [['--method', 'a2ats', '--codebook-size', '1'], /--codebook-size must be an integer in \[2, --tokens = 512\], got 1/],
      [['--method', 'a2ats', '--codebook-size', '1024'], /--codebook-size must be an integer in \[2, --tokens = 512\], got 1024/],
      [['--method', 'chess', '--codebook-size', '64'], /--codebook-size applies to --method a2ats only/],
    ] as const) {
      const r = run([...extra]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, msg);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });
});

/**
 * The batched host decode path (inference/hostDecode.ts, native/decode.c): the native matmul
 * gives gemm's canonical bits for any row count; a token's logits are the same bits alone, in a
 * decode batch with other sequences at other positions, and inside its prompt (prefill rows),
 * with the native and with the JS kernels; bad rows are refused with a clear message.
 */
import { strict as assert } from 'assert';
import { useTestBackend } from '../helpers/backend';
import { makeModel, tinyModelConfig } from './fixtures';
import { defaultAddonPath, requireAddon } from '../../core/native/addon';
import { cacheShape, HostDecoder, HostSequence } from '../../inference/hostDecode';
import { decodeKernels, jsKernels, restoreDecodeKernels, setDecodeKernels } from '../../inference/decodeKernels';
import { ServingModel } from '../../inference/loadModel';
import { attentionPrefixes, ffnPrefixes, SparsityPlan, zeroThresholds } from '../../inference/sparse';

function nativeBuilt(): boolean {
  try {
    const a = requireAddon(defaultAddonPath()) as unknown as { decodeMatmul?: unknown };
    return typeof a.decodeMatmul === 'function';
  } catch {
    return false;
  }
}

function rand(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  });
}

const prompts = [
  [5, 17, 200, 3, 3, 99, 140],
  [8, 61, 250],
  [12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
];

/** Logits of each prompt's last token, then of `steps` more tokens, each sequence run alone. */
function alone(dec: HostDecoder, m: ServingModel, ids: number[], more: number[]): Float32Array[] {
  const seq = new HostSequence(m.config);
  const out: Float32Array[] = [];
  out.push(dec.run(ids.map((token, pos) => ({ seq, token, pos })), ids.map((_, i) => i === ids.length - 1)).logits);
  for (const token of more) out.push(dec.run([{ seq, token, pos: seq.length }], [true]).logits);
  return out;
}

describe('batched host decode path', () => {
  let m: ServingModel;
  before(async () => {
    await useTestBackend();
    m = makeModel(tinyModelConfig, 3);
  });
  after(() => m.store.dispose());

  it('decodeMatmul gives the bits of the canonical GEMM (sgemm) for 1..40 rows on every GEMM variant, and each row its own bits in any batch', function () {
    if (!nativeBuilt()) this.skip();
    const a = requireAddon(defaultAddonPath()) as unknown as {
      sgemm: (...x: unknown[]) => void;
      decodeMatmul: (x: Float32Array, W: Float32Array, y: Float32Array, M: number, K: number, N: number, t: number) => void;
      setIsa: (name: string) => boolean;
      gemmInfo: () => { isa: string };
    };
    const isa = a.gemmInfo().isa;
    // sgemm's bits are the same on every variant; decodeMatmul's eight-row AVX-512 kernel runs
    // only with avx512 selected, the portable strips otherwise: both must give them.
    for (const v of ['scalar', 'avx2', 'avx512']) {
      if (!a.setIsa(v)) continue;
      try {
        checkDecodeMatmul(a, v);
      } finally {
        a.setIsa(isa);
      }
    }
    assert.throws(() => a.decodeMatmul(new Float32Array(3), new Float32Array(4), new Float32Array(4), 2, 2, 2, 0), /sizes do not match/);
  });

  function checkDecodeMatmul(a: { sgemm: (...x: unknown[]) => void; decodeMatmul: (x: Float32Array, W: Float32Array, y: Float32Array, M: number, K: number, N: number, t: number) => void }, v: string): void {
    for (const [K, N] of [[33, 70], [192, 512], [7, 3], [20, 128], [16, 1100]]) {
      const W = rand(K * N, K + N);
      for (const M of [1, 3, 4, 6, 8, 9, 16, 17, 40]) {
        const x = rand(M * K, M);
        const ref = new Float32Array(M * N);
        a.sgemm(x, W, ref, 1, 1, 1, M, N, K, 0, 0, 1);
        const got = new Float32Array(M * N);
        a.decodeMatmul(x, W, got, M, K, N, 0);
        assert.deepEqual(got, ref, `${v}: M=${M} K=${K} N=${N}`);
        const one = new Float32Array(N);
        a.decodeMatmul(x.subarray((M - 1) * K), W, one, 1, K, N, 0);
        assert.deepEqual(one, got.subarray((M - 1) * N), `${v}: last row alone, M=${M}`);
      }
    }
  }

  it('decodeAttendRows gives each row the bits of decodeAttend alone (rows of a prompt, any thread count, keys transposed or not)', function () {
    if (!nativeBuilt()) this.skip();
    type Attend = (q: Float32Array, k: Float32Array, v: Float32Array, o: Float32Array, S: number, H: number, Hk: number, dk: number, dv: number, scale: number) => void;
    type AttendRows = (q: Float32Array, k: Float32Array, v: Float32Array, o: Float32Array, S0: number, n: number, H: number, Hk: number, dk: number, dv: number, scale: number, threads: number) => void;
    const a = requireAddon(defaultAddonPath()) as unknown as { decodeAttend: Attend; decodeAttendRows: AttendRows };
    // GQA (4 heads over 2), MHA and absorbed MLA (6 heads over one latent: transposed at n = 1)
    // shapes; n below and above the transpose threshold; S past 64 lanes.
    for (const [H, Hk, dk, dv] of [[4, 2, 8, 6], [3, 3, 48, 32], [6, 1, 80, 64]]) {
      for (const [S0, n] of [[0, 1], [5, 3], [0, 90], [70, 1], [17, 40]]) {
        const S = S0 + n;
        const q = rand(n * H * dk, S + n);
        const k = rand(S * Hk * dk, 7 * S);
        const v = rand(S * Hk * dv, 11 * S);
        const ref = new Float32Array(n * H * dv);
        for (let r = 0; r < n; r++) a.decodeAttend(q.subarray(r * H * dk, (r + 1) * H * dk), k, v, ref.subarray(r * H * dv, (r + 1) * H * dv), S0 + r + 1, H, Hk, dk, dv, 0.3);
        for (const threads of [1, 2]) {
          const got = new Float32Array(n * H * dv);
          a.decodeAttendRows(q, k, v, got, S0, n, H, Hk, dk, dv, 0.3, threads);
          assert.deepEqual(got, ref, `H=${H} Hk=${Hk} S0=${S0} n=${n} threads=${threads}`);
        }
        // Against the JS kernel (JS numbers, Math.exp): the same numbers to rounding.
        const js = new Float32Array(n * H * dv);
        jsKernels.attendRows(q, k, v, js, S0, n, H, Hk, dk, dv, 0.3);
        for (let i = 0; i < js.length; i++) assert.ok(Math.abs(js[i] - ref[i]) < 1e-5, `attention output ${i}: ${js[i]} vs ${ref[i]}`);
      }
    }
    assert.throws(() => a.decodeAttendRows(new Float32Array(6), new Float32Array(12), new Float32Array(8), new Float32Array(4), 3, 2, 2, 1, 3, 2, 0.5, 1), /sizes do not match/);
  });

  it('decodeFfn: each row its own bits in any batch and thread count, and the JS FFN to rounding', function () {
    if (!nativeBuilt()) this.skip();
    type Ffn = (x: Float32Array, Wg: Float32Array, Wu: Float32Array, Wd: Float32Array, y: Float32Array, M: number, d: number, h: number, threads: number) => void;
    const a = requireAddon(defaultAddonPath()) as unknown as { decodeFfn: Ffn };
    for (const [d, h] of [[24, 40], [192, 512]]) {
      // Gate weights scaled up so silu sees large negative and positive inputs too.
      const Wg = rand(d * h, d).map((w) => 8 * w);
      const Wu = rand(d * h, h);
      const Wd = rand(h * d, d + h);
      for (const M of [1, 3, 16, 37]) {
        const x = rand(M * d, M + d);
        const y = new Float32Array(M * d);
        a.decodeFfn(x, Wg, Wu, Wd, y, M, d, h, 1);
        const y2 = new Float32Array(M * d);
        a.decodeFfn(x, Wg, Wu, Wd, y2, M, d, h, 2);
        assert.deepEqual(y2, y, `threads, M=${M}`);
        for (const r of [0, M - 1]) {
          const one = new Float32Array(d);
          a.decodeFfn(x.subarray(r * d, (r + 1) * d), Wg, Wu, Wd, one, 1, d, h, 1);
          assert.deepEqual(one, y.subarray(r * d, (r + 1) * d), `row ${r} alone, M=${M}`);
        }
        const js = new Float32Array(M * d);
        jsKernels.ffn(x, Wg, Wu, Wd, js, M, d, h);
        let gap = 0;
        let top = 0;
        for (let i = 0; i < js.length; i++) {
          gap = Math.max(gap, Math.abs(js[i] - y[i]));
          top = Math.max(top, Math.abs(js[i]));
        }
        assert.ok(gap <= 1e-5 * top && top > 0, `M=${M} d=${d}: max |Δ| ${gap} of ${top}`);
      }
    }
    assert.throws(() => a.decodeFfn(new Float32Array(5), new Float32Array(12), new Float32Array(12), new Float32Array(12), new Float32Array(6), 2, 3, 4, 1), /sizes do not match/);
  });

  for (const which of ['native', 'js'] as const) {
    it(`${which} kernels: a token's logits are the same bits alone, inside its prompt and in a batch with other sequences`, function () {
      if (which === 'native' && !nativeBuilt()) this.skip();
      const prev = setDecodeKernels(which);
      try {
        assert.equal(decodeKernels().name, which);
        const dec = new HostDecoder(m);
        const more = [[40, 41, 42], [7, 7, 7], [100, 3, 9]];
        const refs = prompts.map((p, i) => alone(dec, m, p, more[i]));
        // The same tokens fed one by one (prompt rows one step each) give the prompt's last logits.
        const seq0 = new HostSequence(m.config);
        let z: Float32Array = new Float32Array(0);
        prompts[0].forEach((token, pos) => (z = dec.run([{ seq: seq0, token, pos }], [true]).logits));
        assert.deepEqual(z, refs[0][0]);
        // All three prompts prefilled in one run, then decoded together.
        const seqs = prompts.map(() => new HostSequence(m.config, 1));
        const rows = prompts.flatMap((p, i) => p.map((token, pos) => ({ seq: seqs[i], token, pos })));
        const last = rows.map((r, i) => i === rows.length - 1 || rows[i + 1].seq !== r.seq);
        const V = m.config.vocabSize;
        const pre = dec.run(rows, last).logits;
        prompts.forEach((_, i) => assert.deepEqual(pre.slice(i * V, (i + 1) * V), refs[i][0], `prompt ${i}`));
        for (let s = 0; s < 3; s++) {
          const r = dec.run(seqs.map((seq, i) => ({ seq, token: more[i][s], pos: seq.length })), [true, true, true]).logits;
          prompts.forEach((_, i) => assert.deepEqual(r.slice(i * V, (i + 1) * V), refs[i][s + 1], `step ${s} row ${i}`));
        }
        // Logits vary by row: the comparisons above compare different numbers.
        assert.notDeepEqual(refs[0][1], refs[1][1]);
      } finally {
        restoreDecodeKernels(prev);
      }
    });
  }

  it('the native and JS kernels agree to float rounding', function () {
    if (!nativeBuilt()) this.skip();
    const got: Float32Array[] = [];
    for (const which of ['native', 'js'] as const) {
      const prev = setDecodeKernels(which);
      try {
        got.push(alone(new HostDecoder(m), m, prompts[2], [4, 5])[2]);
      } finally {
        restoreDecodeKernels(prev);
      }
    }
    let gap = 0;
    for (let i = 0; i < got[0].length; i++) gap = Math.max(gap, Math.abs(got[0][i] - got[1][i]));
    assert.ok(gap < 1e-3 && gap > 0, `max |Δlogit| ${gap}`);
  });

  it('an MLA sequence caches the latent (kvLoraRank + rope keys, kvLoraRank values per position and block), not the expanded heads', () => {
    const a = m.config.attention;
    assert.equal(a.type, 'mla');
    if (a.type !== 'mla') return;
    assert.deepEqual(cacheShape(m.config), { Hk: 1, dk: a.kvLoraRank + a.ropeHeadDim, dv: a.kvLoraRank });
    const seq = new HostSequence(m.config, 16);
    assert.equal(seq.bytes, 4 * 16 * (2 * a.kvLoraRank + a.ropeHeadDim) * 2 * m.config.nLayers);
    // Decoding fills it: position p's keys start with its latent, whose copy is its values.
    const dec = new HostDecoder(m);
    dec.run([5, 17, 200].map((token, pos) => ({ seq, token, pos })), [false, false, true]);
    const kw = a.kvLoraRank + a.ropeHeadDim;
    for (let b = 0; b < 2 * m.config.nLayers; b++) {
      for (let p = 0; p < 3; p++) {
        const lat: Float32Array = seq.v[b].subarray(p * a.kvLoraRank, (p + 1) * a.kvLoraRank);
        assert.ok(lat.some((x) => x !== 0), `block ${b} position ${p} has a latent`);
        assert.deepEqual(seq.k[b].subarray(p * kw, p * kw + a.kvLoraRank), lat);
      }
    }
  });

  it('refuses rows out of order, tokens outside the vocabulary and positions past the context', () => {
    const dec = new HostDecoder(m);
    const seq = new HostSequence(m.config);
    assert.throws(() => dec.run([{ seq, token: 1, pos: 1 }], [true]), /position 1: its sequence expects position 0/);
    assert.throws(() => dec.run([{ seq, token: m.config.vocabSize, pos: 0 }], [true]), /outside the vocabulary/);
    const full = new HostSequence(m.config);
    const ids = Array.from({ length: m.config.maxSeqLen }, (_, i) => i % 50);
    dec.run(ids.map((token, pos) => ({ seq: full, token, pos })), ids.map(() => false));
    assert.throws(() => dec.run([{ seq: full, token: 1, pos: full.length }], [true]), /past the context/);
  });
});

describe('batched host decode path with CHESS sparsity', () => {
  let m: ServingModel;
  before(async () => {
    await useTestBackend();
    m = makeModel(tinyModelConfig, 3);
  });
  after(() => m.store.dispose());

  /** Thresholds at `tau` on every FFN channel and attention input (zero: keep everything). */
  function plan(tau: number): SparsityPlan {
    const t = zeroThresholds(ffnPrefixes(m.config), attentionPrefixes(m.config));
    for (const f of t.ffn.values()) f.chess.fill(tau);
    for (const a of t.attention.values()) {
      a.q = tau;
      a.o = tau;
    }
    return { ffn: 'chess', attention: true, thresholds: t };
  }

  for (const which of ['native', 'js'] as const) {
    it(`${which} kernels: zero thresholds keep every channel and give the dense tokens; real thresholds skip channels and a row's bits do not depend on its batch`, function () {
      if (which === 'native' && !nativeBuilt()) this.skip();
      const prev = setDecodeKernels(which);
      try {
        const dec = new HostDecoder(m);
        const run = (p: SparsityPlan | null, batch: boolean) => {
          const seqs = prompts.map(() => new HostSequence(m.config));
          prompts.forEach((ids, i) => dec.run(ids.map((token, pos) => ({ seq: seqs[i], token, pos })), ids.map(() => false)));
          const out: Float32Array[][] = prompts.map(() => []);
          for (let s = 0; s < 4; s++) {
            if (batch) {
              const z = dec.run(seqs.map((seq, i) => ({ seq, token: (7 * s + i) % 200, pos: seq.length })), [true, true, true], p).logits;
              prompts.forEach((_, i) => out[i].push(z.slice(i * m.config.vocabSize, (i + 1) * m.config.vocabSize)));
            } else {
              seqs.forEach((seq, i) => out[i].push(dec.run([{ seq, token: (7 * s + i) % 200, pos: seq.length }], [true], p).logits));
            }
          }
          return out;
        };
        const dense = run(null, true);
        const c0 = { ...dec.counters };
        const zero = run(plan(0), true);
        assert.equal(dec.counters.ffnKept - c0.ffnKept, dec.counters.ffnTotal - c0.ffnTotal, 'zero thresholds keep every FFN channel');
        assert.ok(dec.counters.ffnTotal > c0.ffnTotal);
        let gap = 0;
        dense.forEach((rows, i) => rows.forEach((z, s) => z.forEach((v, j) => (gap = Math.max(gap, Math.abs(v - zero[i][s][j]))))));
        assert.ok(gap < 1e-4, `zero-threshold CHESS vs dense: max |Δlogit| ${gap}`);
        const c1 = { ...dec.counters };
        const sparseBatch = run(plan(0.05), true);
        const kept = (dec.counters.ffnKept - c1.ffnKept) / (dec.counters.ffnTotal - c1.ffnTotal);
        assert.ok(kept > 0 && kept < 1, `kept share ${kept}`);
        assert.ok(dec.counters.attnKept - c1.attnKept < dec.counters.attnTotal - c1.attnTotal, 'attention inputs skipped');
        assert.deepEqual(run(plan(0.05), false), sparseBatch, 'a row alone equals the row in the batch');
        assert.notDeepEqual(sparseBatch, dense);
      } finally {
        restoreDecodeKernels(prev);
      }
    });
  }
});

/**
 * moecat's GEMM (issue 22; native/gemm.h): every output element is one fmaf chain over k
 * ascending from zero, whatever the variant (scalar, AVX2, AVX-512) or thread count. Checked
 * against an independent JS implementation of that order (an exact fmaf by round-to-odd in
 * double), on random shapes with edge sizes, transposes and broadcast batches; then every
 * variant and thread count against each other on shapes that cross every blocking boundary.
 * The addon's other math is checked to give the same bits under every variant too.
 */
import { strict as assert } from 'assert';
import { nativeOptionsFromEnv } from '../../core/backend';
import { BackendError } from '../../core/errors';
import { GemmIsa, loadNativeKernels, NativeAddon, nativeAddon } from '../../core/native';
import { lcg } from '../helpers/native';

const probe = loadNativeKernels({ register: false });
const skipReason = probe.loaded ? '' : probe.reason ?? 'addon not loaded';

// ------------------------------------------------------------------------------ reference

const dbl = new Float64Array(1);
const words = new Uint32Array(dbl.buffer); // little-endian: words[0] holds the low bits

/** fmaf(a, b, c) exactly: a·b is exact in double; the sum is rounded to odd in double, then to float32 (correct since 53 ≥ 24 + 2). */
export function fmaf(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bb = s - p;
  const e = p - (s - bb) + (c - bb);
  if (e === 0 || !Number.isFinite(s)) return Math.fround(s);
  dbl[0] = s;
  if ((words[0] & 1) === 0) {
    // Move s one double ulp towards the exact value, which makes its last bit odd.
    if (e > 0 === s > 0) words[0] += 1; // magnitude up (no carry: the bit was 0)
    else if (words[0] === 0) {
      words[0] = 0xffffffff;
      words[1] -= 1;
    } else words[0] -= 1;
  }
  return Math.fround(dbl[0]);
}

/** C[bi] = op(A[bi % bA])·op(B[bi % bB]) in the canonical order. */
function refGemm(a: Float32Array, b: Float32Array, batch: number, bA: number, bB: number, M: number, N: number, K: number, ta: boolean, tb: boolean): Float32Array {
  const c = new Float32Array(batch * M * N);
  for (let bi = 0; bi < batch; bi++) {
    const ao = (bi % bA) * M * K;
    const bo = (bi % bB) * K * N;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let acc = 0;
        for (let k = 0; k < K; k++) acc = fmaf(a[ao + (ta ? k * M + i : i * K + k)], b[bo + (tb ? j * K + k : k * N + j)], acc);
        c[bi * M * N + i * N + j] = acc;
      }
    }
  }
  return c;
}

interface Case {
  batch: number;
  bA: number;
  bB: number;
  M: number;
  N: number;
  K: number;
  ta: boolean;
  tb: boolean;
}

function run(m: NativeAddon, c: Case, a: Float32Array, b: Float32Array, threads: number): Float32Array {
  const out = new Float32Array(c.batch * c.M * c.N).fill(Number.NaN); // every element must be written
  m.sgemm(a, b, out, c.batch, c.bA, c.bB, c.M, c.N, c.K, c.ta ? 1 : 0, c.tb ? 1 : 0, threads);
  return out;
}

const bytes = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);

function firstDiff(x: Float32Array, y: Float32Array): string {
  for (let i = 0; i < x.length; i++) if (!Object.is(x[i], y[i])) return `element ${i}: ${x[i]} vs ${y[i]}`;
  return 'none';
}

/** Random cases from edge sizes; 2 in 5 batched, some with a broadcast operand. */
function cases(n: number, seed: number, sizes: number[], maxWork: number): Case[] {
  let s = seed;
  const rnd = (k: number) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % k;
  };
  const out: Case[] = [];
  while (out.length < n) {
    const [M, N, K] = [sizes[rnd(sizes.length)], sizes[rnd(sizes.length)], sizes[rnd(sizes.length)]];
    const batched = rnd(5) < 2;
    const batch = batched ? 1 + rnd(3) : 1;
    const bcast = batched && rnd(2) === 0;
    const c: Case = { batch, bA: bcast && rnd(2) ? 1 : batch, bB: bcast ? 1 : batch, M, N, K, ta: rnd(2) === 1, tb: rnd(2) === 1 };
    if (c.bA === 1 && c.bB === 1) c.bB = batch;
    if (batch * M * N * K <= maxWork) out.push(c);
  }
  return out;
}

const ISAS: GemmIsa[] = ['scalar', 'avx2', 'avx512'];

describe('moecat GEMM: one fmaf chain over k per output element', function () {
  this.timeout(300000);
  let m: NativeAddon;
  let supported: GemmIsa[] = [];

  before(function () {
    if (skipReason) this.skip();
    m = nativeAddon()!;
    supported = m.gemmInfo().supported;
  });

  after(() => {
    if (!skipReason) loadNativeKernels({ register: false }); // back to the best variant, all cores
  });

  it('the JS reference fmaf rounds once (it differs from a*b+c rounded twice, and agrees with exact cases)', () => {
    // 1 + 2^-23 squared = 1 + 2^-22 + 2^-46: fused keeps the 2^-46 against c = -(1 + 2^-22).
    const x = Math.fround(1 + 2 ** -23);
    const c = -Math.fround(1 + 2 ** -22);
    assert.equal(fmaf(x, x, c), 2 ** -46);
    assert.equal(Math.fround(Math.fround(x * x) + c), 0);
    assert.equal(fmaf(3, 4, 5), 17);
    assert.equal(fmaf(0.5, -0.5, 0.25), 0);
  });

  it('every supported variant equals the JS reference on 62 random shapes with edge sizes, transposes and batches', function () {
    const list = cases(60, 7, [1, 2, 7, 13, 14, 15, 16, 17, 31, 32, 33, 255], 120000);
    list.push({ batch: 1, bA: 1, bB: 1, M: 3, N: 40, K: 600, ta: false, tb: true }); // three k blocks
    list.push({ batch: 2, bA: 2, bB: 1, M: 15, N: 33, K: 257, ta: true, tb: false });
    list.forEach((c, ci) => {
      const a = lcg(c.bA * c.M * c.K, 11 + ci, 1.5);
      const b = lcg(c.bB * c.K * c.N, 101 + ci, 1.5);
      const want = refGemm(a, b, c.batch, c.bA, c.bB, c.M, c.N, c.K, c.ta, c.tb);
      for (const isa of supported) {
        assert.ok(m.setIsa(isa));
        const got = run(m, c, a, b, 1);
        assert.ok(bytes(got).equals(bytes(want)), `${isa}, case ${JSON.stringify(c)}: ${firstDiff(got, want)}`);
      }
    });
  });

  it('every variant and 1-4 threads agree bit for bit on shapes crossing every block (k 256, rows 140, columns 1024, tiles split by rows and by columns)', () => {
    const big: Case[] = [
      { batch: 1, bA: 1, bB: 1, M: 300, N: 1100, K: 600, ta: false, tb: false },
      { batch: 1, bA: 1, bB: 1, M: 255, N: 1030, K: 513, ta: true, tb: true },
      { batch: 3, bA: 3, bB: 1, M: 129, N: 200, K: 255, ta: false, tb: true },
      { batch: 1, bA: 1, bB: 1, M: 1, N: 2049, K: 300, ta: false, tb: false },
      { batch: 1, bA: 1, bB: 1, M: 2000, N: 7, K: 129, ta: true, tb: false },
      // Just above the threading threshold (2e7 FLOPs): split by columns, then by rows.
      { batch: 1, bA: 1, bB: 1, M: 7, N: 2100, K: 700, ta: false, tb: true },
      { batch: 1, bA: 1, bB: 1, M: 2000, N: 40, K: 260, ta: true, tb: false },
    ];
    big.forEach((c, ci) => {
      const a = lcg(c.bA * c.M * c.K, 500 + ci, 2);
      const b = lcg(c.bB * c.K * c.N, 600 + ci, 2);
      m.setIsa('scalar');
      const want = run(m, c, a, b, 1);
      for (const isa of supported) {
        assert.ok(m.setIsa(isa));
        for (const threads of [1, 2, 3, 4]) {
          const got = run(m, c, a, b, threads);
          assert.ok(bytes(got).equals(bytes(want)), `${isa}, ${threads} threads, ${JSON.stringify(c)}: ${firstDiff(got, want)}`);
        }
      }
    });
  });

  it('K = 0 gives zeros and empty outputs are fine; bad sizes are a RangeError', () => {
    for (const isa of supported) {
      m.setIsa(isa);
      const out = new Float32Array(6).fill(7);
      m.sgemm(new Float32Array(0), new Float32Array(0), out, 1, 1, 1, 2, 3, 0, 0, 0, 0);
      assert.deepEqual([...out], [0, 0, 0, 0, 0, 0]);
      m.sgemm(new Float32Array(0), new Float32Array(4), new Float32Array(0), 1, 1, 1, 0, 2, 2, 0, 0, 0);
    }
    assert.throws(() => m.sgemm(new Float32Array(3), new Float32Array(4), new Float32Array(4), 1, 1, 1, 2, 2, 2, 0, 0, 0), RangeError);
  });

  it('names the variants, rejects an unknown one, and reports which this CPU runs', () => {
    const info = m.gemmInfo();
    assert.ok(info.supported.includes('scalar'));
    assert.ok(info.supported.includes(info.best));
    assert.ok(info.threads >= 1 && info.cores >= 1);
    assert.throws(() => m.setIsa('sse9' as GemmIsa), RangeError);
    for (const isa of ISAS) assert.equal(m.setIsa(isa), supported.includes(isa));
  });

  it('a variant this CPU cannot run is a fatal load error, not a fallback', () => {
    const missing = ISAS.find((i) => !supported.includes(i));
    if (!missing) {
      // Every variant runs here: check the message path with a variant name the addon rejects.
      assert.throws(() => nativeOptionsFromEnv({ MOECAT_ISA: 'avx1024' }), (e: unknown) => e instanceof BackendError && /MOECAT_ISA/.test(e.message));
      return;
    }
    const r = loadNativeKernels({ register: false, isa: missing });
    assert.equal(r.loaded, false);
    assert.equal(r.fatal, true);
    assert.match(r.reason ?? '', new RegExp(`cannot run the ${missing} GEMM variant`));
  });

  it('the environment is read at the edge with clear errors: MOECAT_ISA, MOECAT_THREADS, MOECAT_POOL_MB', () => {
    assert.deepEqual(nativeOptionsFromEnv({ MOECAT_ISA: 'avx2', MOECAT_THREADS: '3', MOECAT_POOL_MB: '0', MOECAT_NATIVE_ADAMW: '0' }), { isa: 'avx2', threads: 3, poolMb: 0, adamw: false });
    assert.throws(() => nativeOptionsFromEnv({ MOECAT_ISA: 'AVX2' }), (e: unknown) => e instanceof BackendError && /MOECAT_ISA: unknown GEMM variant 'AVX2'/.test(e.message));
    assert.throws(() => nativeOptionsFromEnv({ MOECAT_THREADS: '0' }), (e: unknown) => e instanceof BackendError && /MOECAT_THREADS/.test(e.message));
    assert.throws(() => nativeOptionsFromEnv({ MOECAT_THREADS: '2.5' }), (e: unknown) => e instanceof BackendError && /MOECAT_THREADS/.test(e.message));
    assert.throws(() => nativeOptionsFromEnv({ MOECAT_POOL_MB: 'lots' }), (e: unknown) => e instanceof BackendError && /MOECAT_POOL_MB/.test(e.message));
  });

  it('the addon\'s other math gives the same bits under every variant and thread count', () => {
    const N = 141 * 1419; // several pool chunks for the element-wise and row kernels
    const x = lcg(N, 3, 4);
    const y = lcg(N, 4, 4);
    const pos = x.map((v) => Math.abs(v) + 0.01);
    const run1 = (): Buffer[] => {
      const outs: Float32Array[] = [];
      const o = () => {
        const v = new Float32Array(N);
        outs.push(v);
        return v;
      };
      for (const op of [0, 1, 2, 3, 5, 6, 7, 8, 9]) m.unary(op, x, o());
      m.unary(4, pos, o());
      for (const op of [0, 1, 2, 3, 6]) m.binary(op, x, Int32Array.of(1), y, Int32Array.of(1), o(), Int32Array.of(N));
      for (const op of [0, 1, 2]) {
        const r = new Float32Array(1419);
        m.reduce(op, x, r, 1419, 141);
        outs.push(r);
      }
      m.softmax(x, o(), 1419, 141);
      m.softmaxFused(x, o(), 1419, 141);
      m.softmaxFusedGrad(outs[outs.length - 1], y, o(), 1419, 141);
      const lse = new Float32Array(29);
      const tg = Int32Array.from({ length: 29 }, (_, i) => (i * 7) % 141);
      outs.push(Float32Array.of(m.crossEntropy(x, tg, pos.subarray(0, 29), lse, 29, 141)), lse);
      m.crossEntropyGrad(x, tg, pos.subarray(0, 29), lse, 0.5, o(), 29, 141);
      const rinv = new Float32Array(29);
      m.rmsNorm(x, pos.subarray(0, 141), o(), rinv, 29, 141, 1e-6);
      outs.push(rinv);
      m.siluMul(x, y, o(), o(), N);
      m.siluMulGrad(x, y, outs[outs.length - 1], pos, o(), o(), N);
      // AdamW over three slices, 2^17 + 5 elements: several pool chunks.
      const n = 2 ** 17 + 5;
      const p = lcg(n, 9, 1);
      const g = lcg(n, 10, 1);
      const mm = new Float32Array(n);
      const vv = new Float32Array(n);
      for (let step = 1; step <= 2; step++) {
        m.adamw(p, g, mm, vv, Int32Array.of(0, 1000, 70000), Int32Array.of(1000, 69000, n - 70000), Float64Array.of(1e-3, 2e-3, 5e-4), Float64Array.of(0, 0.1, 0.1), 0.9, 0.95, 1 - 0.9 ** step, 1 - 0.95 ** step, 1e-16, 0.7, 0);
      }
      outs.push(p, mm, vv);
      return outs.map((v) => Buffer.from(v.buffer.slice(0)));
    };
    m.setIsa('scalar');
    m.setThreads(1);
    const want = run1();
    for (const isa of supported) {
      m.setIsa(isa);
      for (const threads of [1, 2, 3]) {
        m.setThreads(threads);
        run1().forEach((v, i) => assert.ok(v.equals(want[i]), `${isa}, ${threads} threads: output ${i} differs`));
      }
    }
  });
});

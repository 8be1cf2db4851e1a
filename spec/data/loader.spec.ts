import assert from 'assert';
import { createHash } from 'crypto';
import { MixtureLoader, Batch, LoaderOptions } from '../../data/loader';
import { MixtureConfig, parseMixture } from '../../data/mixture';
import { ConfigError, DataError } from '../../core/errors';
import { PreparedData } from '../../data/prepared';
import { preparedFixture } from './fixture';

const STAGED: MixtureConfig = {
  sources: { prose: 0.5, speeches: 0.3, code: 0.2 },
  stages: [
    { name: 'pretrain', startTokens: 0, weights: { prose: 0.5, speeches: 0.3, code: 0.2 } },
    { name: 'anneal', startTokens: 40_000, weights: { prose: 0.2, speeches: 0.2, code: 0.6 } },
    { name: 'long', startTokens: 80_000, weights: { prose: 0.45, speeches: 0.45, code: 0.1 }, seqLen: 128, ropeBase: 40_000 },
  ],
};

function batchHash(b: Batch): string {
  const h = createHash('sha256');
  for (const a of [b.inputs, b.targets, b.lossMask, b.segmentIds ?? new Int32Array(0)]) h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  h.update(JSON.stringify([b.sources, b.stage, b.seqLen, b.ropeBase ?? null]));
  return h.digest('hex');
}

describe('data/loader: staged mixtures, packing, resume and rank slices', () => {
  let data: PreparedData;
  let eos: number;
  const opts = (over: Partial<LoaderOptions> = {}): LoaderOptions => ({ dataDir: data.dir, data, mixture: STAGED, seed: 7, microBatchSize: 4, microBatches: 4, seqLen: 32, ...over });
  before(async () => {
    data = (await preparedFixture()).data;
    eos = data.manifest.tokenizer.eos;
  });

  it('switches stages at the first step boundary at or past each configured token count', () => {
    const l = new MixtureLoader(opts());
    const [, anneal, long] = l.stages;
    for (const st of [anneal, long]) {
      assert.ok(l.tokensBefore(st.startStep) >= st.startTokens, `${st.name} starts late enough`);
      assert.ok(l.tokensBefore(st.startStep - 1) < st.startTokens, `${st.name} starts on time`);
      assert.strictEqual(l.microbatch(st.startStep - 1, 0).stage, l.stages[st.index - 1].name);
      assert.strictEqual(l.microbatch(st.startStep, 0).stage, st.name);
    }
    assert.strictEqual(anneal.startStep, Math.ceil(40_000 / (16 * 32)));
    const b = l.microbatch(long.startStep, 3);
    assert.deepStrictEqual([b.seqLen, b.ropeBase, b.inputs.length], [128, 40_000, 4 * 128]);
    assert.strictEqual(l.tokensPerStep(long.startStep), 16 * 128);
    assert.strictEqual(l.stageAt(40_000 - 1).name, 'pretrain');
    assert.strictEqual(l.stageAt(anneal.startTokensActual).name, 'anneal');
  });

  it('realises each stage\'s source weights within ±3 percentage points of tokens', () => {
    const l = new MixtureLoader(opts());
    const TOL = 0.03;
    for (const st of l.stages) {
      const steps = Number.isFinite(st.steps) ? st.steps : 60;
      const tokens: Record<string, number> = { prose: 0, speeches: 0, code: 0 };
      let total = 0;
      for (let step = st.startStep; step < st.startStep + steps; step++) {
        for (let mb = 0; mb < 4; mb++) {
          const b = l.microbatch(step, mb);
          assert.strictEqual(b.stage, st.name);
          for (const s of b.sources!) tokens[s] += b.seqLen;
          total += b.batchSize * b.seqLen;
        }
      }
      assert.ok(steps * 16 >= 900, `${st.name}: ${steps * 16} sequences`);
      const wsum = Object.values(st.weights).reduce((a, v) => a + v, 0);
      for (const [name, w] of Object.entries(st.weights)) {
        const share = tokens[name] / total;
        assert.ok(Math.abs(share - w / wsum) <= TOL, `${st.name}/${name}: share ${share.toFixed(4)} vs weight ${(w / wsum).toFixed(4)}`);
      }
    }
  });

  it('reads each source as consecutive, non-overlapping windows across stages', () => {
    const l = new MixtureLoader(opts());
    const bySource = new Map<string, { pos: number; len: number }[]>();
    const long = l.stages[2];
    for (let step = 0; step < long.startStep + 20; step++) {
      const L = l.stageAtStep(step).seqLen;
      for (let mb = 0; mb < 4; mb++) for (const r of l.rowPlan(step, mb)) (bySource.get(r.source) ?? bySource.set(r.source, []).get(r.source)!).push({ pos: r.position, len: L });
    }
    for (const [name, reads] of bySource) {
      reads.sort((a, b) => a.pos - b.pos);
      assert.strictEqual(reads[0].pos, 0, name);
      for (let i = 1; i < reads.length; i++) assert.strictEqual(reads[i].pos, reads[i - 1].pos + reads[i - 1].len, `${name} read ${i}`);
    }
  });

  it('packs whole documents separated by EOS, with targets shifted by one and segment ids per document', () => {
    const l = new MixtureLoader(opts({ mixture: { sources: { code: 1 } }, seqLen: 1024, crossDocMask: true }));
    const src = data.sources.get('code')!;
    const docs = new Set<string>();
    for (let d = 0; d < src.documents; d++) docs.add(src.tokens.subarray(src.docOffsets[d], src.docOffsets[d + 1]).join(','));
    let interior = 0;
    let eosSeen = 0;
    for (let step = 0; step < 20; step++) {
      const b = l.microbatch(step, step % 4);
      for (let r = 0; r < b.batchSize; r++) {
        const L = b.seqLen;
        const inp = b.inputs.subarray(r * L, (r + 1) * L);
        const tgt = b.targets.subarray(r * L, (r + 1) * L);
        const seg = b.segmentIds!.subarray(r * L, (r + 1) * L);
        for (let t = 0; t + 1 < L; t++) assert.strictEqual(tgt[t], inp[t + 1]);
        assert.strictEqual(seg[0], 0);
        for (let t = 1; t < L; t++) assert.strictEqual(seg[t], seg[t - 1] + (inp[t - 1] === eos ? 1 : 0));
        const win = [...inp, tgt[L - 1]];
        const cuts = win.flatMap((v, i) => (v === eos ? [i] : []));
        eosSeen += cuts.length;
        // Every run strictly between two EOS tokens is one whole document.
        for (let c = 1; c < cuts.length; c++) {
          assert.ok(docs.has(win.slice(cuts[c - 1] + 1, cuts[c]).join(',')), 'interior run is a document');
          interior++;
        }
      }
      assert.ok(b.lossMask.every((m) => m === 1));
    }
    assert.ok(eosSeen > 10 && interior > 0, `eos ${eosSeen}, whole documents ${interior}`);
  });

  it('is a pure function of (seed, step, microbatch): out-of-order reads match, other seeds differ', () => {
    const a = new MixtureLoader(opts());
    const b = new MixtureLoader(opts());
    const forward = [0, 1, 2, 3].flatMap((s) => [0, 1, 2, 3].map((mb) => batchHash(a.microbatch(s, mb))));
    const backward = [3, 2, 1, 0].flatMap((s) => [3, 2, 1, 0].map((mb) => batchHash(b.microbatch(s, mb)))).reverse();
    assert.deepStrictEqual(backward, forward);
    const c = new MixtureLoader(opts({ seed: 8 }));
    assert.notStrictEqual(batchHash(c.microbatch(0, 0)), forward[0]);
  });

  it('loads only the mixture\'s sources from a prepared directory and reads the same batches', () => {
    const fromDir = new MixtureLoader({ ...opts(), data: undefined });
    assert.deepStrictEqual([...fromDir.data.sources.keys()].sort(), ['code', 'prose', 'speeches']);
    assert.strictEqual(batchHash(fromDir.microbatch(5, 2)), batchHash(new MixtureLoader(opts()).microbatch(5, 2)));
    const proseOnly = new MixtureLoader({ ...opts({ mixture: { sources: { prose: 1, code: 0 } } }), data: undefined });
    assert.deepStrictEqual([...proseOnly.data.sources.keys()], ['prose']);
    assert.throws(() => new MixtureLoader({ ...opts({ mixture: { sources: { poetry: 1 } } }), data: undefined }), (e: unknown) => e instanceof ConfigError && /mixture\.sources\.poetry/.test(e.message));
  });

  it('resumes from state saved at step k with exactly the batches of an uninterrupted run', () => {
    const K = 30;
    const N = 110; // crosses the pretrain -> anneal -> long switches
    const full = new MixtureLoader(opts());
    const expected: string[] = [];
    for (let s = 0; s < N; s++) for (let mb = 0; mb < 4; mb++) expected.push(batchHash(full.microbatch(s, mb)));
    const first = new MixtureLoader(opts());
    for (let s = 0; s < K; s++) for (let mb = 0; mb < 4; mb++) first.microbatch(s, mb);
    const saved = JSON.parse(JSON.stringify(first.state()));
    assert.deepStrictEqual([saved.step, saved.tokens, saved.stage], [K, K * 16 * 32, 'pretrain']);
    const resumed = MixtureLoader.restore(opts(), saved);
    assert.strictEqual(resumed.step, K);
    const got: string[] = [];
    for (let s = resumed.step; s < N; s++) for (let mb = 0; mb < 4; mb++) got.push(batchHash(resumed.microbatch(s, mb)));
    assert.deepStrictEqual(got, expected.slice(K * 4));
  });

  it('refuses to resume on other data, another seed or another global batch', () => {
    const s = new MixtureLoader(opts()).state();
    assert.throws(() => MixtureLoader.restore(opts(), { ...s, data: 'feedfacefeedface' }), DataError);
    assert.throws(() => MixtureLoader.restore(opts({ seed: 8 }), s), ConfigError);
    assert.throws(() => MixtureLoader.restore(opts({ microBatches: 8 }), s), ConfigError);
  });

  it('ranks 0..W-1 together read exactly the single-rank global batch, without overlap', () => {
    const M = 8;
    const single = new MixtureLoader(opts({ microBatches: M }));
    for (const W of [1, 2, 4, 8]) {
      const seen = new Set<string>();
      for (let step = 0; step < 12; step++) {
        const global = Array.from({ length: M }, (_, mb) => batchHash(single.microbatch(step, mb)));
        const union: string[] = new Array(M);
        for (let rank = 0; rank < W; rank++) {
          const mine = new MixtureLoader(opts({ microBatches: M })); // each rank has its own loader
          for (const mb of MixtureLoader.rankMicrobatches(rank, W, M)) {
            assert.strictEqual(union[mb], undefined, `W=${W}: microbatch ${mb} read twice`);
            union[mb] = batchHash(mine.microbatch(step, mb));
            for (const r of mine.rowPlan(step, mb)) {
              const key = `${r.source}@${r.position}`;
              assert.ok(!seen.has(`${W}:${key}`), `W=${W}: window ${key} read twice`);
              seen.add(`${W}:${key}`);
            }
          }
        }
        assert.deepStrictEqual(union, global, `W=${W} step ${step}`);
      }
    }
    assert.throws(() => MixtureLoader.rankMicrobatches(0, 3, M), ConfigError);
  });

  it('rejects invalid mixtures before any work, naming the key', () => {
    const bad = (m: unknown, re: RegExp) => assert.throws(() => parseMixture(m, 'data.mixture'), (e: unknown) => e instanceof ConfigError && re.test(e.message));
    bad({ sources: { prose: 1 }, stages: [{ name: 'x', startTokens: 5, weights: { code: 1 } }] }, /data\.mixture\.stages\.0\.weights\.code/);
    bad({ sources: { prose: 1, code: 1 }, stages: [{ name: 'a', startTokens: 10, weights: { code: 1 } }, { name: 'b', startTokens: 10, weights: { prose: 1 } }] }, /stages\.1\.startTokens/);
    bad({ sources: { prose: -1 } }, /data\.mixture\.sources\.prose/);
    bad({ sources: { prose: 0 } }, /positive weight/);
    bad({ sources: { prose: 1 }, extra: true }, /data\.mixture/);
    assert.throws(() => new MixtureLoader(opts({ mixture: { sources: { poetry: 1 } } })), (e: unknown) => e instanceof ConfigError && /mixture\.sources\.poetry/.test(e.message));
  });
});

/**
 * CHESS calibration (arXiv 2409.01366, section 3) on the serving decoder: realised sparsity of
 * the decode step matches the target, the channel-wise thresholds differ from CATS the way the
 * paper derives them, calibration still gives the values it gave on the former batch-1 decoder,
 * and the thresholds file sits beside a checkpoint without breaking its checksums.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { useTestBackend } from '../helpers/backend';
import { makeModel, testTokenizer, tmpDir, writeModelCheckpoint } from '../inference/fixtures';
import { RngStream } from '../../core/rng';
import { loadCheckpoint } from '../../core/checkpoint';
import { parseModelConfig } from '../../model/config';
import { tinyModelConfig } from '../inference/fixtures';
import { ServingModel, loadServingModel } from '../../inference/loadModel';
import {
  collectStats, loadSparsity, quantile, readThresholds, SparsityPlan, thresholdsAt, thresholdsFromJson, thresholdsToJson, THRESHOLDS_FILE, writeThresholds,
} from '../../inference/sparse';
import { HostDecoder, HostSequence } from '../../inference/hostDecode';
import { Engine } from '../../inference/engine';
import { RECORDED } from './recordedThresholds';

function windows(n: number, len: number, vocab: number): Int32Array[] {
  const r = RngStream.of(5, 'calib');
  return Array.from({ length: n }, () => Int32Array.from({ length: len }, () => Math.floor(r.next() * vocab)));
}

describe('CHESS calibration', () => {
  let m: ServingModel;
  before(async () => {
    await useTestBackend();
    m = makeModel();
  });
  after(() => m.store.dispose());

  it('quantile(v, s) leaves a fraction s of the values strictly below it', () => {
    const v = Float32Array.from({ length: 1000 }, (_, i) => (i * 7919) % 1000);
    const q = quantile(v, 0.3);
    assert.equal(v.filter((x) => x < q).length, 300);
    assert.equal(quantile(v, 0), 0);
  });

  it('realised sparsity of the decode step on the calibration data matches the target within 0.05 (CHESS, CATS, attention)', () => {
    const w = windows(6, 32, m.config.vocabSize);
    const stats = collectStats(m, w);
    for (const s of [0.3, 0.5, 0.7]) {
      const thresholds = thresholdsAt(stats, s);
      for (const ffn of ['chess', 'cats'] as const) {
        const plan: SparsityPlan = { ffn, attention: ffn === 'chess', thresholds };
        const dec = new HostDecoder(m);
        for (const win of w) {
          const seq = new HostSequence(m.config);
          for (const [pos, token] of win.entries()) dec.run([{ seq, token, pos }], [false], plan);
        }
        const k = dec.counters;
        const ffnSparsity = 1 - k.ffnKept / k.ffnTotal;
        assert.ok(Math.abs(ffnSparsity - s) < 0.05, `${ffn} s=${s}: realised ${ffnSparsity}`);
        if (plan.attention) {
          const a = 1 - k.attnKept / k.attnTotal;
          assert.ok(Math.abs(a - s) < 0.05, `attention s=${s}: realised ${a}`);
        }
      }
    }
  });

  it('CATS has one threshold per FFN; CHESS has tau_i = sqrt(T / E[a_u,i²]), so tau_i·sqrt(E[a_u,i²]) is one constant', () => {
    const stats = collectStats(m, windows(4, 32, m.config.vocabSize));
    const t = thresholdsAt(stats, 0.5);
    const p = 'model.layers.0.mlps.1';
    const st = stats.ffn.get(p)!;
    const e = Array.from(st.sumAu2, (v) => v / st.rows);
    const tau = t.ffn.get(p)!.chess;
    const c0 = tau[0] * Math.sqrt(e[0]);
    for (let i = 0; i < tau.length; i++) assert.ok(Math.abs(tau[i] * Math.sqrt(e[i]) - c0) < 1e-5 * c0, `channel ${i}`);
    // Channels with larger up activations get lower gate thresholds: the thresholds really vary.
    const spread = Math.max(...tau) / Math.min(...tau);
    assert.ok(spread > 1.5, `spread ${spread}`);
    assert.ok(t.ffn.get(p)!.cats > 0);
  });

  it('at equal sparsity CHESS drops less importance a_g²·E[a_u²] than CATS (the objective it minimises)', () => {
    const stats = collectStats(m, windows(4, 32, m.config.vocabSize));
    const t = thresholdsAt(stats, 0.5);
    for (const p of ['model.layers.0.mlps.0', 'model.layers.1.mlps.1']) {
      const st = stats.ffn.get(p)!;
      const ag = st.ag.view();
      const e = Array.from(st.sumAu2, (v) => v / st.rows);
      const { chess, cats } = t.ffn.get(p)!;
      let lossChess = 0;
      let lossCats = 0;
      let dropChess = 0;
      let dropCats = 0;
      for (let r = 0; r < st.rows; r++) {
        for (let i = 0; i < st.h; i++) {
          const a = ag[r * st.h + i];
          const imp = a * a * e[i];
          if (Math.abs(a) < chess[i]) { lossChess += imp; dropChess++; }
          if (Math.abs(a) < cats) { lossCats += imp; dropCats++; }
        }
      }
      assert.equal(dropChess, dropCats, 'same number dropped');
      assert.ok(lossChess < lossCats, `${p}: chess ${lossChess} vs cats ${lossCats}`);
    }
  });

  it('calibration on the serving decoder keeps the values the former batch-1 decoder gave (relative 1e-4; the kernels round differently)', () => {
    const r = RngStream.of(5, 'calib');
    const w = Array.from({ length: 6 }, () => Int32Array.from({ length: 32 }, () => Math.floor(r.next() * m.config.vocabSize)));
    assert.deepEqual(w, windows(6, 32, m.config.vocabSize));
    const t = thresholdsAt(collectStats(m, w), RECORDED.sparsity);
    const close = (got: number, want: number, what: string) => assert.ok(Math.abs(got - want) <= 1e-4 * Math.max(Math.abs(want), 1e-6), `${what}: ${got} vs recorded ${want}`);
    const ffn = RECORDED.ffn as Record<string, { chess: readonly number[]; cats: number }>;
    assert.deepEqual([...t.ffn.keys()].sort(), Object.keys(ffn).sort());
    let compared = 0;
    for (const [k, v] of t.ffn) {
      close(v.cats, ffn[k].cats, `${k}.cats`);
      ffn[k].chess.forEach((want, i) => close(v.chess[i], want, `${k}.chess[${i}]`));
      compared += ffn[k].chess.filter((x) => x > 0).length;
    }
    assert.ok(compared > 200, `nonzero thresholds compared: ${compared}`);
    const att = RECORDED.attention as Record<string, { q: number; o: number }>;
    for (const [k, v] of t.attention) {
      close(v.q, att[k].q, `${k}.q`);
      close(v.o, att[k].o, `${k}.o`);
    }
  });

  it('thresholds survive a JSON round trip', () => {
    const t = thresholdsAt(collectStats(m, windows(2, 16, m.config.vocabSize)), 0.4, 12);
    const back = thresholdsFromJson(thresholdsToJson(t), 'mem');
    assert.deepEqual(back, t);
  });

  it('chess.json beside a checkpoint keeps its checksums valid and loadSparsity reads it; the engine decodes with its steps', async () => {
    const run = tmpDir('moecat-chess-');
    const config = parseModelConfig(tinyModelConfig);
    writeModelCheckpoint(run, config, 7, testTokenizer().toJSON());
    const sm = loadServingModel(run);
    try {
      const t = thresholdsAt(collectStats(sm, windows(2, 16, config.vocabSize)), 0.5, sm.step);
      const file = writeThresholds(sm.dir, t);
      assert.equal(path.basename(file), THRESHOLDS_FILE);
      loadCheckpoint(run); // verifies every listed file's sha256 (throws on a mismatch)
      assert.deepEqual(readThresholds(sm.dir), t);
      const hooks = loadSparsity(sm, 'chess');
      const e = new Engine(sm, testTokenizer(), { maxBatch: 2, steps: hooks.steps });
      const r = await e.submit({ promptIds: testTokenizer().encode('Hello there'), maxTokens: 8, sampling: { temperature: 0, topP: 1, topK: 0, seed: 0 } }).result;
      await e.close();
      assert.equal(r.completionTokens, 8);
      assert.ok(hooks.realised().ffn > 0.2, JSON.stringify(hooks.realised()));
      assert.throws(() => loadSparsity(sm, 'nope'), /unknown sparsity method/);
    } finally {
      sm.store.dispose();
      fs.rmSync(run, { recursive: true, force: true });
    }
  });
});

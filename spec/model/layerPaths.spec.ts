/**
 * The four paths that run model/layer.ts's layer give the same logits on the same checkpoint:
 *   training forward (model/transformer.forward over the whole sequence),
 *   the tfjs engine steps (inference/engineStep: prefill, then batched per-row decode steps),
 *   the engine's batched host decode path (inference/hostSteps, native or JS kernels),
 *   A2ATS host attention (inference/kv/model, retrieval at ratio 1 selects every key),
 *   the same host path under a CHESS plan with zero thresholds (native/sparse.c's kernels).
 * Per position, each incremental path's logits are compared with the training forward's row.
 * The tolerance is float32 rounding: the paths group matMul sums differently (cached vs full
 * sequence) and the host paths accumulate attention in float64.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as tf from '@tensorflow/tfjs';
import { useTestBackend } from '../helpers/backend';
import { testTokenizer, tinyModelConfig, tmpDir, writeModelCheckpoint } from '../inference/fixtures';
import { ModelConfigInput, parseModelConfig } from '../../model/config';
import { forward } from '../../model/transformer';
import { loadServingModel, ServingModel } from '../../inference/loadModel';
import { decodeBatch as tfjsDecodeBatch, disposeCaches, LayerCaches, prefill as tfjsPrefill } from '../../inference/engineStep';
import { A2ATSSequence } from '../../inference/kv/model';
import { attentionPrefixes, ffnPrefixes, SparsityPlan, zeroThresholds } from '../../inference/sparse';
import { hostDecodeBatch, hostPrefill } from '../../inference/hostSteps';

const ids = [5, 17, 200, 3, 3, 99, 140, 7, 61, 250, 12, 8];
const PROMPT = 4; // prefill length of the paths that prefill
const TOL = 2e-4; // logits are O(10) at the fixture's initStd 0.5

/** Logits rows [positions, V] of the training forward over the whole sequence. */
function trainingLogits(m: ServingModel): Float32Array[] {
  const V = m.config.vocabSize;
  const all = tf.tidy(() => forward(m.config, (n) => m.store.get(n), Int32Array.from(ids), 1, ids.length, { biases: m.biases }).logits!.dataSync() as Float32Array);
  return ids.map((_, t) => all.slice(t * V, (t + 1) * V));
}

/**
 * Engine: two sequences decoded together in one batch (the same ids, the second one prefilled
 * one token shorter so the rows sit at different positions); rows for positions ≥ PROMPT−1.
 */
function engineLogits(m: ServingModel, prefill = tfjsPrefill, decodeBatch = tfjsDecodeBatch): { a: Map<number, Float32Array>; b: Map<number, Float32Array> } {
  const out = { a: new Map<number, Float32Array>(), b: new Map<number, Float32Array>() };
  const pa = prefill(m, ids.slice(0, PROMPT));
  const pb = prefill(m, ids.slice(0, PROMPT - 1));
  out.a.set(PROMPT - 1, Float32Array.from(pa.logits.dataSync()));
  out.b.set(PROMPT - 2, Float32Array.from(pb.logits.dataSync()));
  tf.dispose([pa.logits, pb.logits]);
  let caches: LayerCaches[] = [pa.caches[0], pb.caches[0]];
  for (let ta = PROMPT; ta < ids.length; ta++) {
    const tb = ta - 1;
    const r = decodeBatch(m, [ids[ta], ids[tb]], [ta, tb], caches);
    const z = r.logits.dataSync() as Float32Array;
    const V = m.config.vocabSize;
    out.a.set(ta, z.slice(0, V));
    out.b.set(tb, z.slice(V, 2 * V));
    r.logits.dispose();
    caches.forEach(disposeCaches);
    caches = r.caches;
  }
  caches.forEach(disposeCaches);
  return out;
}

/** A2ATS: exact prefill, then retrieval decode steps at ratio 1. */
function a2atsLogits(m: ServingModel): Map<number, Float32Array> {
  const seq = new A2ATSSequence(m, null, { window: 2, sinks: 1, b: 2048, ratio: 1 });
  const out = new Map<number, Float32Array>();
  out.set(PROMPT - 1, seq.prefill(ids.slice(0, PROMPT)).logits);
  for (let t = PROMPT; t < ids.length; t++) out.set(t, seq.decode(ids[t]).logits);
  return out;
}

function maxGap(ref: Float32Array[], got: Map<number, Float32Array>): number {
  assert.ok(got.size > 0);
  let gap = 0;
  for (const [t, z] of got) {
    assert.equal(z.length, ref[t].length);
    for (let i = 0; i < z.length; i++) {
      const d = Math.abs(z[i] - ref[t][i]);
      assert.ok(Number.isFinite(d), `position ${t} logit ${i} is not finite`);
      gap = Math.max(gap, d);
    }
  }
  return gap;
}

const variants: [string, ModelConfigInput][] = [
  ['MLA + ScMoE', tinyModelConfig],
  ['GQA + sequential', { ...tinyModelConfig, layerType: 'sequential', attention: { type: 'gqa', nHeads: 4, nKvHeads: 2, headDim: 8 } }],
];

describe('one layer, four paths: same logits on the same checkpoint', () => {
  const dirs: string[] = [];
  before(async () => {
    await useTestBackend();
  });
  after(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

  for (const [name, raw] of variants) {
    describe(name, () => {
      let m: ServingModel;
      let ref: Float32Array[];
      before(() => {
        const dir = tmpDir('moecat-paths-');
        dirs.push(dir);
        writeModelCheckpoint(dir, parseModelConfig(raw), 11, testTokenizer().toJSON());
        m = loadServingModel(dir);
        ref = trainingLogits(m);
        // Logits that vary by position and are far above the tolerance, so agreement means something.
        assert.ok(Math.abs(ref[0][0] - ref[1][0]) > 100 * TOL);
      });
      after(() => m.store.dispose());

      it('serving engine (prefill + batched decode, two rows at different positions)', () => {
        const e = engineLogits(m);
        const gap = Math.max(maxGap(ref, e.a), maxGap(ref, e.b));
        assert.ok(gap < TOL, `max |Δlogit| ${gap}`);
      });

      it('batched host decode path (the engine default: prefill as rows + batched decode, two rows at different positions)', () => {
        const e = engineLogits(m, hostPrefill, hostDecodeBatch);
        const gap = Math.max(maxGap(ref, e.a), maxGap(ref, e.b));
        assert.ok(gap < TOL, `max |Δlogit| ${gap}`);
      });

      it('A2ATS host attention (ratio 1)', () => {
        const gap = maxGap(ref, a2atsLogits(m));
        assert.ok(gap < TOL, `max |Δlogit| ${gap}`);
      });

      it('batched host decode path under a CHESS plan with zero thresholds (every channel kept)', () => {
        const plan: SparsityPlan = { ffn: 'chess', attention: true, thresholds: zeroThresholds(ffnPrefixes(m.config), attentionPrefixes(m.config)) };
        const e = engineLogits(m, hostPrefill, (mm, tokens, past, caches) => hostDecodeBatch(mm, tokens, past, caches, plan));
        const gap = Math.max(maxGap(ref, e.a), maxGap(ref, e.b));
        assert.ok(gap < TOL, `max |Δlogit| ${gap}`);
      });
    });
  }
});

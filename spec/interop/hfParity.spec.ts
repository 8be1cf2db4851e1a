/**
 * moecat against an independent PyTorch implementation of transformers' longcat_flash math
 * (scripts/reference/longcat_flash.py), on a directory written by `moecat export`:
 *   - logits for fixed token ids agree within 1e-5 relative (max |diff| / max |logit|), using
 *     the weights moecat re-imports from that directory;
 *   - 30 AdamW steps from the same initial weights on the same batches (moecat dumps them with
 *     the LR of every step) give losses within 1e-4 relative at every step; the objective
 *     includes the balance loss and the expert-bias controller, so routing follows both sides.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../core/backend';
import { exportHf } from '../../model/hf/exportDir';
import { importHf } from '../../model/hf/importDir';
import { forward } from '../../model/transformer';
import { loadServingModel } from '../../inference/loadModel';
import { makeDataSource } from '../../trainer/dataSource';
import { Trainer } from '../../trainer/trainer';
import { saveTrainerCheckpoint } from '../../trainer/checkpointing';
import { interopConfig, smallTokenizer, tmpDir, writeCheckpointAfter } from './fixtures';
import { runReference, torchPython } from './reference';

const STEPS = 30;

describe('parity with the PyTorch longcat_flash reference', function () {
  this.timeout(180000);
  let tmp: string;
  before(async function () {
    const py = torchPython();
    if (!py.python) {
      console.log(`    skipped: ${py.why}`);
      this.skip();
    }
    await selectBackend((process.env.MOECAT_TEST_BACKEND as 'wasm') ?? 'wasm');
    tmp = tmpDir('parity');
  });
  after(() => tmp && fs.rmSync(tmp, { recursive: true, force: true }));

  it('logits for fixed token ids agree within 1e-5 relative', async () => {
    const run = path.join(tmp, 'run');
    // A few steps first, so the expert biases are non-zero and take part in the routing.
    (await writeCheckpointAfter(run, 4)).dispose();
    const hf = path.join(tmp, 'hf');
    exportHf({ checkpoint: run, out: hf });
    importHf({ hf, out: path.join(tmp, 'imported') });
    const m = loadServingModel(path.join(tmp, 'imported'));
    const B = 2;
    const S = 24;
    const ids = Int32Array.from({ length: B * S }, (_, i) => (i * 37 + 11) % m.config.vocabSize);
    const ours = tf.tidy(() => forward(m.config, m.store.getter, ids, B, S, { biases: m.biases }).logits!.dataSync() as Float32Array);
    m.store.dispose();
    const ref = runReference<{ logits: number[][][] }>('logits', hf, { ids: [Array.from(ids.subarray(0, S)), Array.from(ids.subarray(S))] }, tmp);
    const theirs = Float32Array.from(ref.logits.flat(2));
    assert.equal(theirs.length, ours.length);
    let maxDiff = 0;
    let maxAbs = 0;
    for (let i = 0; i < ours.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(ours[i] - theirs[i]));
      maxAbs = Math.max(maxAbs, Math.abs(theirs[i]));
    }
    console.log(`      max |diff| ${maxDiff.toExponential(2)}, max |logit| ${maxAbs.toFixed(3)}, relative ${(maxDiff / maxAbs).toExponential(2)}`);
    assert.ok(maxAbs > 0.1, 'logits are not trivially small');
    assert.ok(maxDiff / maxAbs <= 1e-5, `relative difference ${maxDiff / maxAbs}`);
  });

  it(`${STEPS} AdamW steps on the same batches give losses within 1e-4 relative at every step`, async () => {
    const { config, raw } = interopConfig();
    const data = makeDataSource(config);
    const t = new Trainer(config, data);
    const run = path.join(tmp, 'train-run');
    saveTrainerCheckpoint(run, t, { rawConfig: raw, backend: 'test', keepLast: 1, tokenizerJson: smallTokenizer().toJSON() });
    const hf = path.join(tmp, 'train-hf');
    exportHf({ checkpoint: run, out: hf });
    // The dump: every step's microbatches and LR, and the optimizer settings.
    const steps: unknown[] = [];
    const ours: number[] = [];
    for (let s = 0; s < STEPS; s++) {
      const mbs = Array.from({ length: config.data.microBatches }, (_, i) => data.microbatch(t.state.dataStep, i));
      const r = await t.step();
      assert.equal(r.kind, 'step');
      const metrics = (r as { metrics: { loss: number; lr: number } }).metrics;
      ours.push(metrics.loss);
      steps.push({
        lr: metrics.lr,
        microbatches: mbs.map((b) => ({ seqLen: b.seqLen, inputs: Array.from(b.inputs), targets: Array.from(b.targets), lossMask: Array.from(b.lossMask) })),
      });
    }
    t.dispose();
    const ref = runReference<{ losses: number[] }>('train', hf, { optim: config.optim, steps }, tmp);
    assert.equal(ref.losses.length, STEPS);
    let worst = 0;
    ours.forEach((l, i) => (worst = Math.max(worst, Math.abs(l - ref.losses[i]) / Math.abs(ref.losses[i]))));
    if (process.env.PARITY_VERBOSE) ours.forEach((l, i) => console.log(`      step ${i + 1}: ${l} ${ref.losses[i]} ${((l - ref.losses[i]) / ref.losses[i]).toExponential(2)}`));
    console.log(`      loss ${ours[0].toFixed(4)} -> ${ours[STEPS - 1].toFixed(4)}; worst relative difference ${worst.toExponential(2)}`);
    assert.ok(ours[STEPS - 1] < ours[0] - 0.1, 'the model learns (so the steps are not no-ops)');
    ours.forEach((l, i) => assert.ok(Math.abs(l - ref.losses[i]) / Math.abs(ref.losses[i]) <= 1e-4, `step ${i + 1}: moecat ${l}, reference ${ref.losses[i]}`));
  });
});

/**
 * Determinism and memory (DESIGN.md section 4, TFJS-NOTES "Memory"): same seed, same weights to
 * the bit; same forward twice, same logits to the bit; training steps leak no tensors.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { parseModelConfig } from '../../model/config';
import { initParams, paramHash, paramSpecs, ParamStore } from '../../model/params';
import { forward, initialBiases } from '../../model/transformer';
import { microbatchLoss } from '../../trainer/losses';
import { sha256Hex, bytesOf } from '../../core/hash';
import { useTestBackend } from '../helpers/backend';

const c = parseModelConfig({
  vocabSize: 300,
  dModel: 32,
  nLayers: 2,
  attention: { type: 'mla', nHeads: 2, qLoraRank: 16, kvLoraRank: 16, nopeHeadDim: 8, ropeHeadDim: 8, vHeadDim: 8 },
  ffnHidden: 32,
  moe: { nExperts: 4, nZeroExperts: 2, topK: 2, expertHidden: 16, routedScalingFactor: 2, targetFfnPerToken: 1.5, balanceAlpha: 0.01, expertGroups: 2 },
  maxSeqLen: 32,
});
const B = 2;
const S = 16;
const tokens = new Int32Array(B * S).map((_, i) => (i * 7919 + 11) % c.vocabSize);

describe('model determinism and memory', () => {
  before(useTestBackend);

  it('same seed gives the same parameter hash, bit for bit; a different seed a different one', () => {
    const specs = paramSpecs(c);
    const h1 = paramHash(specs, initParams(c, 42));
    assert.equal(paramHash(specs, initParams(c, 42)), h1);
    assert.notEqual(paramHash(specs, initParams(c, 43)), h1);
  });

  it('weights survive the round trip through tf.Variables bit for bit', () => {
    const specs = paramSpecs(c);
    const v = initParams(c, 42);
    const store = new ParamStore(specs, v);
    const back = store.read();
    store.dispose();
    assert.equal(paramHash(specs, back), paramHash(specs, v));
  });

  it('the same forward twice gives bitwise-identical logits', () => {
    const store = new ParamStore(paramSpecs(c), initParams(c, 42));
    const run = () => {
      let h = '';
      tf.tidy(() => {
        h = sha256Hex(bytesOf(forward(c, (n) => store.get(n), tokens, B, S, { biases: initialBiases(c) }).logits!.dataSync() as Float32Array));
      });
      return h;
    };
    const a = run();
    const b = run();
    store.dispose();
    assert.equal(a, b);
  });

  it('20 forward+backward steps leave tf.memory().numTensors (and bytes) unchanged', () => {
    const store = new ParamStore(paramSpecs(c), initParams(c, 42));
    const mb = { inputs: tokens, targets: tokens.map((t) => (t + 1) % c.vocabSize), lossMask: new Float32Array(B * S).fill(1), batchSize: B, seqLen: S };
    const vars = [...store.vars.values()];
    const step = () => {
      const { value, grads } = tf.variableGrads(() => microbatchLoss(c, (n) => store.get(n), mb, { globalTokens: B * S, globalSeqs: B }, { biases: initialBiases(c), zLossCoef: 1e-4 }).total, vars);
      value.dataSync();
      tf.dispose([value, ...Object.values(grads)]);
    };
    step(); // warm-up: kernels and gradient registrations may allocate once
    const before = tf.memory();
    const counts: number[] = [];
    for (let i = 0; i < 20; i++) {
      step();
      counts.push(tf.memory().numTensors);
    }
    const after = tf.memory();
    store.dispose();
    assert.deepEqual(counts, new Array(20).fill(before.numTensors));
    assert.equal(after.numBytes, before.numBytes);
  });
});

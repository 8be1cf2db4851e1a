/**
 * Scaled dot-product attention in one kernel each way (core/webgpu/sdpaKernels.ts) against the
 * composite ops model/attention.ts runs elsewhere (head-major transposes, matMul, scale, mask,
 * softmax, matMul): output and the gradients of q, k and v equal to float32 rounding, with
 * a shared causal mask, a per-row mask and none, for one KV head per query head and for grouped
 * KV heads; bit for bit on a rerun; bad shapes get a clear error; a training step runs it.
 */
import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import { fusedAttention, hasFusedAttention, softmaxLast } from '../../model/ops';
import { causalMask, segmentCausalMask } from '../../model/attention';
import { registerSdpaKernels } from '../../core/webgpu/sdpaKernels';
import { programCounter, startProgramTrace } from '../../core/webgpu/trace';
import { loadTrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer } from '../../trainer/trainer';
import { useTestBackend } from '../helpers/backend';
import { webgpuOrSkip } from './helpers';

const rnd = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + s * 78.233) * 1.5);
// S, dq and dv leave partial 4 x 4 blocks.
const [B, S, H, DQ, DV] = [2, 22, 4, 10, 6];

/** The composite (as model/attention.ts sdpa after toHeadMajor and repeatKv), back to token-major. */
function composite(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, scale: number, mask: tf.Tensor | null): tf.Tensor4D {
  const hm = (t: tf.Tensor4D) => tf.transpose(t, [0, 2, 1, 3]) as tf.Tensor4D;
  const rep = (t: tf.Tensor4D) => {
    const g = H / t.shape[1];
    if (g === 1) return t;
    const [b, hk, s, d] = t.shape;
    return tf.reshape(tf.tile(tf.reshape(t, [b, hk, 1, s * d]), [1, 1, g, 1]), [b, hk * g, s, d]) as tf.Tensor4D;
  };
  let scores = tf.mul(tf.matMul(hm(q), rep(hm(k)), false, true), scale);
  if (mask) scores = tf.add(scores, mask);
  return tf.transpose(tf.matMul(softmaxLast(scores), rep(hm(v))), [0, 2, 1, 3]) as tf.Tensor4D;
}

function run(Hk: number, maskKind: 'causal' | 'segments' | 'none', fused: boolean): { out: Float32Array[]; dispatches: number } {
  const d0 = programCounter.dispatches;
  const out = tf.tidy(() => {
    const q = tf.tensor4d(rnd(B * S * H * DQ, 1), [B, S, H, DQ]);
    const k = tf.tensor4d(rnd(B * S * Hk * DQ, 2), [B, S, Hk, DQ]);
    const v = tf.tensor4d(rnd(B * S * Hk * DV, 3), [B, S, Hk, DV]);
    const dy = tf.tensor4d(rnd(B * S * H * DV, 4), [B, S, H, DV]);
    // Documents of 7 tokens in the first row, of 5 in the second: the rows' masks differ.
    const seg = Int32Array.from({ length: B * S }, (_, i) => Math.floor((i % S) / (i >= S ? 5 : 7)));
    const mask = maskKind === 'causal' ? causalMask(S) : maskKind === 'segments' ? segmentCausalMask(seg, B, S) : null;
    const f = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => (fused ? fusedAttention : composite)(a as tf.Tensor4D, b as tf.Tensor4D, c as tf.Tensor4D, 1 / Math.sqrt(DQ), mask);
    const grads = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(f(a, b, c), dy)))([q, k, v]);
    return [f(q, k, v), ...grads].map((t) => Float32Array.from(t.dataSync()));
  });
  return { out, dispatches: programCounter.dispatches - d0 };
}

describe('webgpu: scaled dot-product attention in one kernel each way', function () {
  this.timeout(300000);
  before(async function () {
    await webgpuOrSkip(this);
  });
  after(async () => {
    registerSdpaKernels();
    await useTestBackend();
  });

  for (const [Hk, maskKind] of [[H, 'causal'], [H, 'segments'], [2, 'causal'], [1, 'none']] as const) {
    it(`output and the gradients of q, k, v equal the composite to float32 rounding, a rerun bit for bit (${H} query heads, ${Hk} KV heads, mask: ${maskKind})`, () => {
      assert.ok(hasFusedAttention(), 'kernels registered');
      const fused = run(Hk, maskKind, true);
      const again = run(Hk, maskKind, true);
      const comp = run(Hk, maskKind, false);
      for (const [i, name] of ['o', 'dq', 'dk', 'dv'].entries()) {
        const [f, c] = [fused.out[i], comp.out[i]];
        assert.equal(f.length, c.length, name);
        let scale = 0;
        for (const x of c) scale = Math.max(scale, Math.abs(x));
        assert.ok(scale > 0, `${name}: composite all zero`);
        for (let j = 0; j < c.length; j++) assert.ok(Math.abs(f[j] - c[j]) <= 2e-6 * Math.max(1, scale), `${name}[${j}]: fused ${f[j]} vs composite ${c[j]}`);
        assert.ok(Buffer.from(f.buffer).equals(Buffer.from(again.out[i].buffer)), `${name}: a rerun differs`);
      }
      assert.ok(fused.dispatches * 2 < comp.dispatches, `fused ${fused.dispatches} vs composite ${comp.dispatches} dispatches`);
    });
  }

  it('shapes that do not fit get one clear error', () => {
    tf.tidy(() => {
      const q = tf.zeros([B, S, H, DQ]) as tf.Tensor4D;
      const v = tf.zeros([B, S, H, DV]) as tf.Tensor4D;
      assert.throws(() => fusedAttention(q, tf.zeros([B, S, 3, DQ]) as tf.Tensor4D, tf.zeros([B, S, 3, DV]) as tf.Tensor4D, 1, null), /MoecatAttention: shapes q \[2,22,4,10\], k \[2,22,3,10\], v \[2,22,3,6\] do not fit/);
      assert.throws(() => fusedAttention(q, q, v, 1, tf.zeros([S, S + 1])), /MoecatAttention: mask must be float32 \[22, 22\] or \[2, 1, 22, 22\], got \[22,23\]/);
    });
  });

  it('a training step runs it (and no head-major matMul for the scores)', async () => {
    const { config } = loadTrainConfig('configs/tiny.yaml', ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=1', 'stability.spike={enabled: false}']);
    const t = new Trainer(config, new MarkovSource(config.seed, config.model.vocabSize, config.data.microBatchSize, config.data.seqLen));
    const tr = startProgramTrace();
    try {
      await t.step();
    } finally {
      tr.stop();
      t.dispose();
    }
    const blocks = config.model.nLayers * 2;
    for (const p of ['moecatAttnProbs', 'moecatAttnOut', 'moecatAttnDs', 'moecatAttnDq', 'moecatAttnDk', 'moecatAttnDv']) {
      assert.equal(tr.trace.counts.get(`ThreadProgram:${p}`), blocks, `${p} per attention block: ${[...tr.trace.counts.keys()].join(', ')}`);
    }
    assert.ok(!tr.trace.counts.has('ThreadProgram:moecatSoftmax'), 'the separate softmax still ran');
  });
});

import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { useTestBackend } from '../helpers/backend';
import { ModelConfig } from '../../model/config';
import { AttnContext, causalMask, ParamGetter, ropeDim } from '../../model/attention';
import { flatLayout, views } from '../../model/flatParams';
import { gatherRows, rmsNorm, ropeTables } from '../../model/ops';
import { paramSpecs, ParamStore } from '../../model/params';
import { scmoeLayer } from '../../model/scmoeLayer';
import { forward } from '../../model/transformer';
import { loadTrainConfig } from '../../trainer/config';
import { loadTrainerCheckpoint, LoadedTraining } from '../../trainer/checkpointing';
import { MarkovSource } from '../../trainer/data';
import { growCheckpoint } from '../../trainer/growth';
import { readMetrics } from '../../trainer/metrics';
import { runTraining } from '../../trainer/run';
import { lrAt } from '../../trainer/schedule';

const SETS = [
  'data.synthetic={}', 'data.seqLen=8', 'data.microBatchSize=2', 'data.microBatches=2', 'train.steps=6', 'train.checkpointEvery=0',
  'optim.schedule={type: wsd, warmupSteps: 1, decaySteps: 3}', 'stability.spike={enabled: false}',
  'model.dModel=32', 'model.attention.nHeads=2', 'model.attention.qLoraRank=16', 'model.attention.kvLoraRank=16', 'model.ffnHidden=64', 'model.moe.expertHidden=32',
];

function store(ck: LoadedTraining): ParamStore {
  const layout = flatLayout(paramSpecs(ck.config.model));
  return new ParamStore(layout.specs, views(layout, ck.state.params));
}

/** The small model's layers applied in `order`, written out directly (the reference). */
function composed(c: ModelConfig, P: ParamGetter, tokens: Int32Array, B: number, S: number, biases: Float32Array[], order: number[]): Float32Array {
  return tf.tidy(() => {
    const rope = ropeTables(S, ropeDim(c), c.ropeBase);
    const half = ropeDim(c) / 2;
    const ctx: AttnContext = { B, S, cos: tf.tensor2d(rope.cos, [S, half]), sin: tf.tensor2d(rope.sin, [S, half]), mask: causalMask(S) };
    let x = gatherRows(P('model.embed_tokens.weight') as tf.Tensor2D, tokens);
    for (const l of order) x = scmoeLayer(c, P, l, x, ctx, biases[l]).out;
    const h = rmsNorm(x, P('model.norm.weight'), c.rmsEps) as tf.Tensor2D;
    return tf.matMul(h, P('lm_head.weight') as tf.Tensor2D).dataSync() as Float32Array;
  });
}

describe('model growth by layer stacking', function () {
  this.timeout(600000);
  let tmp: string;
  let smallDir: string;
  let small: LoadedTraining;
  before(async () => {
    await useTestBackend();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-grow-'));
    smallDir = path.join(tmp, 'small');
    const { config, raw } = loadTrainConfig('configs/tiny.yaml', SETS);
    const r = await runTraining({ outDir: smallDir, config, rawConfig: raw, maxSteps: 3, backend: 'test' });
    r.trainer.dispose();
    small = loadTrainerCheckpoint(smallDir);
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  for (const r of [2, 3]) {
    it(`the grown model (r = ${r}) computes its stack [1..L]x${r} of the small model's layers, bit for bit`, () => {
      const out = path.join(tmp, `fn${r}`);
      growCheckpoint({ checkpoint: smallDir, factor: r, outDir: out, optimizer: 'stack' });
      const grown = loadTrainerCheckpoint(out);
      const L = small.config.model.nLayers;
      assert.equal(grown.config.model.nLayers, L * r);
      assert.ok(small.state.biases.every((b) => b.some((x) => x !== 0)), 'the small model has trained expert biases');
      const b = new MarkovSource(99, small.config.model.vocabSize, 2, 8).microbatch(0, 0);
      const ps = store(small);
      const pg = store(grown);
      try {
        const order = Array.from({ length: L * r }, (_, j) => j % L);
        const want = composed(small.config.model, (n) => ps.get(n), b.inputs, 2, 8, small.state.biases, order);
        const got = tf.tidy(() => forward(grown.config.model, (n) => pg.get(n), b.inputs, 2, 8, { biases: grown.state.biases }).logits!.dataSync() as Float32Array);
        assert.equal(got.length, want.length);
        let maxDiff = 0;
        for (let i = 0; i < got.length; i++) maxDiff = Math.max(maxDiff, Math.abs(got[i] - want[i]));
        assert.equal(maxDiff, 0);
        // And it is not the small model's own function (the stack is deeper).
        const own = composed(small.config.model, (n) => ps.get(n), b.inputs, 2, 8, small.state.biases, [0, 1]);
        assert.ok(own.some((x, i) => x !== want[i]));
      } finally {
        ps.dispose();
        pg.dispose();
      }
    });
  }

  it('stacks weights, Adam moments and expert biases with the same layer map; carries the counters', () => {
    const out = path.join(tmp, 'stack');
    growCheckpoint({ checkpoint: smallDir, factor: 2, outDir: out, optimizer: 'stack' });
    const g = loadTrainerCheckpoint(out);
    const a = flatLayout(paramSpecs(small.config.model));
    const b = flatLayout(paramSpecs(g.config.model));
    const slice = (lay: typeof a, buf: Float32Array, name: string) => {
      const o = lay.offsets.get(name)!;
      return Array.from(buf.subarray(o, o + lay.specs.find((s) => s.name === name)!.shape.reduce((x, y) => x * y, 1)));
    };
    for (const [to, from] of [[0, 0], [1, 1], [2, 0], [3, 1]]) {
      for (const suffix of ['self_attn.1.q_b_proj.weight', 'mlp.experts.3.down_proj.weight', 'mlp.router.classifier.weight', 'post_attention_layernorm.0.weight']) {
        const nt = `model.layers.${to}.${suffix}`;
        const nf = `model.layers.${from}.${suffix}`;
        assert.deepEqual(slice(b, g.state.params, nt), slice(a, small.state.params, nf), nt);
        assert.deepEqual(slice(b, g.state.opt.m, nt), slice(a, small.state.opt.m, nf), `m ${nt}`);
        assert.deepEqual(slice(b, g.state.opt.v, nt), slice(a, small.state.opt.v, nf), `v ${nt}`);
      }
      assert.deepEqual(Array.from(g.state.biases[to]), Array.from(small.state.biases[from]));
    }
    for (const n of ['model.embed_tokens.weight', 'lm_head.weight', 'model.norm.weight']) assert.deepEqual(slice(b, g.state.params, n), slice(a, small.state.params, n));
    assert.equal(g.state.opt.t, small.state.opt.t);
    assert.equal(g.state.step, 3);
    assert.equal(g.state.dataStep, small.state.dataStep);
    assert.equal(g.state.tokens, small.state.tokens);
    assert.equal(g.config.train.steps, 6);
    assert.equal(g.saved.lineage?.parent_step, 3);
    assert.equal(g.saved.lineage?.parent_param_hash, small.saved.param_hash);
    assert.deepEqual((g.saved.growth as { layer_map: number[] }).layer_map, [0, 1, 0, 1]);
  });

  it('--optimizer reset zeroes the moments and Adam t but keeps the weights and counters', () => {
    const out = path.join(tmp, 'reset');
    growCheckpoint({ checkpoint: smallDir, factor: 2, outDir: out, optimizer: 'reset' });
    const g = loadTrainerCheckpoint(out);
    assert.equal(g.state.opt.t, 0);
    assert.ok(g.state.opt.m.every((x) => x === 0) && g.state.opt.v.every((x) => x === 0));
    assert.equal(g.state.step, 3);
    assert.equal(g.state.tokens, small.state.tokens);
  });

  it('grow + train --resume: continues the step, token count and LR schedule to train.steps', async () => {
    const out = path.join(tmp, 'resume');
    growCheckpoint({ checkpoint: smallDir, factor: 2, outDir: out, optimizer: 'stack' });
    const r = await runTraining({ outDir: out, resume: true, backend: 'test' });
    assert.equal(r.trainer.state.step, 6);
    assert.equal(r.trainer.model.nLayers, 4);
    r.trainer.dispose();
    const ms = readMetrics(path.join(out, 'metrics.jsonl'));
    const steps = ms.filter((m) => m.fingerprint);
    assert.deepEqual(steps.map((m) => m.step), [1, 2, 3, 4, 5, 6]);
    assert.ok(ms.some((m) => (m as { event?: string }).event === 'grow'));
    const cfg = small.config;
    for (const m of steps) assert.equal(m.lr, lrAt(m.step - 1, cfg.optim.lr, { ...cfg.optim.schedule, totalSteps: 6 }), `lr at step ${m.step}`);
    const perStep = steps[0].tokens;
    assert.deepEqual(steps.map((m) => m.tokens), [1, 2, 3, 4, 5, 6].map((k) => k * perStep));
    assert.ok(steps.slice(3).every((m) => m.ffn_experts_per_token_by_layer.length === 4));
    const end = loadTrainerCheckpoint(out);
    assert.equal(end.state.step, 6);
    assert.equal(end.config.model.nLayers, 4);
  });

  it('refuses what it cannot do, before writing anything', () => {
    assert.throws(() => growCheckpoint({ checkpoint: smallDir, factor: 1, outDir: path.join(tmp, 'x1'), optimizer: 'stack' }), /--factor must be an integer >= 2/);
    assert.throws(() => growCheckpoint({ checkpoint: smallDir, factor: 2, outDir: path.join(tmp, 'x2'), optimizer: 'stack', sets: ['train.steps=3', 'optim.schedule.decaySteps=1'] }), /train\.steps \(3\) is not beyond the checkpoint's step 3/);
    assert.throws(() => growCheckpoint({ checkpoint: smallDir, factor: 2, outDir: path.join(tmp, 'x3'), optimizer: 'stack', sets: ['model.dModel=64'] }), /growth changes depth only/);
    assert.throws(() => growCheckpoint({ checkpoint: smallDir, factor: 2, outDir: path.join(tmp, 'stack'), optimizer: 'stack' }), /already holds a run/);
    for (const d of ['x1', 'x2', 'x3']) assert.equal(fs.existsSync(path.join(tmp, d)), false);
  });
});

/**
 * `moecat export --format hf` / `moecat import` (model/hf): the files and fields a longcat_flash
 * directory has, export -> import -> export byte-identical, the imported run loads for serving
 * with the same weights, and unsupported fields, tensors and shapes are refused naming them.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { selectBackend } from '../../core/backend';
import { decodeSafetensors, encodeSafetensors, SafeTensor, toFloat32 } from '../../core/safetensors';
import { MoecatError } from '../../core/errors';
import { exportHf } from '../../model/hf/exportDir';
import { importHf } from '../../model/hf/importDir';
import { readShards } from '../../model/hf/shards';
import { loadServingModel } from '../../inference/loadModel';
import { loadTrainerCheckpoint } from '../../trainer/checkpointing';
import { parseTrainConfig } from '../../trainer/config';
import { parseTokenizerJson } from '../../data/tokenizerJson';
import { interopConfig, tmpDir, writeCheckpointAfter } from './fixtures';

const checks = {
  checkTraining: (raw: Record<string, unknown>, where: string) => void parseTrainConfig(raw, where),
  checkTokenizer: (text: string, where: string) => void parseTokenizerJson(text, where),
};

function filesOf(dir: string): Map<string, Buffer> {
  return new Map(fs.readdirSync(dir).sort().map((n) => [n, fs.readFileSync(path.join(dir, n))]));
}

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof MoecatError, `expected a MoecatError, got ${String(e)}`);
    assert.ok(!(e as Error).message.includes('\n'), 'one line');
    return (e as Error).message;
  }
  assert.fail('expected a refusal');
}

describe('Hugging Face longcat_flash export and import', function () {
  this.timeout(120000);
  let tmp: string;
  let run: string;
  let hf: string;
  let hash: string;
  before(async () => {
    await selectBackend((process.env.MOECAT_TEST_BACKEND as 'wasm') ?? 'wasm');
    tmp = tmpDir('hf');
    run = path.join(tmp, 'run');
    const t = await writeCheckpointAfter(run, 2);
    hash = t.paramHash();
    t.dispose();
    hf = path.join(tmp, 'hf');
    exportHf({ checkpoint: run, out: hf });
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('writes config.json with longcat_flash field names, the moecat block and the tokenizer files', () => {
    assert.deepEqual([...filesOf(hf).keys()], ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    const c = JSON.parse(fs.readFileSync(path.join(hf, 'config.json'), 'utf8'));
    assert.equal(c.model_type, 'longcat_flash');
    assert.deepEqual(
      [c.hidden_size, c.num_layers, c.num_hidden_layers, c.ffn_hidden_size, c.expert_ffn_hidden_size, c.n_routed_experts, c.zero_expert_num, c.moe_topk, c.routed_scaling_factor],
      [32, 2, 4, 48, 16, 4, 2, 2, 2],
    );
    assert.deepEqual([c.q_lora_rank, c.kv_lora_rank, c.qk_nope_head_dim, c.qk_rope_head_dim, c.head_dim, c.v_head_dim, c.rms_norm_eps], [16, 12, 8, 8, 8, 8, 1e-5]);
    assert.deepEqual(c.rope_parameters, { rope_type: 'default', rope_theta: 10000 });
    assert.equal(c.moecat.model.biasUpdateRate, 0.01);
    assert.equal(c.moecat.model.latentNormEps, 1e-6);
    assert.equal(c.moecat.training.optim.lr, 0.003);
    const tc = JSON.parse(fs.readFileSync(path.join(hf, 'tokenizer_config.json'), 'utf8'));
    assert.match(tc.chat_template, /add_generation_prompt/);
    assert.equal(tc.bos_token, '<|bos|>');
    const g = JSON.parse(fs.readFileSync(path.join(hf, 'generation_config.json'), 'utf8'));
    assert.deepEqual(g.eos_token_id, [257, 262]);
  });

  it('stores Linear weights [out, in], the expert bias as e_score_correction_bias and rope rows interleaved', () => {
    const ck = loadTrainerCheckpoint(run);
    const t = readShards(hf);
    const ours = decodeSafetensors(fs.readFileSync(path.join(ck.dir, 'model.safetensors'))).tensors;
    // o_proj: moecat checkpoints already store [out, in]; no rope rows.
    const o = 'model.layers.1.self_attn.0.o_proj.weight';
    assert.deepEqual(t.get(o)!.shape, [32, 16]);
    assert.deepEqual(Array.from(t.get(o)!.data as Float32Array), Array.from(ours.get(o)!.data as Float32Array));
    const b = 'model.layers.0.mlp.router.e_score_correction_bias';
    assert.deepEqual(t.get(b)!.shape, [6]);
    assert.deepEqual(Array.from(t.get(b)!.data as Float32Array), Array.from(ck.state.biases[0]));
    assert.ok(Array.from(ck.state.biases[0]).some((x) => x !== 0), 'the bias moved in 2 steps');
    // kv_a_proj_with_mqa rows: latent rows unchanged, rope row 2i = ours 12+i, 2i+1 = ours 12+4+i.
    const kv = 'model.layers.0.self_attn.1.kv_a_proj_with_mqa.weight';
    const row = (x: SafeTensor, r: number) => Array.from((x.data as Float32Array).subarray(r * 32, (r + 1) * 32));
    assert.deepEqual(row(t.get(kv)!, 3), row(ours.get(kv)!, 3));
    assert.deepEqual(row(t.get(kv)!, 12 + 2), row(ours.get(kv)!, 12 + 1));
    assert.deepEqual(row(t.get(kv)!, 12 + 3), row(ours.get(kv)!, 12 + 4 + 1));
  });

  it('export -> import -> export is byte-identical, and the imported run serves the same weights', () => {
    const run2 = path.join(tmp, 'run2');
    const r = importHf({ hf, out: run2, ...checks });
    assert.equal(r.paramHash, hash);
    const hf2 = path.join(tmp, 'hf2');
    exportHf({ checkpoint: run2, out: hf2 });
    const a = filesOf(hf);
    const b = filesOf(hf2);
    assert.deepEqual([...b.keys()], [...a.keys()]);
    for (const [n, buf] of a) assert.ok(buf.equals(b.get(n)!), `${n} differs`);
    const served = loadServingModel(run2);
    assert.equal(served.config.attention.type === 'mla' && served.config.attention.latentNormEps, 1e-6);
    served.store.dispose();
    const parent = loadTrainerCheckpoint(run2, { withOptimizer: false });
    assert.equal(parent.saved.param_hash, hash);
    assert.deepEqual(parent.config.optim, interopConfig().config.optim);
  });

  it('shards above --max-shard-mb with model.safetensors.index.json, and reads the shards back', () => {
    const sh = path.join(tmp, 'sharded');
    exportHf({ checkpoint: run, out: sh, maxShardBytes: 64 * 1024 });
    const names = fs.readdirSync(sh).filter((n) => n.endsWith('.safetensors')).sort();
    assert.ok(names.length >= 3, `${names.length} shards`);
    assert.equal(names[0], `model-00001-of-${String(names.length).padStart(5, '0')}.safetensors`);
    const index = JSON.parse(fs.readFileSync(path.join(sh, 'model.safetensors.index.json'), 'utf8'));
    const all = readShards(hf);
    assert.deepEqual(Object.keys(index.weight_map).sort(), [...all.keys()].sort());
    const back = readShards(sh);
    for (const [n, t] of all) assert.deepEqual(Array.from(back.get(n)!.data as Float32Array), Array.from(t.data as Float32Array), n);
    const r = importHf({ hf: sh, out: path.join(tmp, 'run-sharded'), ...checks });
    assert.equal(r.paramHash, hash);
    const sh2 = path.join(tmp, 'sharded2');
    exportHf({ checkpoint: path.join(tmp, 'run-sharded'), out: sh2, maxShardBytes: 64 * 1024 });
    const a = filesOf(sh);
    const b = filesOf(sh2);
    assert.deepEqual([...b.keys()], [...a.keys()]);
    for (const [n, buf] of a) assert.ok(buf.equals(b.get(n)!), `${n} differs`);
  });

  it('a released-style directory (no moecat block, rope_theta only, MTP tensors) imports with defaults', () => {
    const dir = path.join(tmp, 'released');
    fs.mkdirSync(dir);
    const c = JSON.parse(fs.readFileSync(path.join(hf, 'config.json'), 'utf8'));
    for (const k of ['moecat', 'rope_parameters', 'num_hidden_layers', 'qk_head_dim', 'head_dim', 'router_bias', 'initializer_range']) delete c[k];
    c.auto_map = { AutoConfig: 'configuration_longcat_flash.LongcatFlashConfig' };
    c.transformers_version = '4.56.0';
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(c));
    const t = readShards(hf);
    t.set('model.mtp.layers.0.eh_proj.weight', { dtype: 'F32', shape: [2, 2], data: new Float32Array(4) });
    fs.writeFileSync(path.join(dir, 'model.safetensors'), encodeSafetensors(t, { format: 'pt' }));
    const r = importHf({ hf: dir, out: path.join(tmp, 'run-released'), ...checks });
    assert.equal(r.paramHash, hash);
    assert.equal(r.moecatBlock, false);
    assert.equal(r.tokenizer, false);
    const ck = loadTrainerCheckpoint(path.join(tmp, 'run-released'), { withOptimizer: false });
    const a = ck.config.model.attention;
    assert.equal(a.type === 'mla' && a.latentNormEps, 1e-6);
    assert.equal(ck.config.model.ropeBase, 10000);
    assert.equal(ck.config.model.moe.biasUpdateRate, 0.001, 'moecat default');
    assert.ok(ck.config.data.synthetic, 'placeholder training section');
  });

  it('notes when the latent-norm eps is not transformers\' 1e-6', async () => {
    const r = path.join(tmp, 'run-eps');
    (await writeCheckpointAfter(r, 0, interopConfig(['model.attention={type: mla, nHeads: 2, qLoraRank: 16, kvLoraRank: 12, nopeHeadDim: 8, ropeHeadDim: 8, vHeadDim: 8}']))).dispose();
    const res = exportHf({ checkpoint: r, out: path.join(tmp, 'hf-eps') });
    assert.ok(res.notes.some((n) => /latent norms use eps 0\.00001; transformers' longcat_flash uses 0\.000001/.test(n)), res.notes.join(' | '));
    assert.equal(exportHf({ checkpoint: run, out: path.join(tmp, 'hf-noeps') }).notes.length, 0);
  });

  it('imports BF16 and F16 weights, widened exactly to float32', () => {
    const dir = path.join(tmp, 'bf16');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(hf, 'config.json'), path.join(dir, 'config.json'));
    const bf = new Map<string, SafeTensor>();
    for (const [n, t] of readShards(hf)) {
      const bits = new Uint32Array(Float32Array.from(t.data as Float32Array).buffer);
      bf.set(n, { dtype: 'BF16', shape: t.shape, data: Uint16Array.from(bits, (b) => b >>> 16) });
    }
    fs.writeFileSync(path.join(dir, 'model.safetensors'), encodeSafetensors(bf, { format: 'pt' }));
    importHf({ hf: dir, out: path.join(tmp, 'run-bf16'), ...checks });
    const served = loadServingModel(path.join(tmp, 'run-bf16'));
    const w = served.store.get('model.layers.1.mlp.experts.3.down_proj.weight').dataSync() as Float32Array;
    served.store.dispose();
    const orig = loadServingModel(run);
    const o = orig.store.get('model.layers.1.mlp.experts.3.down_proj.weight').dataSync() as Float32Array;
    orig.store.dispose();
    const trunc = new Float32Array(new Uint32Array(Float32Array.from(o).buffer).map((b) => (b & 0xffff0000) >>> 0).buffer);
    assert.deepEqual(Array.from(w), Array.from(trunc));
    const f16 = toFloat32({ dtype: 'F16', shape: [6], data: Uint16Array.from([0x3c00, 0xc000, 0x0001, 0x7bff, 0x3555, 0xfc00]) })!;
    assert.deepEqual(Array.from(f16), [1, -2, 2 ** -24, 65504, Math.fround(0.333251953125), -Infinity]);
  });

  describe('refusals (one line naming the field, tensor or shape; nothing written)', () => {
    function variant(name: string, edit: (cfg: Record<string, unknown>, tensors: Map<string, SafeTensor>) => void): string {
      const dir = path.join(tmp, `v-${name}`);
      fs.mkdirSync(dir);
      const cfg = JSON.parse(fs.readFileSync(path.join(hf, 'config.json'), 'utf8'));
      const tensors = readShards(hf);
      edit(cfg, tensors);
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
      fs.writeFileSync(path.join(dir, 'model.safetensors'), encodeSafetensors(tensors, { format: 'pt' }));
      return dir;
    }
    const cases: [string, (c: Record<string, unknown>, t: Map<string, SafeTensor>) => void, RegExp][] = [
      ['yarn', (c) => void (c.rope_parameters = { rope_type: 'yarn', rope_theta: 10000, factor: 4 }), /rope_parameters\.rope_type.*"yarn"/],
      ['unknown-field', (c) => void (c.ngram_vocab_size_ratio = 0.1), /ngram_vocab_size_ratio/],
      ['kv-heads', (c) => void (c.num_key_value_heads = 1), /num_key_value_heads/],
      ['no-q-lora', (c) => void (c.q_lora_rank = null), /q_lora_rank/],
      ['act', (c) => void (c.hidden_act = 'gelu'), /hidden_act.*"gelu"/],
      ['tied', (c) => void (c.tie_word_embeddings = true), /tie_word_embeddings/],
      ['shape', (_c, t) => void t.set('model.layers.0.mlp.experts.1.up_proj.weight', { dtype: 'F32', shape: [8, 32], data: new Float32Array(256) }), /experts\.1\.up_proj\.weight is F32\[8,32\], expected \[16,32\]/],
      ['missing', (_c, t) => void t.delete('lm_head.weight'), /lm_head\.weight is missing/],
      ['extra-tensor', (_c, t) => void t.set('model.layers.0.mlp.shared_expert.weight', { dtype: 'F32', shape: [2], data: new Float32Array(2) }), /unsupported tensor model\.layers\.0\.mlp\.shared_expert\.weight/],
      ['model-type', (c) => void (c.model_type = 'deepseek_v3'), /model_type/],
      ['moecat-block', (c) => void ((c.moecat as { model: Record<string, unknown> }).model.nExperts = 9), /moecat\.model\.nExperts is not a moecat model field/],
      ['int-weights', (_c, t) => void t.set('model.norm.weight', { dtype: 'I32', shape: [32], data: new Int32Array(32) }), /model\.norm\.weight is I32\[32\]/],
    ];
    for (const [name, edit, re] of cases) {
      it(name, () => {
        const dir = variant(name, edit);
        const out = path.join(tmp, `out-${name}`);
        assert.match(refusal(() => importHf({ hf: dir, out, ...checks })), re);
        assert.equal(fs.existsSync(path.join(out, 'checkpoints')), false);
      });
    }

    it('a GQA or sequential model is refused by export', async () => {
      for (const [name, set, re] of [
        ['gqa', 'model.attention={type: gqa, nHeads: 2, nKvHeads: 1, headDim: 8}', /gqa/],
        ['seq', 'model.layerType=sequential', /sequential/],
      ] as const) {
        const r = path.join(tmp, `run-${name}`);
        (await writeCheckpointAfter(r, 0, interopConfig([set]))).dispose();
        assert.match(refusal(() => exportHf({ checkpoint: r, out: path.join(tmp, `hf-${name}`) })), re);
        assert.equal(fs.existsSync(path.join(tmp, `hf-${name}`)), false);
      }
    });

    it('an existing output directory is refused without --force', () => {
      assert.match(refusal(() => exportHf({ checkpoint: run, out: hf })), /exists.*--force/);
      const f = path.join(tmp, 'forced');
      fs.mkdirSync(f);
      fs.writeFileSync(path.join(f, 'stale.txt'), 'x');
      exportHf({ checkpoint: run, out: f, force: true });
      assert.deepEqual([...filesOf(f).keys()], [...filesOf(hf).keys()]);
      assert.deepEqual(fs.readdirSync(tmp).filter((n) => n.includes('.old-') || n.includes('.tmp-')), []);
    });
  });
});

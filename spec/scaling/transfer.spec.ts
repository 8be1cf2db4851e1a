import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import YAML from 'yaml';
import { loadTrainConfig, parseTrainConfig } from '../../trainer/config';
import { transferConfig, transferFromSweep, transferScales, widthChanges } from '../../trainer/transfer';
import { SweepResults, writeSweepFiles } from '../../trainer/sweep';

const SRC = { lr: 0.004, initStd: 0.03, proxyFile: 'proxy.yaml', resultsFile: 'sweep/results.json', pointName: 'p', finalLoss: 2.5, lossDefinition: 'mean lm_loss of steps 10..10', pointsTotal: 3 };

describe('hyperparameter transfer (SP + Adam LR full-align)', () => {
  const tiny = () => loadTrainConfig('configs/tiny.yaml', ['data.synthetic={}']);

  it('scales dModel, ffnHidden, expertHidden, heads and MLA ranks by s; head dims stay', () => {
    const { config } = tiny();
    const { s, changes } = widthChanges(config.model, 256);
    assert.equal(s, 4);
    assert.deepEqual(
      Object.fromEntries(changes.map((c) => [c.key, [c.from, c.to]])),
      { 'model.dModel': [64, 256], 'model.ffnHidden': [128, 512], 'model.moe.expertHidden': [64, 256], 'model.attention.nHeads': [4, 16], 'model.attention.qLoraRank': [32, 128], 'model.attention.kvLoraRank': [32, 128] },
    );
    const t = transferConfig(tiny().raw, config, SRC, 256);
    const out = parseTrainConfig(t.raw);
    assert.equal(out.model.attention.type, 'mla');
    if (out.model.attention.type === 'mla') {
      assert.equal(out.model.attention.nopeHeadDim, 16);
      assert.equal(out.model.attention.ropeHeadDim, 8);
      assert.equal(out.model.attention.vHeadDim, 16);
    }
    assert.equal(out.model.nLayers, config.model.nLayers);
    assert.deepEqual(out.model.moe, { ...config.model.moe, expertHidden: 256 });
    assert.deepEqual(out.data, config.data);
  });

  it('GQA widths scale heads and kv heads', () => {
    const { config } = loadTrainConfig('configs/tiny.yaml', ['data.synthetic={}', 'model.attention={type: gqa, nHeads: 4, nKvHeads: 2, headDim: 16}']);
    const { changes } = widthChanges(config.model, 128);
    assert.deepEqual(changes.filter((c) => c.key.startsWith('model.attention')).map((c) => [c.key, c.to]), [['model.attention.nHeads', 8], ['model.attention.nKvHeads', 4]]);
  });

  it('writes lr, initStd and the per-group multipliers: hidden/router/unembedding LR x 1/s, init x 1/sqrt(s)', () => {
    const { config, raw } = tiny();
    const t = transferConfig(raw, config, SRC, 256);
    const out = parseTrainConfig(YAML.parse(t.text));
    assert.equal(out.optim.lr, 0.004);
    assert.equal(out.model.initStd, 0.03);
    assert.deepEqual(out.optim.lrScale, { embedding: 1, hidden: 0.25, unembedding: 0.25, router: 0.25, norm: 1 });
    assert.deepEqual(out.optim.initScale, { embedding: 1, hidden: 0.5, unembedding: 0.5, router: 0.5, norm: 1 });
  });

  it('composes with multipliers the proxy already has', () => {
    const r = transferScales(2, { lrScale: { hidden: 0.5, embedding: 3 }, initScale: { unembedding: 2 } });
    assert.equal(r.lrScale.hidden, 0.25);
    assert.equal(r.lrScale.embedding, 3);
    assert.equal(r.initScale.unembedding, 2 / Math.SQRT2);
    assert.equal(r.initScale.norm, 1);
  });

  it('the comment block names the source of every transferred value', () => {
    const { config, raw } = tiny();
    const text = transferConfig(raw, config, SRC, 128).text;
    const head = text.split('\n').filter((l) => l.startsWith('#')).join('\n');
    for (const needle of ['proxy.yaml', 'sweep/results.json', 'best point', 's = 128/64 = 2', 'model.dModel', 'optim.lr', 'model.initStd', 'optim.lrScale.hidden', 'optim.initScale.unembedding', 'x 1/s', 'x 1/sqrt(s)']) {
      assert.ok(head.includes(needle), `comment block mentions ${needle}`);
    }
  });

  it('refuses a width at which a width field is not a whole number', () => {
    const { config } = tiny();
    assert.throws(() => widthChanges(config.model, 40), /model\.attention\.nHeads = 4 does not scale to an integer at width 40/);
    assert.throws(() => widthChanges(config.model, 64.5), /positive integer/);
  });

  describe('from sweep results', () => {
    let tmp: string;
    before(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-transfer-'))));
    after(() => fs.rmSync(tmp, { recursive: true, force: true }));

    function fakeSweep(dir: string, model = tiny().config.model): void {
      const pt = (lr: number, initStd: number, finalLoss: number | null) => ({ name: `lr${lr}_init${initStd}`, lr, initStd, runDir: 'x', status: finalLoss === null ? 'diverged' as const : 'done' as const, finalLoss, steps: 10, lastSteps: 1, tokens: 0, seconds: 0, configHash: '' });
      const r: SweepResults = {
        proxy: { config: 'configs/tiny.yaml', sets: [], dModel: model.dModel, model },
        steps: 10,
        lossDefinition: 'mean lm_loss of steps 10..10',
        points: [pt(0.001, 0.02, 3.1), pt(0.003, 0.01, 2.7), pt(0.003, 0.02, 2.9), pt(0.01, 0.02, null)],
        best: null,
      };
      fs.mkdirSync(dir, { recursive: true });
      writeSweepFiles(dir, r);
    }

    it('picks the lowest final loss, never a diverged point', () => {
      const dir = path.join(tmp, 'a');
      fakeSweep(dir);
      const t = transferFromSweep({ proxy: 'configs/tiny.yaml', sets: ['data.synthetic={}'], results: dir, targetWidth: 128 });
      assert.equal(t.chosen.lr, 0.003);
      assert.equal(t.chosen.initStd, 0.01);
      const out = parseTrainConfig(YAML.parse(t.text));
      assert.equal(out.optim.lr, 0.003);
      assert.equal(out.model.initStd, 0.01);
      assert.equal(out.model.dModel, 128);
    });

    it('`moecat transfer` writes the target config; bad input exits 2 with one clear line', () => {
      const dir = path.join(tmp, 'cli');
      fakeSweep(dir);
      const cfg = path.join(tmp, 'proxy.yaml');
      fs.writeFileSync(cfg, fs.readFileSync('configs/tiny.yaml', 'utf8').replace('  dir: data/prepared/demo', '  synthetic: {}'));
      const main = path.join(__dirname, '../../cli/main.js');
      const out = path.join(tmp, 'target.yaml');
      const ok = spawnSync(process.execPath, [main, 'transfer', '--proxy', cfg, '--results', dir, '--target-width', '256', '--out', out], { encoding: 'utf8' });
      assert.equal(ok.status, 0, ok.stderr);
      const t = parseTrainConfig(YAML.parse(fs.readFileSync(out, 'utf8')));
      assert.deepEqual([t.model.dModel, t.optim.lr, t.optim.lrScale.hidden, t.optim.initScale.hidden], [256, 0.003, 0.25, 0.5]);
      const bad = spawnSync(process.execPath, [main, 'transfer', '--proxy', cfg, '--results', dir, '--target-width', '40', '--out', out], { encoding: 'utf8' });
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /^error: --target-width: model\.attention\.nHeads = 4 does not scale to an integer/m);
    });

    it('refuses results of a different proxy model', () => {
      const dir = path.join(tmp, 'b');
      fakeSweep(dir, { ...tiny().config.model, ffnHidden: 96 });
      assert.throws(() => transferFromSweep({ proxy: 'configs/tiny.yaml', sets: ['data.synthetic={}'], results: dir, targetWidth: 128 }), /model\.ffnHidden differ/);
    });
  });
});
